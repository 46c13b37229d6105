"""How far a classifier's confidence can be trusted: expected calibration error (ECE) and test NLL.

ECE (Guo et al., 2017) puts each prediction's top-1 confidence (its largest softmax probability) into one of
15 equal-width bins, (0, 1/15], (1/15, 2/15], ..., (14/15, 1], and averages |accuracy - mean confidence| over
the bins, each weighted by its share of the predictions. 0 is a perfectly calibrated model; an overconfident
one (what MixUp is known to correct, Thulasidasan et al., 2019) has accuracy below confidence in the top bins.
NLL is the mean cross-entropy of the true class (no label smoothing): it punishes confident mistakes.

Both come from sums, so validation builds them in the same pass as accuracy: ``ValidationTally`` adds up,
per batch and on the device, the prediction count, confidence sum and correct count of every bin plus the NLL
sum; under DDP the ranks' tallies are summed (each rank reads a disjoint share of the test set) and the
figures computed once from the totals, so they equal a one-process evaluation of the whole set.
"""
from __future__ import annotations

from typing import Dict, List

import torch

CALIBRATION_BINS = 15   # as in Guo et al. and most papers that report ECE

# Rows of a tally's bin table.
BIN_COUNT, BIN_CONFIDENCE, BIN_CORRECT = 0, 1, 2


def confidence_bins(confidences: torch.Tensor, bins: int = CALIBRATION_BINS) -> torch.Tensor:
    """The bin (int64, 0..bins-1) of each confidence in [0, 1]: bin k holds (k/bins, (k+1)/bins].

    A float32 confidence times 15 is exact in float64, so ceil() places values at a bin's upper edge in that
    bin, as the ``lower < c <= upper`` rule does; 0 (impossible for a softmax) joins the first bin.
    """
    scaled = torch.ceil(confidences.to(torch.float64) * bins).to(torch.int64) - 1
    return scaled.clamp_(0, bins - 1)


def bin_table(logits: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS) -> torch.Tensor:
    """(3, bins) float64 sums of a batch's (N, C) logits against its (N,) labels, per confidence bin:
    row 0 the number of predictions, row 1 their confidences, row 2 the correct ones."""
    probabilities = torch.softmax(logits.to(torch.float32), dim=1)
    confidences = probabilities.max(dim=1).values
    predictions = logits.argmax(dim=1)   # the logits' top-1, as accuracy counts it (softmax may round to ties)
    which = confidence_bins(confidences, bins)
    table = torch.zeros((3, bins), dtype=torch.float64, device=logits.device)
    table[BIN_COUNT].index_add_(0, which, torch.ones_like(confidences, dtype=torch.float64))
    table[BIN_CONFIDENCE].index_add_(0, which, confidences.to(torch.float64))
    table[BIN_CORRECT].index_add_(0, which, (predictions == labels).to(torch.float64))
    return table


def ece_from_table(table: torch.Tensor) -> float:
    """ECE of a (3, bins) ``bin_table`` (or a sum of several): sum over bins of |correct - confidence| / N."""
    count = float(table[BIN_COUNT].sum())
    if count == 0:
        return float("nan")
    return float((table[BIN_CORRECT] - table[BIN_CONFIDENCE]).abs().sum()) / count


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS) -> float:
    """ECE of (N, C) logits against (N,) int64 labels, in [0, 1]."""
    return ece_from_table(bin_table(logits, labels, bins))


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of -log softmax(logits)[true class], a float64 scalar tensor on the logits' device."""
    log_probabilities = torch.log_softmax(logits.to(torch.float32), dim=1)
    return -log_probabilities.gather(1, labels[:, None]).to(torch.float64).sum()


class ValidationTally:
    """Sums over validation batches, kept on the device (no host sync per batch): NLL, correct predictions,
    image count and the calibration bin table. ``totals()`` is one flat float64 list for an all-reduce;
    ``figures(totals)`` turns (summed) totals into ``val_loss`` (NLL), ``val_acc`` and ``val_ece``."""

    def __init__(self, device: torch.device, bins: int = CALIBRATION_BINS):
        self.bins = bins
        self.nll = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0
        self.table = torch.zeros((3, bins), dtype=torch.float64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch of (N, C) logits (the model's final prediction, e.g. after TTA) and (N,) labels."""
        table = bin_table(logits, labels, self.bins)
        self.table += table
        self.correct += table[BIN_CORRECT].sum()   # the bins' correct counts add up to top-1 accuracy's
        self.nll += nll_sum(logits, labels)
        self.count += labels.shape[0]

    def totals(self) -> List[float]:
        return [float(self.nll), float(self.correct), float(self.count), *self.table.flatten().tolist()]

    def figures(self, totals: List[float]) -> Dict[str, float]:
        nll, correct, count = totals[:3]
        table = torch.tensor(totals[3:], dtype=torch.float64).reshape(3, self.bins)
        return {"val_loss": nll / count, "val_acc": correct / count, "val_ece": ece_from_table(table)}
