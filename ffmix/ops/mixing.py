"""MixUp/CutMix as a pair of FFCV operations built from one configuration, so they cannot disagree.

    mix = Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, seed=0, image_size=(32, 32))
    pipelines = {"image": [SimpleRGBImageDecoder(), mix.image_op(), ToTensor(), ...],
                 "label": [IntDecoder(), mix.label_op(num_classes=10), ToTensor(), ...]}
    for epoch in range(epochs):
        mix.set_epoch(epoch)      # as with DistributedSampler: epochs then mix differently
        for images, targets in loader: ...

Both operations hash (seed, epoch, the batch's sample indices) into one key and draw the batch's parameters
from it with the same function, so the label op gives each image exactly the weights its pixels received.
Everything they need is fixed when they are built and passed to the compiled code by value, except the epoch
and on/off, which live in the ``ControlBlock`` (see ``control.py`` for when they change).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from ..errors import FfmixError
from .batch import (BAD_LABEL, MIXED, copy_indices, index_scratch, mix_image_batch, mix_label_batch,
                    mix_normalize_batch)
from .control import ControlBlock
from .params import MODES
from .settings import FLOAT_SETTINGS, MIX_SETTINGS, TARGET_SETTINGS, make_record

TARGET_KINDS = ("soft", "pair")
MAX_CHANNELS = 3   # FFCV's image fields decode RGB


@dataclass
class Mixing:
    """MixUp/CutMix settings shared by the image and label operations.

    mixup_alpha, cutmix_alpha: Beta(α, α) parameters; 0 turns that augmentation off.
    mix_prob: chance that a batch (mode ``batch``), pair or sample is mixed at all.
    switch_prob: chance of CutMix rather than MixUp when both alphas are positive.
    mode: ``batch`` (one λ per batch), ``pair`` (partners share λ) or ``elem`` (one λ per sample).
    label_smoothing: ε; targets are mixes of smoothed one-hots (ε/C off, 1 - ε + ε/C on).
    seed: with the epoch and the sample indices, fixes every random choice.
    lam_range: (low, high); each drawn λ is clipped to it before quantisation (default (0, 1): no clipping).
    image_size: (height, width) of the images the image op receives; needed for CutMix (the label op cuts its
    boxes in the same size), checked against the image pipeline when it is built.
    Raises ``FfmixError`` (a ValueError) for out-of-range values.

    A Mixing's settings are fixed once built: its settings record (what the compiled code reads) is filled
    once, here, so it can never disagree with the fields. Use ``dataclasses.replace`` for a variant. Only
    ``enabled`` and the epoch (``set_epoch``) change afterwards, through the control block.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0
    seed: int = 0
    lam_range: Tuple[float, float] = (0.0, 1.0)
    image_size: Optional[Tuple[int, int]] = None
    control: ControlBlock = field(default_factory=ControlBlock, repr=False, compare=False)
    record: np.ndarray = field(init=False, repr=False, compare=False)   # MIX_SETTINGS; see settings_record

    def __post_init__(self):
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise FfmixError(f"{name} must be a finite number >= 0 (0 turns it off), got {value!r}")
        for name in ("mix_prob", "switch_prob", "label_smoothing"):
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 <= value <= 1.0):
                raise FfmixError(f"{name} must be in [0, 1], got {value!r}")
        if self.mode not in MODES:
            raise FfmixError(f"mode must be one of {sorted(MODES)}, got {self.mode!r} (timm's 'half' is not "
                             "supported)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or not 0 <= self.seed < 2 ** 63:
            raise FfmixError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        low, high = _pair(self.lam_range, "lam_range")
        if not (_is_number(low) and _is_number(high) and 0.0 <= low <= high <= 1.0):
            raise FfmixError(f"lam_range must be (low, high) with 0 <= low <= high <= 1, got {self.lam_range!r}")
        object.__setattr__(self, "lam_range", (float(low), float(high)))
        if self.image_size is not None:
            height, width = _pair(self.image_size, "image_size")
            if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in (height, width)):
                raise FfmixError(f"image_size must be (height, width) in pixels, got {self.image_size!r}")
            object.__setattr__(self, "image_size", (int(height), int(width)))
        object.__setattr__(self, "record", self.settings_record(self.image_size))

    def change_image_size(self, size: Tuple[int, int]) -> None:
        """Cut CutMix boxes in ``size`` (height, width) from now on: for a loader's resolution schedule only,
        called between epochs while no pipeline thread runs (``MixLoader`` does, before it rebuilds the
        pipeline for the new size), so no batch sees half of the change."""
        height, width = (int(v) for v in size)
        object.__setattr__(self, "image_size", (height, width))
        self.record[0]["box_height"], self.record[0]["box_width"] = height, width

    def __setattr__(self, name, value):
        if name in self.__dataclass_fields__ and "record" in self.__dict__:
            raise FfmixError(f"a Mixing's settings are fixed once it is built (the compiled code has read them); "
                             f"make another with dataclasses.replace(mixing, {name}=...)")
        object.__setattr__(self, name, value)

    @property
    def active(self) -> bool:
        """Whether any mixing is configured (an alpha > 0 and mix_prob > 0)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def set_epoch(self, epoch: int) -> None:
        """Make the coming batches mix as epoch ``epoch`` does (call before each epoch's iteration).

        In a ``MixLoader`` the loader's own epoch wins and takes effect at its next ``iter()``; in your own FFCV
        pipeline this takes effect at once, so call it between epochs, not while one runs.
        """
        self.control.pending_epoch = int(epoch)
        if not self.control.managed:
            self.control.commit()

    @property
    def enabled(self) -> bool:
        """Whether mixing is switched on (as last set; in a ``MixLoader`` it applies from the next ``iter()``)."""
        return self.control.pending_enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        """Switch mixing off (targets become plain smoothed one-hots) or back on, without recompiling."""
        self.control.pending_enabled = bool(on)
        if not self.control.managed:
            self.control.commit()

    def manage(self, owner) -> None:
        """Let ``owner`` (a loader) decide when changes take effect: it calls ``control.commit`` per epoch."""
        if not self.control.claim(owner):
            raise FfmixError("this Mixing already drives another loader, which commits its epoch and on/off at "
                             "its own times; build one Mixing per loader")

    def image_op(self, float_output: Optional["FloatOutput"] = None) -> "MixImages":
        """The operation for the decoded uint8 (N, H, W, C) image batch; place it before ``ToTensor``.

        It yields uint8 (N, H, W, C), or with ``float_output`` float32 images normalised and laid out in the
        same pass (see ``FloatOutput``): on a CPU that saves the separate conversion passes afterwards.
        """
        self._require_box_size()
        return MixImages(self, float_output)

    def label_op(self, num_classes: int, targets: str = "soft") -> "MixLabels":
        """The operation for the integer label batch (after ``IntDecoder``).

        targets="soft" yields float32 (N, num_classes) rows; "pair" yields float32 (N, 3) rows
        ``(y_a, y_b, λ)`` for index-based cross-entropy (no label smoothing: apply ε in the loss).
        """
        self._require_box_size()
        return MixLabels(self, num_classes, targets)

    def _require_box_size(self) -> None:
        if self.cutmix_alpha > 0 and self.image_size is None:
            raise FfmixError("CutMix needs the image size to cut its boxes in: pass image_size=(height, width) "
                             "of the images the image op receives (make_loader does this for you)")

    def settings_record(self, box_size: Optional[Tuple[int, int]]) -> np.ndarray:
        """These settings as a new one-element ``MIX_SETTINGS`` array, CutMix boxes cut in ``box_size``
        ((height, width); None: unknown, CutMix then leaves samples unmixed). ``self.record`` is the one the
        operations hand to compiled code (``box_size`` = ``image_size``)."""
        box_height, box_width = box_size or (0, 0)
        return make_record(MIX_SETTINGS, seed=self.seed, mixup_alpha=self.mixup_alpha,
                           cutmix_alpha=self.cutmix_alpha, mix_prob=self.mix_prob, switch_prob=self.switch_prob,
                           mode=MODES[self.mode], lam_low=self.lam_range[0], lam_high=self.lam_range[1],
                           box_height=box_height, box_width=box_width)


def check_targets(targets: str, label_smoothing: float) -> None:
    """Refuse a target kind ffmix does not make, and label smoothing on (y_a, y_b, λ) rows, which cannot carry
    it (raises FfmixError)."""
    if targets not in TARGET_KINDS:
        raise FfmixError(f"targets must be one of {', '.join(TARGET_KINDS)}; got {targets!r}")
    if targets == "pair" and label_smoothing > 0:
        raise FfmixError(f"targets='pair' rows (y_a, y_b, λ) cannot carry label_smoothing={label_smoothing}; use "
                         "targets='soft', or set label_smoothing=0 here and pass it to the loss "
                         "(F.cross_entropy(..., label_smoothing=ε) on y_a and y_b)")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _pair(value, name):
    try:
        first, second = value
    except (TypeError, ValueError):
        raise FfmixError(f"{name} must be a pair of numbers, got {value!r}") from None
    return first, second


@dataclass(frozen=True)
class FloatOutput:
    """How ``MixImages`` writes float32 images instead of uint8.

    mean, std: per output channel, in [0, 1] pixel units as torchvision's ``Normalize``; None for plain
    0..255 floats. channels: how many of the decoded channels to keep (1 reads a grayscale file stored as
    three equal channels); None keeps all (FFCV decodes 3). channels_last: write (N, H, W, C) instead of
    (N, C, H, W).
    """

    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    channels: Optional[int] = None
    channels_last: bool = False

    def __post_init__(self):
        if self.mean is None and self.std is None:
            return
        if self.mean is None or self.std is None:
            raise FfmixError(f"give both mean and std (one per channel, in [0, 1] units), got mean={self.mean!r}, "
                             f"std={self.std!r}")
        mean = np.atleast_1d(np.asarray(self.mean, np.float64))
        std = np.atleast_1d(np.asarray(self.std, np.float64))
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all() or not np.isfinite(mean).all() \
                or not np.isfinite(std).all():
            raise FfmixError(f"mean and std need one finite value per channel each (std > 0), got "
                             f"mean={self.mean!r}, std={self.std!r}")
        object.__setattr__(self, "mean", tuple(mean.tolist()))
        object.__setattr__(self, "std", tuple(std.tolist()))

    def with_channels(self, channels: int) -> "FloatOutput":
        """This output for images of ``channels`` channels (raises FfmixError if mean/std have another count)."""
        if self.mean is not None and len(self.mean) != channels:
            raise FfmixError(f"mean and std have {len(self.mean)} values but the images have {channels} channels; "
                             f"give {channels}")
        return replace(self, channels=channels)

    @property
    def out_channels(self) -> int:
        if self.channels is not None:
            return int(self.channels)
        return len(self.mean) if self.mean is not None else MAX_CHANNELS

    def settings_record(self) -> np.ndarray:
        """A one-element ``FLOAT_SETTINGS`` array of this output (raises FfmixError for bad mean/std/channels)."""
        scale, shift = self.scale_and_shift()
        return make_record(FLOAT_SETTINGS, out_channels=self.out_channels, channels_last=self.channels_last,
                           scale=scale, shift=shift)

    def scale_and_shift(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """Per-channel ``(scale, shift)`` with ``normalised = pixel * scale + shift``, padded to 3 values."""
        channels = self.out_channels
        if not 1 <= channels <= MAX_CHANNELS:
            raise FfmixError(f"float output can keep 1 to {MAX_CHANNELS} channels, got channels={channels}")
        if self.mean is None or self.std is None:
            scale, shift = np.ones(channels), np.zeros(channels)
        else:
            mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
            if mean.shape != (channels,) or std.shape != (channels,) or not (std > 0).all():
                raise FfmixError(f"mean and std need {channels} values each (std > 0), got mean={self.mean}, "
                                 f"std={self.std}")
            scale, shift = 1.0 / (255.0 * std), -mean / std
        padding = [0.0] * (MAX_CHANNELS - channels)
        return (tuple(float(v) for v in np.float32(scale)) + tuple(padding),
                tuple(float(v) for v in np.float32(shift)) + tuple(padding))


class MixImages(Operation):
    """FFCV operation: mixes a decoded uint8 image batch; see ``Mixing``.

    Everything its compiled code needs is fixed here, in ``__init__``: ``declare_state_and_memory`` only
    declares (FFCV calls it again whenever it allocates) and ``generate_code`` captures values, plus the
    address of the Mixing's control block, which this op keeps alive through ``self.mixing``.
    """

    def __init__(self, mixing: Mixing, float_output: Optional[FloatOutput] = None):
        super().__init__()
        self.mixing = mixing   # owns the control block and the MIX_SETTINGS record the compiled code reads
        self.float_output = float_output
        # The FLOAT_SETTINGS record the compiled code reads: owned by this op, never replaced.
        self.float_record = float_output.settings_record() if float_output is not None else None

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        shape = previous_state.shape
        if not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.uint8 or len(shape) != 3:
            raise FfmixError("the ffmix image op needs decoded uint8 (H, W, C) images: place it right after "
                             f"the decoder, before ToTensor (it got {previous_state.dtype} {shape})")
        expected = self.mixing.image_size
        if expected is not None and tuple(shape[:2]) != expected:
            raise FfmixError(f"this Mixing was built for {expected[0]}x{expected[1]} images but the image "
                             f"pipeline gives {shape[0]}x{shape[1]}; build one Mixing per image size")
        if self.float_output is None:
            return previous_state, (AllocationQuery(shape, np.dtype(np.uint8)), index_scratch())
        height, width, channels = shape
        out_channels = self.float_output.out_channels
        if not 1 <= out_channels <= channels:
            raise FfmixError(f"float_output.channels must be in [1, {channels}], got {out_channels}")
        out_shape = ((height, width, out_channels) if self.float_output.channels_last
                     else (out_channels, height, width))
        float32 = np.dtype(np.float32)
        return (replace(previous_state, shape=out_shape, dtype=float32),
                (AllocationQuery(out_shape, float32), index_scratch()))

    def generate_code(self):
        if self.float_output is not None:
            return self._generate_float_code()
        control_at = np.uint64(self.mixing.control.address)
        mix_at = np.uint64(self.mixing.record.ctypes.data)

        def mix_images_op(images, buffers, indices):
            out, index_scratch = buffers
            count, height, width, channels = images.shape
            mixed = out[:count]
            sample_ids = copy_indices(indices, index_scratch)
            status = mix_image_batch(images.ctypes.data, mixed.ctypes.data, sample_ids.ctypes.data, count, height,
                                     width, channels, control_at, mix_at)
            return mixed if status == MIXED else images

        mix_images_op.with_indices = True
        return mix_images_op

    def _generate_float_code(self):
        control_at = np.uint64(self.mixing.control.address)
        mix_at = np.uint64(self.mixing.record.ctypes.data)
        float_at = np.uint64(self.float_record.ctypes.data)

        def mix_normalize_op(images, buffers, indices):
            out, index_scratch = buffers
            count, height, width, channels = images.shape
            converted = out[:count]
            sample_ids = copy_indices(indices, index_scratch)
            mix_normalize_batch(images.ctypes.data, converted.ctypes.data, sample_ids.ctypes.data, count, height,
                                width, channels, control_at, mix_at, float_at)
            return converted

        mix_normalize_op.with_indices = True
        return mix_normalize_op


class MixLabels(Operation):
    """FFCV operation: integer labels -> mixed (smoothed) soft targets or (y_a, y_b, λ); see ``Mixing``."""

    def __init__(self, mixing: Mixing, num_classes: int, targets: str = "soft"):
        super().__init__()
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise FfmixError(f"num_classes must be a positive integer, got {num_classes!r}")
        check_targets(targets, mixing.label_smoothing)
        self.mixing = mixing   # owns the control block and the MIX_SETTINGS record the compiled code reads
        self.num_classes = int(num_classes)
        self.targets = targets
        # The TARGET_SETTINGS record the compiled code reads: owned by this op, never replaced.
        self.target_record = make_record(TARGET_SETTINGS, num_classes=self.num_classes,
                                         label_smoothing=mixing.label_smoothing, soft=targets == "soft")

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Optional[AllocationQuery]]:
        if not previous_state.jit_mode:
            raise FfmixError("the ffmix label op needs the decoded integer labels: place it right after "
                             "IntDecoder, before ToTensor")
        width = self.num_classes if self.targets == "soft" else 3
        return (replace(previous_state, shape=(width,), dtype=np.dtype(np.float32)),
                (AllocationQuery((width,), np.dtype(np.float32)), index_scratch(),
                 AllocationQuery((1,), np.dtype(np.int64))))

    def generate_code(self):
        control_at = np.uint64(self.mixing.control.address)
        mix_at = np.uint64(self.mixing.record.ctypes.data)
        target_at = np.uint64(self.target_record.ctypes.data)

        def mix_labels_op(labels, buffers, indices):
            out, index_scratch, label_scratch = buffers
            count = labels.shape[0]
            flat_labels = label_scratch[:count, 0]
            for position in range(count):
                flat_labels[position] = labels[position, 0]
            targets = out[:count]
            sample_ids = copy_indices(indices, index_scratch)
            status = mix_label_batch(flat_labels.ctypes.data, targets.ctypes.data, sample_ids.ctypes.data, count,
                                     control_at, mix_at, target_at)
            if status == BAD_LABEL:
                raise ValueError("a label is outside [0, num_classes)")
            return targets

        mix_labels_op.with_indices = True
        return mix_labels_op
