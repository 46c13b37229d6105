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
scratch_at   one uint8 (H, W, C) copy per sample, the source  FFCV's preallocated buffers (this op's
             of each op                                       ``AllocationQuery``)
indices_at   the batch's sample indices as uint64             FFCV's preallocated buffers (index scratch),
                                                              filled by the closure
control_at   the epoch (``control.ControlBlock``)             the ``ControlBlock`` passed in, held by the op
                                                              (``self.control``, set in ``__init__``)
===========  ===============================================  =============================================

The settings (``AutoAugmentSettings``) and the image size travel by value.
"""
from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from typing import Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import carray, cfunc, njit, prange, types
from numba.np.ufunc import parallel as _parallel

from ..errors import FfmixError
from .augment import sample_key
from .auto_augment_draws import (AUTO_AUGMENT_STREAM, RAND_AUGMENT, TRIVIAL_AUGMENT, draw_sample_ops,
                                 signed_magnitude)
from .auto_augment_kernels import IDENTITY, POINTWISE, apply_op
from .control import EPOCH, ControlBlock, as_pointer, read_control

# A cached cfunc holding parallel code needs Numba's thread pool started before it is loaded.
_parallel._launch_threads()

_address, _i64, _f64 = types.uintp, types.int64, types.float64
# The settings the entry point takes, by name and in this order; ``AutoAugmentSettings`` has the same fields in
# the same order (checked at import), and the closure unpacks ``values()`` into the same names.
SETTINGS_TYPES = (("seed", _i64), ("policy", _i64), ("num_ops", _i64), ("magnitude_bin", _i64),
                  ("num_bins", _i64), ("apply_prob", _f64), ("magnitude_std", _f64), ("max_bin", _i64),
                  ("gray", _i64))


@dataclass(frozen=True)
class AutoAugmentSettings:
    """Everything the compiled code needs besides the epoch, as plain values.

    policy: ``RAND_AUGMENT`` or ``TRIVIAL_AUGMENT``; num_ops: op slots per image (TrivialAugment: 1);
    magnitude_bin / num_bins: torchvision's ``magnitude`` and ``num_magnitude_bins``; apply_prob: chance each
    slot applies; magnitude_std: timm's magnitude noise in bins (0 none, inf uniform); max_bin: its upper clip;
    gray: 1 for grayscale files (three equal channels), so the ops act as on 1-channel images.
    """

    seed: int
    policy: int
    num_ops: int
    magnitude_bin: int
    num_bins: int
    apply_prob: float
    magnitude_std: float
    max_bin: int
    gray: int

    def values(self) -> tuple:
        """The values in ``SETTINGS_TYPES`` order, as the entry point's types."""
        return tuple(np.int64(v) if kind == _i64 else float(v)
                     for v, (_, kind) in zip(astuple(self), SETTINGS_TYPES))


assert tuple(f.name for f in fields(AutoAugmentSettings)) == tuple(name for name, _ in SETTINGS_TYPES)


@njit(cache=True, parallel=True, nogil=True)
def augment_images(images, scratch, indices, epoch, seed, policy, num_ops, magnitude_bin, num_bins, apply_prob,
                   magnitude_std, max_bin, gray):
    """Augment uint8 (N, H, W, C) ``images`` in place; ``scratch`` (same shape) is overwritten.

    Sample ``i`` draws its ops from the stream of (seed, epoch, indices[i]) and applies them in order, each to
    the previous result (pointwise ops in place, the others from a scratch copy)."""
    n, height, width, _ = images.shape
    for i in prange(n):
        key = sample_key(seed, epoch, indices[i], AUTO_AUGMENT_STREAM)
        ops, bins, negated = draw_sample_ops(key, policy, num_ops, magnitude_bin, num_bins, apply_prob,
                                             magnitude_std, max_bin)
        for slot in range(num_ops):
            op = ops[slot]
            if op == IDENTITY:
                continue
            magnitude = signed_magnitude(policy, op, bins[slot], num_bins, negated[slot], height, width)
            if op in POINTWISE:
                apply_op(images[i], images[i], op, magnitude, gray != 0)
            else:   # geometric ops and Sharpness read neighbours: from a copy
                scratch[i, :, :, :] = images[i]
                apply_op(scratch[i], images[i], op, magnitude, gray != 0)
    return images


@cfunc(_i64(_address, _address, _address, _i64, _i64, _i64, _i64, _address, *(t for _, t in SETTINGS_TYPES)),
       cache=True, nogil=True)
def augment_batch(images_at, scratch_at, indices_at, count, height, width, channels, control_at, seed, policy,
                  num_ops, magnitude_bin, num_bins, apply_prob, magnitude_std, max_bin, gray):
    """Augment, in place, the uint8 (count, H, W, C) batch with the ops the committed epoch's draws pick."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    scratch = carray(as_pointer(scratch_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    augment_images(images, scratch, indices, control[EPOCH], seed, policy, num_ops, magnitude_bin, num_bins,
                   apply_prob, magnitude_std, max_bin, gray)
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
    ``generate_code`` captures values and the address of ``self.control``'s block.
    """

    def __init__(self, settings: AutoAugmentSettings, control: Optional[ControlBlock]):
        super().__init__()
        self.settings = settings
        self.control = control if control is not None else ControlBlock()

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Tuple[AllocationQuery, ...]]:
        shape = previous_state.shape
        if (not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.uint8 or len(shape) != 3
                or shape[2] != 3):
            raise FfmixError(f"{type(self).__name__} needs decoded uint8 (H, W, 3) images: place it after the "
                             f"decoder, before mixing and ToTensor (it got {previous_state.dtype} {shape})")
        return previous_state, (AllocationQuery(tuple(shape), np.dtype(np.uint8)),
                                AllocationQuery((1,), np.dtype(np.uint64)))

    def generate_code(self):
        control_at = np.uint64(self.control.address)
        (seed, policy, num_ops, magnitude_bin, num_bins, apply_prob, magnitude_std, max_bin,
         gray) = self.settings.values()

        def auto_augment_op(images, buffers, indices):
            scratch, index_scratch = buffers
            count, height, width, channels = images.shape
            sample_ids = index_scratch[:count, 0]
            for position in range(count):
                sample_ids[position] = indices[position]
            augment_batch(images.ctypes.data, scratch.ctypes.data, sample_ids.ctypes.data, count, height, width,
                          channels, control_at, seed, policy, num_ops, magnitude_bin, num_bins, apply_prob,
                          magnitude_std, max_bin, gray)
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
        settings = AutoAugmentSettings(
            seed=_check_int("seed", seed, 0), policy=RAND_AUGMENT, num_ops=_check_int("num_ops", num_ops, 0),
            magnitude_bin=magnitude, num_bins=num_bins, apply_prob=float(apply_prob),
            magnitude_std=float(magnitude_std), max_bin=max_bin, gray=int(bool(grayscale)))
        super().__init__(settings, control)


class TrivialAugmentWide(AutoAugment):
    """torchvision's ``TrivialAugmentWide(num_magnitude_bins)`` on the uint8 batch: one op per image, its
    magnitude bin uniform, seeded per sample. control, seed, grayscale: as for ``RandAugment``."""

    def __init__(self, num_magnitude_bins: int = 31, *, control: Optional[ControlBlock] = None, seed: int = 0,
                 grayscale: bool = False):
        num_bins = _check_int("num_magnitude_bins", num_magnitude_bins, 2)
        settings = AutoAugmentSettings(seed=_check_int("seed", seed, 0), policy=TRIVIAL_AUGMENT, num_ops=1,
                                       magnitude_bin=0, num_bins=num_bins, apply_prob=1.0, magnitude_std=0.0,
                                       max_bin=num_bins - 1, gray=int(bool(grayscale)))
        super().__init__(settings, control)
