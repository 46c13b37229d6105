"""MixUp/CutMix as a pair of FFCV operations built from one configuration, so they cannot disagree.

    mix = Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, seed=0)
    pipelines = {"image": [SimpleRGBImageDecoder(), mix.image_op(), ToTensor(), ...],
                 "label": [IntDecoder(), mix.label_op(num_classes=10), ToTensor(), ...]}
    for epoch in range(epochs):
        mix.set_epoch(epoch)      # as with DistributedSampler: epochs then mix differently
        for images, targets in loader: ...

Both operations hash (seed, epoch, the batch's sample indices) into one key and draw the batch's parameters
from it with the same function, so the label op gives each image exactly the weights its pixels received.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import numpy as np
from numba import njit
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from .batch import BAD_LABEL, MIXED, mix_image_batch, mix_label_batch, mix_normalize_batch
from .control import ENABLED, EPOCH, HEIGHT, WIDTH, ControlBlock
from .params import MODES

TARGET_KINDS = ("soft", "pair")


@dataclass
class Mixing:
    """MixUp/CutMix settings shared by the image and label operations.

    mixup_alpha, cutmix_alpha: Beta(α, α) parameters; 0 turns that augmentation off.
    mix_prob: chance that a batch (mode ``batch``), pair or sample is mixed at all.
    switch_prob: chance of CutMix rather than MixUp when both alphas are positive.
    mode: ``batch`` (one λ per batch), ``pair`` (partners share λ) or ``elem`` (one λ per sample).
    label_smoothing: ε; targets are mixes of smoothed one-hots (ε/C off, 1 - ε + ε/C on).
    seed: with the epoch and the sample indices, fixes every random choice.
    Raises ValueError for out-of-range values.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0
    seed: int = 0
    control: ControlBlock = field(default_factory=ControlBlock, repr=False, compare=False)

    def __post_init__(self):
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (0 turns it off), got {value!r}")
        for name in ("mix_prob", "switch_prob", "label_smoothing"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def active(self) -> bool:
        """Whether any mixing is configured (an alpha > 0 and mix_prob > 0)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next batches mix as epoch ``epoch`` does (call before each epoch's iteration)."""
        self.control[EPOCH] = int(epoch)

    @property
    def enabled(self) -> bool:
        return bool(self.control[ENABLED])

    @enabled.setter
    def enabled(self, on: bool) -> None:
        """Switch mixing off (targets become plain smoothed one-hots) or back on, without recompiling."""
        self.control[ENABLED] = int(bool(on))

    def image_op(self, float_output: Optional["FloatOutput"] = None) -> "MixImages":
        """The operation for the decoded uint8 (N, H, W, C) image batch; place it before ``ToTensor``.

        It yields uint8 (N, H, W, C), or with ``float_output`` float32 images normalised and laid out in the
        same pass (see ``FloatOutput``): on a CPU that saves the separate conversion passes afterwards.
        """
        return MixImages(self, float_output)

    def label_op(self, num_classes: int, targets: str = "soft") -> "MixLabels":
        """The operation for the integer label batch (after ``IntDecoder``).

        targets="soft" yields float32 (N, num_classes) rows; "pair" yields float32 (N, 3) rows
        ``(y_a, y_b, λ)`` for index-based cross-entropy.
        """
        return MixLabels(self, num_classes, targets)

    def _scalars(self):
        return (float(self.mixup_alpha), float(self.cutmix_alpha), float(self.mix_prob),
                float(self.switch_prob), MODES[self.mode])


@dataclass(frozen=True)
class FloatOutput:
    """How ``MixImages`` writes float32 images instead of uint8.

    mean, std: per output channel, in [0, 1] pixel units as torchvision's ``Normalize``; None for plain
    0..255 floats. channels: how many of the decoded channels to keep (1 reads a grayscale file stored as
    three equal channels); None keeps all. channels_last: write (N, H, W, C) instead of (N, C, H, W).
    """

    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    channels: Optional[int] = None
    channels_last: bool = False

    def scale_and_shift(self, channels: int) -> Tuple[np.ndarray, np.ndarray]:
        """float32 arrays with ``normalised = pixel * scale + shift`` for each of ``channels`` channels."""
        if self.mean is None or self.std is None:
            return np.ones(channels, np.float32), np.zeros(channels, np.float32)
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        if mean.shape != (channels,) or std.shape != (channels,) or (std <= 0).any():
            raise ValueError(f"mean and std need {channels} values each (std > 0), got mean={self.mean}, "
                             f"std={self.std}")
        return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def _index_scratch() -> AllocationQuery:
    return AllocationQuery((1,), np.dtype(np.uint64))


@njit(cache=True, nogil=True)
def _copy_indices(indices, scratch):
    """The batch's sample indices as contiguous uint64, in FFCV-owned memory.

    The C entry points take addresses, and Numba frees a temporary array right after its last use, which
    would be before the call; FFCV's preallocated buffers stay alive, so inputs are copied there.
    """
    count = indices.shape[0]
    sample_ids = scratch[:count, 0]
    for position in range(count):
        sample_ids[position] = indices[position]
    return sample_ids


class MixImages(Operation):
    """FFCV operation: mixes a decoded uint8 image batch; see ``Mixing``."""

    def __init__(self, mixing: Mixing, float_output: Optional[FloatOutput] = None):
        super().__init__()
        self.mixing = mixing
        self.float_output = float_output
        self.scale = self.shift = None   # float output: kept here, the compiled code holds their addresses

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        shape = previous_state.shape
        if not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.uint8 or len(shape) != 3:
            raise ValueError("the ffmix image op needs decoded uint8 (H, W, C) images: place it right after "
                             f"the decoder, before ToTensor (it got {previous_state.dtype} {shape})")
        # Tell the label op the size the boxes are cut in; every declaration happens before any batch runs.
        self.mixing.control[HEIGHT], self.mixing.control[WIDTH] = int(shape[0]), int(shape[1])
        if self.float_output is None:
            return previous_state, (AllocationQuery(shape, np.dtype(np.uint8)), _index_scratch())
        height, width, channels = shape
        out_channels = self.float_output.channels or channels
        if not 1 <= out_channels <= channels:
            raise ValueError(f"float_output.channels must be in [1, {channels}], got {out_channels}")
        self.scale, self.shift = self.float_output.scale_and_shift(out_channels)
        out_shape = ((height, width, out_channels) if self.float_output.channels_last
                     else (out_channels, height, width))
        float32 = np.dtype(np.float32)
        return (replace(previous_state, shape=out_shape, dtype=float32),
                (AllocationQuery(out_shape, float32), _index_scratch()))

    def generate_code(self):
        if self.float_output is not None:
            return self._generate_float_code()
        control_at = np.uint64(self.mixing.control.address)
        seed = self.mixing.seed
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode = self.mixing._scalars()

        def mix_images_op(images, buffers, indices):
            out, index_scratch = buffers
            count, height, width, channels = images.shape
            mixed = out[:count]
            sample_ids = _copy_indices(indices, index_scratch)
            status = mix_image_batch(images.ctypes.data, mixed.ctypes.data, sample_ids.ctypes.data, count, height,
                                     width, channels, control_at, seed, mixup_alpha, cutmix_alpha, mix_prob,
                                     switch_prob, mode)
            return mixed if status == MIXED else images

        mix_images_op.with_indices = True
        return mix_images_op

    def _generate_float_code(self):
        control_at = np.uint64(self.mixing.control.address)
        seed = self.mixing.seed
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode = self.mixing._scalars()
        scale_at, shift_at = np.uint64(self.scale.ctypes.data), np.uint64(self.shift.ctypes.data)
        out_channels = np.int64(len(self.scale))
        channels_last = np.int64(self.float_output.channels_last)

        def mix_normalize_op(images, buffers, indices):
            out, index_scratch = buffers
            count, height, width, channels = images.shape
            converted = out[:count]
            sample_ids = _copy_indices(indices, index_scratch)
            mix_normalize_batch(images.ctypes.data, converted.ctypes.data, sample_ids.ctypes.data, count, height,
                                width, channels, out_channels, control_at, seed, mixup_alpha, cutmix_alpha,
                                mix_prob, switch_prob, mode, scale_at, shift_at, channels_last)
            return converted

        mix_normalize_op.with_indices = True
        return mix_normalize_op


class MixLabels(Operation):
    """FFCV operation: integer labels -> mixed (smoothed) soft targets or (y_a, y_b, λ); see ``Mixing``."""

    def __init__(self, mixing: Mixing, num_classes: int, targets: str = "soft"):
        super().__init__()
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if targets not in TARGET_KINDS:
            raise ValueError(f"targets must be one of {TARGET_KINDS}, got {targets!r}")
        self.mixing = mixing
        self.num_classes = int(num_classes)
        self.targets = targets

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        if not previous_state.jit_mode:
            raise ValueError("the ffmix label op needs the decoded integer labels: place it right after "
                             "IntDecoder, before ToTensor")
        width = self.num_classes if self.targets == "soft" else 3
        return (replace(previous_state, shape=(width,), dtype=np.dtype(np.float32)),
                (AllocationQuery((width,), np.dtype(np.float32)), _index_scratch(),
                 AllocationQuery((1,), np.dtype(np.int64))))

    def generate_code(self):
        control_at = np.uint64(self.mixing.control.address)
        seed = self.mixing.seed
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode = self.mixing._scalars()
        num_classes = self.num_classes
        smoothing = float(self.mixing.label_smoothing)
        soft = np.int64(self.targets == "soft")

        def mix_labels_op(labels, buffers, indices):
            out, index_scratch, label_scratch = buffers
            count = labels.shape[0]
            flat_labels = label_scratch[:count, 0]
            for position in range(count):
                flat_labels[position] = labels[position, 0]
            targets = out[:count]
            sample_ids = _copy_indices(indices, index_scratch)
            status = mix_label_batch(flat_labels.ctypes.data, targets.ctypes.data, sample_ids.ctypes.data, count,
                                     control_at, seed, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode,
                                     num_classes, smoothing, soft)
            if status == BAD_LABEL:
                raise ValueError("a label is outside [0, num_classes)")
            return targets

        mix_labels_op.with_indices = True
        return mix_labels_op
