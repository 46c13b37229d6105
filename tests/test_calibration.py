"""Calibration figures of ``ffmix train``'s validation: ECE against a hand-computed case and a plain NumPy
implementation, NLL against torch's cross-entropy, tallies that add up over batches and ranks, and the
flip-TTA prediction as the thing judged."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ffmix.distributed import describe_node
from ffmix.train.calibration import (CALIBRATION_BINS, ValidationTally, confidence_bins,
                                     expected_calibration_error, nll_sum)
from ffmix.train.loop import evaluate

SEEDS = range(40)


def ece_reference(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Guo et al.'s ECE as usually written: for each bin (lower, upper], |accuracy - mean confidence| weighted
    by the bin's share of the predictions."""
    confidences = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        inside = (confidences > lower) & (confidences <= upper)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidences[inside].mean())
    return float(ece)


def random_predictions(seed: int):
    """Logits of a model that is right about 70 % of the time, at a random temperature (so that some seeds
    are overconfident, some underconfident, and the confidences fill every bin), and their labels."""
    rng = np.random.default_rng(seed)
    count, classes = int(rng.integers(50, 400)), int(rng.integers(2, 12))
    logits = rng.normal(0.0, rng.uniform(0.2, 8.0), (count, classes))
    labels = np.where(rng.random(count) < 0.7, logits.argmax(axis=1), rng.integers(0, classes, count))
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def test_ece_of_a_hand_computed_case():
    # (probabilities, label): bin 13 = (13/15, 14/15] holds 0.9 and 0.88, both right; bin 14 holds 0.95, wrong;
    # bin 10 holds 0.7, right; bin 9 holds 0.65, wrong.
    probabilities = torch.tensor([[0.9, 0.1], [0.05, 0.95], [0.3, 0.7], [0.65, 0.35], [0.12, 0.88]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    expected = (abs(2 - (0.9 + 0.88)) + abs(0 - 0.95) + abs(1 - 0.7) + abs(0 - 0.65)) / 5   # 0.424
    assert expected_calibration_error(probabilities.log(), labels) == pytest.approx(expected, abs=1e-6)
    # always 90 % sure, right 3 times in 5: ECE is the 30-point gap
    sure = torch.tensor([[0.9, 0.1]] * 5).log()
    assert expected_calibration_error(sure, torch.tensor([0, 0, 0, 1, 1])) == pytest.approx(0.3, abs=1e-6)


def test_bins_hold_lower_exclusive_upper_inclusive_intervals():
    rng = np.random.default_rng(0)
    edges32 = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1).astype(np.float32)
    # random values plus the float32 neighbours of every edge, where a careless rule puts values in the wrong bin
    near_edges = np.concatenate([edges32, np.nextafter(edges32, np.float32(0)), np.nextafter(edges32, np.float32(2))])
    confidences = np.clip(np.concatenate([rng.random(10_000).astype(np.float32), near_edges]), 1e-6, 1.0)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    expected = np.searchsorted(edges, confidences.astype(np.float64), side="left") - 1   # lower < c <= upper
    got = confidence_bins(torch.from_numpy(confidences)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert confidence_bins(torch.tensor([1.0, 1e-9])).tolist() == [CALIBRATION_BINS - 1, 0]


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_equals_a_plain_numpy_implementation(seed):
    logits, labels = random_predictions(seed)
    probabilities = torch.softmax(logits, dim=1).double().numpy()
    expected = ece_reference(probabilities, labels.numpy())
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_nll_equals_cross_entropy(seed):
    logits, labels = random_predictions(seed)
    logits = logits * (1 + 10 * (seed % 2))  # every other seed: logits so large that log(softmax) would be -inf
    expected = F.cross_entropy(logits.double(), labels, reduction="sum").item()
    assert nll_sum(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert nll_sum(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item(),
                                                           rel=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_tallies_of_batches_and_ranks_add_up_to_the_whole_set(seed):
    """What DDP does: each rank tallies its share in batches, the totals are summed, the figures computed once."""
    logits, labels = random_predictions(seed)
    rng = np.random.default_rng(seed)
    ranks = [ValidationTally(torch.device("cpu")) for _ in range(int(rng.integers(1, 5)))]
    cuts = np.sort(rng.choice(np.arange(1, len(labels)), size=min(9, len(labels) - 1), replace=False))
    for number, (start, stop) in enumerate(zip([0, *cuts], [*cuts, len(labels)])):
        ranks[number % len(ranks)].add(logits[start:stop], labels[start:stop])
    summed = np.sum([rank.totals() for rank in ranks], axis=0).tolist()
    figures = ranks[0].figures(summed)
    assert figures["val_ece"] == pytest.approx(expected_calibration_error(logits, labels), abs=1e-12)
    assert figures["val_loss"] == pytest.approx(F.cross_entropy(logits.double(), labels).item(), rel=1e-6)
    assert figures["val_acc"] == (logits.argmax(dim=1) == labels).double().mean().item()


class MirrorSensitive(torch.nn.Module):
    """Logits from the image's left half only, so a flipped image gets other logits."""

    def forward(self, images):
        return images[..., : images.shape[-1] // 2].flatten(1)[:, :5] * 3


def test_tta_judges_the_mean_of_the_original_and_mirrored_logits():
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 1, 4, 6, generator=generator), torch.randint(0, 5, (n,), generator=generator))
               for n in (7, 16, 3)]
    model, node = MirrorSensitive(), describe_node("cpu")
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    for tta, logits in ((False, model(images)), (True, (model(images) + model(images.flip(3))) / 2)):
        figures = evaluate(model, batches, types.SimpleNamespace(tta=tta, precision="fp32"), node)
        assert figures["val_ece"] == pytest.approx(expected_calibration_error(logits, labels), abs=1e-12)
        assert figures["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
        assert figures["val_acc"] == (logits.argmax(dim=1) == labels).double().mean().item()
    plain = evaluate(model, batches, types.SimpleNamespace(tta=False, precision="fp32"), node)
    assert figures["val_ece"] != plain["val_ece"]   # the flip changes the prediction judged
