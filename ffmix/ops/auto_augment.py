"""RandAugment and TrivialAugmentWide as FFCV operations on the decoded uint8 (N, H, W, C) batch, seeded per sample.

    mix = Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, seed=0, image_size=(224, 224))
    pipelines = {"image": [RandomResizedCropDecoder((224, 224), control=mix.control, seed=mix.seed),
                           RandomFlip(control=mix.control, seed=mix.seed),
                           RandAugment(2, 9, control=mix.control, seed=mix.seed),
                           mix.image_op(), ToTensor(), ...], ...}

torchvision's op set and magnitude tables, nearest interpolation, fill 0, signed magnitudes negated with
chance 1/2 (see ``auto_augment_kernels.py`` for the arithmetic, ``auto_augment_draws.py`` for the choices and
``docs/auto_augment.md`` for the agreement with torchvision). Each sample's ops depend only on (seed, epoch,
sample index): the same batches for any number of workers or batch size, and ``set_epoch`` replays an epoch.
The op works in place on the decoder's buffer (as ``RandomFlip``), with one scratch image per sample.

Every address the C entry point reads or writes, and its owner (whose lifetime covers the compiled code):

===========  ===============================================  =============================================
argument     what it points at                                owner
===========  ===============================================  =============================================
images_at    the decoded batch, augmented in place            FFCV's preallocated buffers (the output of
                                                              the operation before this one)
scratch_at   one uint8 (H, W, C) image per sample, where      FFCV's preallocated buffers (this op's
             ops that read neighbours write                   ``AllocationQuery``)
indices_at   the batch's sample indices as uint64             FFCV's preallocated buffers (index scratch),
                                                              filled by the closure
control_at   the epoch (``control.ControlBlock``)             the ``ControlBlock`` passed in, held by the op
                                                              (``self.control``, set in ``__init__``)
augment_at   the op's settings (``settings.AUGMENT_SETTINGS``) the op (``self.record``, made in ``__init__``,
                                                              never replaced; written once, then only read)
===========  ===============================================  =============================================

The image size travels by value; the parameters and their order come from ``settings.ENTRY_POINTS``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import carray, njit, prange

from ..errors import FfmixError
from .augment import sample_key
from .auto_augment_draws import (AUTO_AUGMENT_STREAM, RAND_AUGMENT, TRIVIAL_AUGMENT, draw_sample_ops,
                                 signed_magnitude)
from .auto_augment_kernels import IDENTITY, POINTWISE, apply_op, copy_image
from .batch import copy_indices, index_scratch
from .control import EPOCH, ControlBlock, as_pointer, read_control
from .settings import AUGMENT_RECORD, AUGMENT_SETTINGS, entry_point, make_record, named_fields, read_settings

@njit(cache=True, parallel=True, nogil=True)
def augment_images(images, scratch, indices, epoch, settings):
    """Augment uint8 (N, H, W, C) ``images`` in place under ``settings`` (an ``AUGMENT_SETTINGS`` record);
    ``scratch`` (same shape) is overwritten. NumPy reference: ``auto_augment_reference.augment_reference``.

    Sample ``i`` draws its ops from the stream of (seed, epoch, indices[i]) and applies them in order, each to
    the previous result (pointwise ops in place, the others into the sample's scratch image and back)."""
    n, height, width, _ = images.shape
    # Every field read by name here, outside the loop: Numba cannot hand a record to a prange body.
    seed, policy, num_ops = settings.seed, settings.policy, settings.num_ops
    magnitude_bin, num_bins, max_bin = settings.magnitude_bin, settings.num_bins, settings.max_bin
    apply_prob, magnitude_std, gray = settings.apply_prob, settings.magnitude_std, settings.gray != 0
    for i in prange(n):
        key = sample_key(seed, epoch, indices[i], AUTO_AUGMENT_STREAM)
        ops, bins, negated = draw_sample_ops(key, policy=policy, num_ops=num_ops, magnitude_bin=magnitude_bin,
                                             num_bins=num_bins, apply_prob=apply_prob, magnitude_std=magnitude_std,
                                             max_bin=max_bin)
        # The latest result lives in ``current``; ops that read neighbours (geometric, Sharpness) write the
        # other buffer and the two swap, so no op pays a copy and a sample pays at most one, at the end.
        current, other = images[i], scratch[i]
        in_scratch = False
        for slot in range(num_ops):
            op = ops[slot]
            if op == IDENTITY:
                continue
            magnitude = signed_magnitude(policy, op, bins[slot], num_bins, negated[slot], height, width)
            if op in POINTWISE:
                apply_op(current, current, op, magnitude, gray)
            else:
                apply_op(current, other, op, magnitude, gray)
                current, other = other, current
                in_scratch = not in_scratch
        if in_scratch:
            copy_image(scratch[i], images[i])
    return images


@entry_point
def augment_batch(images_at, scratch_at, indices_at, count, height, width, channels, control_at, augment_at):
    """Augment, in place, the uint8 (count, H, W, C) batch with the ops the committed epoch's draws pick under
    the ``AUGMENT_SETTINGS`` record at ``augment_at``."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    scratch = carray(as_pointer(scratch_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    augment_images(images, scratch, indices, control[EPOCH], read_settings(augment_at, AUGMENT_RECORD))
    return count


def _check_int(name, value, low, high=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        limit = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise FfmixError(f"{name} must be an integer {limit}, got {value!r}")
    return int(value)


class AutoAugment(Operation):
    """FFCV operation shared by ``RandAugment`` and ``TrivialAugmentWide``: place it after the decoder (and
    flip), before mixing and ``ToTensor``. It augments the decoded uint8 (H, W, C) images in place.

    Everything the compiled code needs is fixed in ``__init__``: ``declare_state_and_memory`` only declares, and
    ``generate_code`` captures the addresses of ``self.control``'s block and of ``self.record``.
    ``fields``: every ``AUGMENT_SETTINGS`` field by name (a missing or unknown one raises TypeError).
    """

    def __init__(self, control: Optional[ControlBlock], **fields):
        super().__init__()
        # The AUGMENT_SETTINGS record the compiled code reads: owned by this op, never replaced.
        self.record = make_record(AUGMENT_SETTINGS, **fields)
        self.control = control if control is not None else ControlBlock()

    @property
    def settings(self) -> np.record:
        """The settings record, fields readable by name (``op.settings.num_ops``); a view of ``self.record``."""
        return named_fields(self.record)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Tuple[AllocationQuery, ...]]:
        shape = previous_state.shape
        if (not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.uint8 or len(shape) != 3
                or shape[2] != 3):
            raise FfmixError(f"{type(self).__name__} needs decoded uint8 (H, W, 3) images: place it after the "
                             f"decoder, before mixing and ToTensor (it got {previous_state.dtype} {shape})")
        return previous_state, (AllocationQuery(tuple(shape), np.dtype(np.uint8)),
                                index_scratch())

    def generate_code(self):
        control_at = np.uint64(self.control.address)
        augment_at = np.uint64(self.record.ctypes.data)

        def auto_augment_op(images, buffers, indices):
            scratch, index_scratch = buffers
            count, height, width, channels = images.shape
            sample_ids = copy_indices(indices, index_scratch)
            augment_batch(images.ctypes.data, scratch.ctypes.data, sample_ids.ctypes.data, count, height, width,
                          channels, control_at, augment_at)
            return images

        auto_augment_op.with_indices = True
        return auto_augment_op


class RandAugment(AutoAugment):
    """torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins)`` on the uint8 batch, seeded per sample.

    apply_prob: chance each of the ``num_ops`` slots applies (torchvision: 1; timm's ``rand-*``: 0.5).
    magnitude_std: timm's magnitude noise, in bins (0: none; ``math.inf``: uniform over [0, magnitude]);
    max_magnitude: the bin the noisy magnitude is clipped to (default ``num_magnitude_bins - 1``).
    control / seed: the ``ControlBlock`` whose epoch keys the draws (pass the ``Mixing``'s) and the seed.
    grayscale: the decoded images are a grayscale file's three equal channels (ops act as on 1 channel).
    Raises ``FfmixError`` for out-of-range values.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, *,
                 apply_prob: float = 1.0, magnitude_std: float = 0.0, max_magnitude: Optional[int] = None,
                 control: Optional[ControlBlock] = None, seed: int = 0, grayscale: bool = False):
        num_bins = _check_int("num_magnitude_bins", num_magnitude_bins, 2)
        magnitude = _check_int("magnitude", magnitude, 0, num_bins - 1)
        max_bin = num_bins - 1 if max_magnitude is None else _check_int("max_magnitude", max_magnitude, 0,
                                                                         num_bins - 1)
        if not (isinstance(apply_prob, (int, float)) and 0.0 <= apply_prob <= 1.0):
            raise FfmixError(f"apply_prob must be in [0, 1], got {apply_prob!r}")
        if not (isinstance(magnitude_std, (int, float)) and magnitude_std >= 0 and not math.isnan(magnitude_std)):
            raise FfmixError(f"magnitude_std must be >= 0 (math.inf: uniform), got {magnitude_std!r}")
        super().__init__(control, seed=_check_int("seed", seed, 0), policy=RAND_AUGMENT,
                         num_ops=_check_int("num_ops", num_ops, 0), magnitude_bin=magnitude, num_bins=num_bins,
                         apply_prob=float(apply_prob), magnitude_std=float(magnitude_std), max_bin=max_bin,
                         gray=int(bool(grayscale)))


class TrivialAugmentWide(AutoAugment):
    """torchvision's ``TrivialAugmentWide(num_magnitude_bins)`` on the uint8 batch: one op per image, its
    magnitude bin uniform, seeded per sample. control, seed, grayscale: as for ``RandAugment``."""

    def __init__(self, num_magnitude_bins: int = 31, *, control: Optional[ControlBlock] = None, seed: int = 0,
                 grayscale: bool = False):
        num_bins = _check_int("num_magnitude_bins", num_magnitude_bins, 2)
        super().__init__(control, seed=_check_int("seed", seed, 0), policy=TRIVIAL_AUGMENT, num_ops=1,
                         magnitude_bin=0, num_bins=num_bins, apply_prob=1.0, magnitude_std=0.0,
                         max_bin=num_bins - 1, gray=int(bool(grayscale)))
