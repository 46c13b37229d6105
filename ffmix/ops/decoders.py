"""ffmix's image decoders and flip as FFCV operations: reproducible crops and flips, and a raw decoder that mixes.

    mix = Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, seed=0)
    pipelines = {"image": [RandomResizedCropDecoder((224, 224), control=mix.control, seed=mix.seed),
                           RandomFlip(control=mix.control, seed=mix.seed), mix.image_op(), ToTensor(), ...],
                 "label": [IntDecoder(), mix.label_op(num_classes=1000), ToTensor()]}

- ``RandomResizedCropDecoder``: torchvision's random-resized-crop (scale and ratio ranges, centre-crop fallback
  after ten tries); ``CenterCropDecoder``: the centred crop FFCV's ``CenterCropRGBImageDecoder`` takes.
  By default a JPEG is decoded only where its box lies, at the smallest DCT scale (1, 1/2, 1/4, 1/8) that
  still covers the output (ffmix's region decoder over libjpeg, ``ffmix/native``), then resized with ffmix's
  area resampler (``resize_kernels``): the pixels differ a little from a full decode (docs/decoding.md
  measures how much) and the decode is 1.4-2x faster on photos. ``exact_decode=True`` decodes and resizes
  with FFCV's own compiled code (libjpeg-turbo, OpenCV INTER_AREA), so the pixels of a given box are FFCV's. The boxes come from ffmix's counter stream
  keyed by (seed, epoch, sample index), so they do not depend on threads or batches, unlike FFCV's
  ``RandomResizedCropRGBImageDecoder``, which draws from Numba's per-thread global state.
- ``RandomFlip``: a seeded horizontal flip of the uint8 batch, in place (after a decoder, before mixing).
- ``MixingRawDecoder``: for raw-stored images of one size, FFCV's decoder is a copy out of the file's pages;
  this one makes the mix that copy, reading each sample and its partner straight from the pages. Its
  output is bit-identical to ``SimpleRGBImageDecoder`` followed by ``Mixing.image_op()``; given a
  ``FloatOutput`` it writes the normalised float32 batch directly (as ``Mixing.image_op(float_output)``).

The epoch is read each batch from a ``ControlBlock`` (pass the ``Mixing``'s, so one ``set_epoch`` moves
mixing, crops and flips together). The addresses the compiled code reads are listed in ``decode_kernels.py``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple, Union

import numba
import numpy as np
from ffcv.fields.rgb_image import SimpleRGBImageDecoder
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline import PipelineSpec
from ffcv.pipeline.operation import Operation
from ffcv.transforms import ToTensor
from ffcv.pipeline.state import State

from ..errors import FfmixError, FfmixWarning
from ..ffcv_compat import JPEG_MODE, RAW_MODE, libffcv_functions
from ..native import jpeg_region_function, unavailable_reason
from .batch import copy_indices, index_scratch
from .control import ControlBlock
from .decode_errors import DecodeFailure, DecodeReport, StandInRows, policy_code
from .decode_kernels import (CROP_CENTER, CROP_RANDOM, DATA_AT, DATA_BYTES, HEIGHT, INDEX, MODE, RAISE, STATUS,
                             TABLE_COLUMNS, WIDTH, WINDOW_BYTES, decode_crop_batch, flip_batch,
                             mix_normalize_raw_batch, mix_raw_batch)
from .resize_kernels import resize_work_bytes
from .settings import CROP_SETTINGS, FLIP_SETTINGS, make_record

CENTER_CROP_RATIO = 224 / 256
Size = Union[int, Tuple[int, int]]


def _size(output_size: Size) -> Tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in size):
        raise FfmixError(f"output_size must be a positive int or (height, width), got {output_size!r}")
    return int(size[0]), int(size[1])


def _max_dct(dct_scaling: Optional[bool], exact_decode: bool) -> int:
    """The largest DCT denominator allowed: 8 (1/8 scale) unless ``dct_scaling`` is False, or None with
    ``exact_decode`` (FFCV's full-size decode)."""
    if dct_scaling is None:
        dct_scaling = not exact_decode
    return 8 if dct_scaling else 1


_warned_no_region = False


def region_decoder_at(needed: bool) -> int:
    """The region decoder's address for a decoder that ``needed`` it, or 0 (the exact path) with one
    FfmixWarning per process when it cannot be built here (why, and the fix)."""
    global _warned_no_region
    if not needed:
        return 0
    address = jpeg_region_function()
    if address is None and not _warned_no_region:
        _warned_no_region = True
        warnings.warn(FfmixWarning(f"ffmix's JPEG region decoder is not available ({unavailable_reason()}); JPEGs "
                                   "are decoded whole as FFCV does (as with exact_decode=True), 1.4-2x slower"),
                      stacklevel=3)
    return address or 0


def region_work_bytes(heights: np.ndarray, widths: np.ndarray, out_height: int, out_width: int) -> int:
    """Scratch bytes (a multiple of 64) ffmix's resampler needs after a region decode of any of these JPEGs
    (``resize_kernels.resize_work_bytes`` for the largest sides); 0 without JPEGs."""
    if len(heights) == 0:
        return 0
    need = int(resize_work_bytes(int(heights.max()), int(widths.max()), out_height, out_width))
    return -(-need // 64) * 64


def _seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FfmixError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class _Scratch:
    """Owner of the per-worker buffers JPEGs are decoded into before cropping.

    Compiled code holds a buffer's address, so a buffer is never freed or replaced while this object lives:
    a larger need adds a new buffer and keeps the old ones.
    """

    def __init__(self):
        self.buffers: List[np.ndarray] = []

    def at_least(self, slots: int, slot_bytes: int) -> Tuple[int, int]:
        """(address, bytes per slot) of a buffer holding ``slots`` x ``slot_bytes`` bytes (64-byte aligned)."""
        slot_bytes = max(64, -(-int(slot_bytes) // 64) * 64)
        for buffer in self.buffers:
            if buffer.nbytes >= slots * slot_bytes:
                return int(buffer.ctypes.data), slot_bytes
        self.buffers.append(np.zeros(slots * slot_bytes, np.uint8))
        return int(self.buffers[-1].ctypes.data), slot_bytes


class _CropDecoder(SimpleRGBImageDecoder):
    """Decode (JPEG or raw), crop and resize to ``output_size``; the box rule is the subclass's.

    A subclass of FFCV's ``SimpleRGBImageDecoder`` only because FFCV recognises a pipeline's decoder by
    ``isinstance`` of the field's decoder class; every method that matters is ours. One instance serves one
    Loader: its scratch buffers are not shared safely by two pipelines running at once.
    """

    kind = CROP_CENTER

    def __init__(self, output_size: Size, control: Optional[ControlBlock], seed: int,
                 dct_scaling: Optional[bool] = None, on_decode_error: str = "raise", exact_decode: bool = False):
        super().__init__()
        self.exact_decode = bool(exact_decode)
        self.dct_scaling = dct_scaling
        max_dct = _max_dct(dct_scaling, self.exact_decode)
        self.output_size = _size(output_size)
        self.control = control if control is not None else ControlBlock()
        self.seed = _seed(seed)
        self.max_dct = int(max_dct)
        self.on_decode_error = on_decode_error
        self._policy = policy_code(on_decode_error)
        self.decode_report = DecodeReport()   # made once: compiled code holds its address
        self.crop_record = np.zeros(1, CROP_SETTINGS)   # made once: compiled code holds its address
        self._scratch = _Scratch()
        self._scale = (1.0, 1.0)
        self._log_ratio = (0.0, 0.0)
        self._center_ratio = CENTER_CROP_RATIO

    def stand_in_pipeline(self) -> Optional[PipelineSpec]:
        """With ``on_decode_error="skip"``: the pipeline (an extra Loader output) that hands each batch's
        (sample index, stand-in position) rows to the consumer, who gives stand-ins their donors' labels
        (``decode_errors.StandInTargets``; ``make_loader`` does this). None for "raise"."""
        if self._policy == RAISE:
            return None
        return PipelineSpec(self, transforms=[StandInRows(self.decode_report), ToTensor()])

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Tuple[AllocationQuery, ...]]:
        shape = (*self.output_size, 3)
        uint8 = np.dtype(np.uint8)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=uint8),
                (AllocationQuery(shape, uint8), AllocationQuery((TABLE_COLUMNS,), np.dtype(np.int64))))

    def generate_code(self):
        if self._policy != RAISE and not self.decode_report.has_label_side:
            raise FfmixError("on_decode_error='skip' replaces a sample's pixels by another sample's, so its label "
                             "must follow: add decoder.stand_in_pipeline() to the Loader's pipelines and correct "
                             "the targets with decode_errors.StandInTargets (make_loader does both)")
        metadata = self.metadata
        jpeg = metadata["mode"] == JPEG_MODE
        heights, widths = metadata["height"][jpeg].astype(np.int64), metadata["width"][jpeg].astype(np.int64)
        largest = int((heights * widths).max()) if jpeg.any() else 0
        slots = int(numba.config.NUMBA_NUM_THREADS)
        # each slot: the region decoder's window, the resampler's work memory, then a whole image's pixels (the
        # exact path decodes from the slot's start: it fits too)
        out_height, out_width = self.output_size
        work_bytes = region_work_bytes(heights, widths, out_height, out_width)
        scratch_at, scratch_bytes = self._scratch.at_least(slots, WINDOW_BYTES + work_bytes + 3 * largest)
        functions = libffcv_functions()
        region_at = np.uint64(region_decoder_at(needed=bool(jpeg.any()) and not self.exact_decode))
        # without the region decoder, the exact path as exact_decode=True would take it (the warning says so)
        exact = self.exact_decode or region_at == 0
        max_dct = _max_dct(self.dct_scaling, exact)
        mem_read = self.memory_read
        control_at = np.uint64(self.control.address)
        # Filled here, before FFCV compiles the pipeline (the subclass has set its ranges by now); only read
        # while it runs.
        self.crop_record[:] = make_record(
            CROP_SETTINGS, seed=self.seed, kind=self.kind, scale_low=self._scale[0], scale_high=self._scale[1],
            log_ratio_low=self._log_ratio[0], log_ratio_high=self._log_ratio[1], center_ratio=self._center_ratio,
            max_dct=max_dct, exact=int(exact), policy=self._policy)
        crop_at = np.uint64(self.crop_record.ctypes.data)
        policy = np.int64(self._policy)
        scratch_at, scratch_bytes, slots = np.uint64(scratch_at), np.int64(scratch_bytes), np.int64(slots)
        work_bytes = np.int64(work_bytes)
        imdecode_at, resize_at = np.uint64(functions["imdecode"]), np.uint64(functions["resize"])
        report_at = np.uint64(self.decode_report.address)

        def decode_crop_op(batch_indices, buffers, metadata, storage_state):
            destination, table = buffers
            count = len(batch_indices)
            for position in range(count):
                index = batch_indices[position]
                field = metadata[index]
                data = mem_read(field["data_ptr"], storage_state)
                table[position, DATA_AT] = data.ctypes.data
                table[position, DATA_BYTES] = data.size
                table[position, HEIGHT] = field["height"]
                table[position, WIDTH] = field["width"]
                table[position, MODE] = field["mode"]
                table[position, INDEX] = index
            out = destination[:count]
            failed = decode_crop_batch(table.ctypes.data, count, out.ctypes.data, out_height, out_width, scratch_at,
                                       scratch_bytes, work_bytes, slots, numba.get_num_threads(), control_at, crop_at,
                                       imdecode_at, resize_at, region_at, report_at)
            # The statuses came back in the table (FFCV's buffer); a failure the policy did not stand in for
            # (policy "raise", or no sample of the batch decoded) ends the batch here.
            if failed != 0 and (policy == RAISE or failed < 0):
                for position in range(count):
                    if table[position, STATUS] != 0:
                        raise DecodeFailure(table[position, INDEX], table[position, STATUS])
            return out

        return decode_crop_op


class RandomResizedCropDecoder(_CropDecoder):
    """Decode and random-resized-crop to ``output_size`` ((height, width) or one int), reproducibly.

    scale: range of the box's area as a fraction of the image's; ratio: range of its width / height (drawn
    log-uniform); after ten boxes that do not fit, the centred crop clamped to the ratio range
    (torchvision's ``RandomResizedCrop``). The box of sample ``i`` in epoch ``e`` is a function of
    (seed, e, i) only; the epoch is read from ``control`` (pass ``Mixing.control``).
    exact_decode: decode each JPEG whole with FFCV's decoder, FFCV's pixels for the box (1.4-2x slower);
    by default only the box's region is decoded (see the module's docstring).
    dct_scaling: decode a JPEG at 1/2, 1/4 or 1/8 size (libjpeg-turbo) when its box is at least twice the
    output in both sides: faster, and the pixels differ slightly from a full-size decode. Default: on,
    off with exact_decode.
    on_decode_error: "raise" (a damaged sample fails its batch with ``DecodeFailure``) or "skip" (it is
    replaced by another sample of its batch, label included: ``make_loader(on_decode_error="skip")``, or
    see ``stand_in_pipeline``; counted in ``decoder.decode_report``). See ``decode_errors.py``.
    Raises ValueError for bad ranges.
    """

    kind = CROP_RANDOM

    def __init__(self, output_size: Size, *, control: Optional[ControlBlock] = None, seed: int = 0,
                 scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 dct_scaling: Optional[bool] = None, exact_decode: bool = False, on_decode_error: str = "raise"):
        super().__init__(output_size, control, seed, dct_scaling, on_decode_error, exact_decode)
        scale, ratio = tuple(float(s) for s in scale), tuple(float(r) for r in ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise FfmixError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise FfmixError(f"ratio must be (low, high) with 0 < low <= high, got {ratio!r}")
        self.scale, self.ratio = scale, ratio
        self._scale = scale
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))


class CenterCropDecoder(_CropDecoder):
    """Decode, take the centred box of the output's aspect ratio whose limiting side is ``ratio`` times the
    image's (for square outputs FFCV's ``CenterCropRGBImageDecoder`` box), and resize to ``output_size``.
    With ``ratio=1`` and ``output_size`` the stored size it decodes straight into the batch: FFCV's
    ``SimpleRGBImageDecoder`` with every status checked. exact_decode, dct_scaling, on_decode_error: as
    ``RandomResizedCropDecoder``."""

    def __init__(self, output_size: Size, *, ratio: float = CENTER_CROP_RATIO, dct_scaling: Optional[bool] = None,
                 exact_decode: bool = False, on_decode_error: str = "raise"):
        super().__init__(output_size, None, 0, dct_scaling, on_decode_error, exact_decode)
        if not 0 < ratio <= 1:
            raise FfmixError(f"ratio must be in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)
        self._center_ratio = self.ratio


class RandomFlip(Operation):
    """Flip each uint8 (H, W, C) image left-right with chance ``probability``, in place, reproducibly: the
    choice for sample ``i`` in epoch ``e`` is a function of (seed, e, i). Place it right after a decoder
    (which writes its own buffer) and before mixing; the epoch is read from ``control``."""

    def __init__(self, *, control: Optional[ControlBlock] = None, seed: int = 0, probability: float = 0.5):
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            raise FfmixError(f"probability must be in [0, 1], got {probability!r}")
        self.control = control if control is not None else ControlBlock()
        self.seed = _seed(seed)
        self.probability = float(probability)
        # The FLIP_SETTINGS record the compiled code reads: owned by this op, never replaced.
        self.flip_record = make_record(FLIP_SETTINGS, seed=self.seed, probability=self.probability)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        if not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.uint8 or len(previous_state.shape) != 3:
            raise FfmixError("RandomFlip needs decoded uint8 (H, W, C) images: place it right after the decoder, "
                             f"before ToTensor (it got {previous_state.dtype} {previous_state.shape})")
        return previous_state, index_scratch()

    def generate_code(self):
        control_at = np.uint64(self.control.address)
        flip_at = np.uint64(self.flip_record.ctypes.data)

        def flip_op(images, index_scratch, indices):
            count, height, width, channels = images.shape
            sample_ids = copy_indices(indices, index_scratch)
            flip_batch(images.ctypes.data, sample_ids.ctypes.data, count, height, width, channels, control_at,
                       flip_at)
            return images

        flip_op.with_indices = True
        return flip_op


class MixingRawDecoder(SimpleRGBImageDecoder):   # subclassed to be recognised as a decoder, as above
    """Decoder for raw-stored images of one size that mixes while it copies them out of the file's pages.

    Same output as ``SimpleRGBImageDecoder()`` followed by ``mixing.image_op(float_output)``, bit for bit, in
    one pass over memory instead of two; the label pipeline keeps ``mixing.label_op(...)``. The parameters
    are drawn from the same key (seed, epoch, sample indices) and read the same control block (epoch, on/off).
    Without ``float_output`` it yields uint8 (H, W, C) images; with one, float32 images normalised and laid
    out as it says (see ``mixing.FloatOutput``), straight from the pages (no uint8 batch in between).
    Raises ValueError (when the pipeline is built) for JPEG samples or images of varying size.
    """

    def __init__(self, mixing, float_output=None):
        super().__init__()
        self.mixing = mixing   # holds the ControlBlock and MIX_SETTINGS record whose addresses the code reads
        self.float_output = float_output
        # The FLOAT_SETTINGS record the compiled code reads: owned by this decoder, never replaced.
        self.float_record = float_output.settings_record() if float_output is not None else None

    def _image_shape(self) -> Tuple[int, int]:
        heights, widths = self.metadata["height"], self.metadata["width"]
        if heights.min() != heights.max() or widths.min() != widths.max():
            raise FfmixError("MixingRawDecoder needs images of one size; these vary from "
                             f"{heights.min()}x{widths.min()} to {heights.max()}x{widths.max()} (use a crop decoder)")
        if (self.metadata["mode"] != RAW_MODE).any():
            raise FfmixError("MixingRawDecoder reads raw-stored images only and this file holds JPEGs; use "
                             "SimpleRGBImageDecoder followed by Mixing.image_op()")
        return int(heights[0]), int(widths[0])

    def _output_shape(self, height: int, width: int) -> Tuple[Tuple[int, ...], np.dtype]:
        """One sample's output shape and dtype: uint8 (H, W, 3), or the float output's layout."""
        if self.float_output is None:
            return (height, width, 3), np.dtype(np.uint8)
        out_channels = self.float_output.out_channels
        if not 1 <= out_channels <= 3:
            raise FfmixError(f"float_output.channels must be in [1, 3], got {out_channels}")
        shape = (height, width, out_channels) if self.float_output.channels_last else (out_channels, height, width)
        return shape, np.dtype(np.float32)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Tuple[AllocationQuery, ...]]:
        height, width = self._image_shape()
        expected = self.mixing.image_size
        if expected is not None and (height, width) != expected:
            raise FfmixError(f"this Mixing was built for {expected[0]}x{expected[1]} images but the file holds "
                             f"{height}x{width}; build one Mixing per image size")
        shape, dtype = self._output_shape(height, width)
        return (replace(previous_state, jit_mode=True, shape=shape, dtype=dtype),
                (AllocationQuery(shape, dtype), index_scratch(), index_scratch()))

    def generate_code(self):
        height, width = self._image_shape()
        control_at = np.uint64(self.mixing.control.address)
        mix_at = np.uint64(self.mixing.record.ctypes.data)
        floats = self.float_record is not None
        float_at = np.uint64(self.float_record.ctypes.data if floats else 0)
        mem_read = self.memory_read
        pixels = height * width * 3

        def mix_decode_op(batch_indices, buffers, metadata, storage_state):
            destination, source_scratch, index_scratch = buffers
            count = len(batch_indices)
            sources = source_scratch[:count, 0]
            sample_ids = index_scratch[:count, 0]
            for position in range(count):
                index = batch_indices[position]
                data = mem_read(metadata[index]["data_ptr"], storage_state)
                if data.size != pixels:
                    raise ValueError("a raw image's stored size does not match its height and width")
                sources[position] = data.ctypes.data
                sample_ids[position] = index
            out = destination[:count]
            if floats:
                mix_normalize_raw_batch(sources.ctypes.data, sample_ids.ctypes.data, count, height, width, 3,
                                        out.ctypes.data, control_at, mix_at, float_at)
            else:
                mix_raw_batch(sources.ctypes.data, sample_ids.ctypes.data, count, height, width, 3,
                              out.ctypes.data, control_at, mix_at)
            return out

        return mix_decode_op
