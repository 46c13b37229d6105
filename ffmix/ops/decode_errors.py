"""What a decoder does with a sample it cannot decode, and how a stand-in keeps pixels and targets agreeing.

Two policies (``on_decode_error``):

- ``"raise"`` (default): the batch fails. The decoder's compiled closure raises ``DecodeFailure`` (sample
  index, status); ``MixLoader`` turns it into an ``FfmixError`` naming the sample, the file and the fixes.
- ``"skip"``: the sample's slot gets a copy of a *donor*, the nearest sample before it in the same batch
  that decoded (wrapping round), before flips and mixing, and its label becomes the donor's label, so
  pixels and targets agree for every kind of target (soft, pair, plain labels). Each stand-in is counted in
  the decoder's ``DecodeReport``; ``MixLoader`` reports the count at the end of the epoch. A batch in which
  no sample decoded has no donor and raises as under "raise".

The rule for libjpeg-turbo warnings: every non-zero status of ``imdecode`` is a failure, warnings included
(a cut-off file, "premature end of data", "extraneous bytes"). Every JPEG in a ``.beton`` was written by
OpenCV or passed FFCV's decoder without a warning at convert time, so a warning means the stored bytes
changed since; a recovered decode fills the missing part grey, which is not the image its label names.

The label side must see the decoder's result for the same batch. FFCV runs the operations of one compiled
stage in an order it does not fix (image and label pipelines are independent), and FFCV 1.0.2 cannot run a
compiled stage after a Python one (its grouping loops forever), so the label op cannot simply wait for the
decoder. Instead a third pipeline starts *from the decoder* (FFCV runs it right after it) and hands the
batch's (sample index, stand-in) rows to the consumer with the batch; ``StandInTargets`` corrects the
targets there.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from ..errors import FfmixError
from .decode_kernels import (RAISE, RECENT, REPORT_RECENT, REPORT_SIZE, REPORT_STAND_INS, STAND_IN_POLICY,
                             STATUS_TEXT, stand_in_rows_batch)

POLICIES = {"raise": RAISE, "skip": STAND_IN_POLICY}


def policy_code(on_decode_error: str) -> int:
    """The kernel's code for ``on_decode_error`` ("raise" or "skip"); FfmixError for anything else."""
    if on_decode_error not in POLICIES:
        raise FfmixError(f"on_decode_error must be one of {sorted(POLICIES)}, got {on_decode_error!r}")
    return POLICIES[on_decode_error]


class DecodeFailure(FfmixError):
    """A sample could not be decoded. args: (sample index, status code; see ``decode_kernels.STATUS_TEXT``).

    Raised from the decoder's compiled code, in the pipeline's thread; ``MixLoader`` re-raises it as an
    ``FfmixError`` naming the file (``describe``)."""

    @property
    def sample_index(self) -> int:
        return int(self.args[0])

    @property
    def status(self) -> int:
        return int(self.args[1])

    def __str__(self) -> str:
        if len(self.args) != 2:
            return super().__str__()
        return f"sample {self.sample_index} could not be decoded: {STATUS_TEXT.get(self.status, self.status)}"


def describe(failure: DecodeFailure, path) -> str:
    """The message a training loop shows for ``failure`` in the file at ``path``: what, where, the fixes."""
    return (f"{failure} (in {path}). Run `ffmix inspect --verify {path}` to list every damaged sample, then "
            "re-create the file with `ffmix convert` from its source, or pass on_decode_error='skip' "
            "(`ffmix train --on-decode-error skip`) to replace such samples by another sample of the batch, "
            "counted per epoch")


class DecodeReport:
    """Owner of the block a decoder and its label op share (its address stays valid as long as this object).

    Compiled code counts stand-ins here and names the current batch's table for the label op; ``values``
    is allocated once, never replaced. Read ``stand_ins`` and ``recent_samples`` between epochs (no pipeline
    thread running), and ``reset()`` there too.
    """

    def __init__(self):
        self.values = np.zeros(REPORT_SIZE, np.int64)
        self.address = int(self.values.ctypes.data)
        self.has_label_side = False

    @property
    def stand_ins(self) -> int:
        """Samples replaced by stand-ins since the last ``reset``."""
        return int(self.values[REPORT_STAND_INS])

    @property
    def recent_samples(self) -> List[int]:
        """The sample indices of the first (at most 16) stand-ins since the last ``reset``."""
        return [int(v) for v in self.values[REPORT_RECENT:REPORT_RECENT + min(self.stand_ins, RECENT)]]

    def reset(self) -> None:
        self.values[:] = 0


class StandInRows(Operation):
    """Hands the consumer each batch's (sample index, stand-in position) rows, int64 (N, 2): the operation of
    a pipeline whose source is the decoder (``decoder.stand_in_pipeline()``), so FFCV runs it right after the
    decoder, in the same batch, and its output travels with the batch in FFCV's buffers."""

    def __init__(self, report: DecodeReport):
        super().__init__()
        self.report = report          # keeps the block whose address the compiled code reads
        report.has_label_side = True

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        int64 = np.dtype(np.int64)
        return replace(previous_state, jit_mode=True, shape=(2,), dtype=int64), AllocationQuery((2,), int64)

    def generate_code(self):
        report_at = np.uint64(self.report.address)

        def stand_in_rows_op(images, rows):
            count = images.shape[0]
            batch_rows = rows[:count]
            if stand_in_rows_batch(batch_rows.ctypes.data, count, report_at) < 0:
                raise ValueError("the stand-in rows found no decoded batch of their size: their pipeline must "
                                 "start from the decoder of the same Loader (decoder.stand_in_pipeline())")
            return batch_rows

        return stand_in_rows_op


class StandInTargets:
    """Gives each stand-in of a batch its donor's label, on the consumer's side: plain labels are copied;
    soft or pair targets are computed again by the loader's own label op from the corrected labels (the
    mixing depends on sample indices only, so the mixed pixels already match). Runs only for batches that
    hold stand-ins, which a healthy file never has.

    labels: the file's label column (int64, one per sample); label_op: the ``MixLabels`` of the label
    pipeline, or None for plain labels.
    """

    def __init__(self, labels: np.ndarray, label_op=None):
        self.labels = np.ascontiguousarray(labels, np.int64)
        self.label_op = label_op
        self._label_code = None

    def apply(self, targets, rows):
        """``targets`` (the batch's, as the loader yields them) with the stand-ins' labels; ``rows``: the
        batch's (sample index, stand-in position) tensor from ``StandInRows``."""
        rows = rows.cpu().numpy() if hasattr(rows, "cpu") else np.asarray(rows)
        positions = np.arange(len(rows))
        if (rows[:, 1] == positions).all():
            return targets
        if self.label_op is None:
            return targets[torch_index(rows[:, 1], targets)]
        labels = self.labels[rows[:, 0]][rows[:, 1]].reshape(-1, 1)
        return self._recompute(targets, labels, rows[:, 0].astype(np.uint64))

    def _recompute(self, targets, labels, indices):
        import torch
        from ffcv.pipeline.compiler import Compiler

        if self._label_code is None:   # compiled on the first batch that needs it, like FFCV compiles ops
            self._label_code = Compiler.compile(self.label_op.generate_code())
        count = len(labels)
        width = targets.shape[1] if targets.dim() == 2 else 3
        buffers = (np.zeros((count, width), np.float32), np.zeros((count, 1), np.uint64),
                   np.zeros((count, 1), np.int64))
        fresh = self._label_code(labels, buffers, indices)
        return targets.copy_(torch.from_numpy(np.ascontiguousarray(fresh)).view(targets.shape))


def torch_index(positions: np.ndarray, like):
    import torch

    return torch.as_tensor(positions, dtype=torch.long, device=like.device)
