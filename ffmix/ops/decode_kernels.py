"""The Numba kernels of ffmix's decoders and flip, and their C entry points (see ``batch.py`` for why cfuncs).

FFCV's compiled JPEG decoder and OpenCV resize (``libffcv``'s ``imdecode`` and ``resize``) are called through
their addresses (``ffcv_compat.libffcv_functions``) with the small intrinsics below: a function that embeds a
ctypes function could not be cached, and these kernels must load from Numba's cache, not recompile per start.

Every address these functions read or write, and its owner (whose lifetime covers the compiled code):

=================  ==============================================  ===========================================
argument           what it points at                               owner
=================  ==============================================  ===========================================
table_at           per-sample (data address, bytes, height,        FFCV's preallocated buffers (the decoder's
                   width, mode, index, status, stand-in), int64     ``AllocationQuery``); the closure fills the
                   (count, 8)                                       first six, the kernel the last two
data addresses     each sample's bytes in the file's pages          FFCV's memory manager: the memory-mapped
(in the table,                                                     file or the process cache, valid while the
sources_at)                                                        epoch's memory context is entered, i.e.
                                                                   during every batch
out_at             the decoders' output images (uint8, or float32  FFCV's preallocated buffers (the decoder's
                   for ``mix_normalize_raw_batch``)                output ``AllocationQuery``)
images_at          the batch ``flip_batch`` flips in place: the    FFCV's preallocated buffers (the output of
                   decoder's output                                the decoder before it)
scratch_at         one slot per worker: WINDOW_BYTES of window,     the decoder operation (``_Scratch``, made
                   ``work_bytes`` of resampler work memory, then   in ``__init__``; buffers only added, never
                   a full-size image's pixels (the exact path      freed or replaced while the op lives)
                   decodes from the slot's start)
window             the region decoder's int64[6] answer (first     the worker's scratch slot (its first
                   row, column, rows, columns, scaled height,      WINDOW_BYTES), written by the C function,
                   width), read right after the call               read by the same worker before its next
                                                                   sample
indices_at,        the batch's sample indices / data addresses     FFCV's preallocated buffers (scratch
sources_at         as contiguous uint64                            queries), filled by the closure
control_at         epoch (and on/off for the fused mix)            the ``ControlBlock`` passed to the op,
                                                                   which keeps a reference to it
mix_at             the fused mix's ``MIX_SETTINGS`` record          the ``Mixing`` the op holds (see batch.py)
float_at           the fused float output's ``FLOAT_SETTINGS``      the ``MixingRawDecoder`` (``float_record``,
                   record (normalisation, layout)                  made in ``__init__``, never replaced)
crop_at            the decoder's ``CROP_SETTINGS`` record            the crop decoder (``crop_record``, made in
                                                                   ``__init__``, filled before each compile)
flip_at            the flip's ``FLIP_SETTINGS`` record               the ``RandomFlip`` (made in ``__init__``)
imdecode_at,       ``imdecode`` / ``resize`` in FFCV's             the ``ffcv._libffcv`` shared library,
resize_at          ``_libffcv`` extension                          loaded by ``ffcv.libffcv`` for the process
region_at          ``ffmix_decode_region`` (ffmix/native/          ffmix's ``_jpeg_region.so``, loaded by
                   jpeg_region.c); 0 when it could not be built    ``ffmix.native`` (held in its ``_load``
                   (the exact path is used then)                    cache) for the life of the process
report_at          the decode report: stand-ins counted, the       the ``DecodeReport`` (``decode_errors.py``)
                   batch's table address and count                 the decoder makes in ``__init__`` and
                                                                   ``StandInRows`` holds; never replaced
rows_at            the batch's (sample index, stand-in) rows       FFCV's preallocated buffers (the output of
                   handed to the consumer                          ``StandInRows``)
batch table        read by ``stand_in_rows_batch`` through the     FFCV's preallocated buffers (as table_at),
(in the report)    report, later in the same batch                 written earlier in the same batch
=================  ==============================================  ===========================================

Two JPEG paths (``crop.exact``): the exact one decodes the whole image with libffcv's ``imdecode`` into the
worker's scratch and resizes the box from it, FFCV's pixels; the default one decodes, at the DCT scale
``dct_denominator`` picks, only the box's rows and (iMCU-widened) columns with ffmix's region decoder
(``ffmix_decode_region``: libjpeg's jpeg_skip_scanlines / jpeg_crop_scanline / jpeg_abort_decompress) into
the scratch, then resizes the box (fractional in the scaled image) from that window with ffmix's area
resampler (``resize_kernels.resize_box``). The region decoder uses libffcv's IDCT and upsampling, so the
box's decoded pixels equal a full decode's at the same scale, bit for bit (tests/test_jpeg_region.py); the
output differs from FFCV's through the DCT scaling and the resampler's rounding (about 0.05 levels at full
scale; docs/decoding.md measures each scale). It stops after the box's last row, so it cannot see damage
below it: it first checks that the bytes hold the end-of-image marker near their end (``ends_with_eoi``),
which a cut-off or half-zeroed copy lacks, and a warning in the rows it decodes fails the sample as an error
does. Without the region decoder (it could not be built: ``ffmix.native``) ``region_at`` is 0 and the crop
record says exact: the decoders warn once.

Statuses: libffcv's ``imdecode`` returns libjpeg-turbo's (0 clean, -1 an error *or a warning*); its ``resize``
returns nothing (OpenCV throws, which would abort the process through the C boundary), so the kernel checks
the box before calling it. Each sample's status goes into the table (``STATUS``); a failed sample never
leaves another sample's bytes in its slot: the caller raises, or the stand-in pass copies a donor's pixels
(``STAND_IN`` names it) and the loader gives the sample its donor's label (``decode_errors.py``).

Sizes and counts travel by value; settings (crop ranges, seeds, policy) in their records.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..ffcv_compat import JPEG_MODE, call_imdecode, call_resize
from .augment import (CROP_STREAM, FLIP_STREAM, center_crop_box, flip_draw, random_crop_box, sample_key)
from .batch import batch_mix_params, float_output
from .control import EPOCH, as_pointer, read_control
from .jpeg_region import COL0, COLS, ROW0, ROWS, SCALED_HEIGHT, SCALED_WIDTH, call_decode_region
from .resize_kernels import RESIZED, resize_box
from .params import WEIGHT_ONE
from .kernels import mix_normalize_from_pages
from .settings import CROP_RECORD, FLIP_RECORD, MIX_RECORD, entry_point, read_settings

# The decoder's per-sample table (int64): filled by the closure, then the kernel's results.
DATA_AT, DATA_BYTES, HEIGHT, WIDTH, MODE, INDEX, STATUS, STAND_IN = range(8)
TABLE_COLUMNS = 8
# Per-sample statuses (STATUS): why a sample could not be decoded.
DECODED, DECODE_FAILED, HEADER_MISMATCH, BAD_BOX, RAW_SIZE = range(5)
STATUS_TEXT = {DECODE_FAILED: "libjpeg-turbo reported an error or a warning (damaged or cut-off JPEG data)",
               HEADER_MISMATCH: "the JPEG's header does not give the height and width the file's table records",
               BAD_BOX: "the crop box lies outside the image",
               RAW_SIZE: "the raw image's byte count does not match its height and width"}
# Policies (by value): what the batch does with a sample that failed.
RAISE, STAND_IN_POLICY = 0, 1
# The decode report (int64): stand-ins counted since the last reset; the current batch's table and count
# (for the label op); then the sample indices of the first RECENT stand-ins since the reset.
REPORT_STAND_INS, REPORT_TABLE_AT, REPORT_COUNT, REPORT_RECENT = range(4)
RECENT = 16
REPORT_SIZE = REPORT_RECENT + RECENT
NO_DONOR = -1
CROP_RANDOM, CROP_CENTER = 1, 0
_HALF = WEIGHT_ONE // 2

_BYTES = ir.IntType(8).as_pointer()


# ------------------------------------------------------------------------------- raw memory

def _as_i64(context, builder, signature, args):
    return [context.cast(builder, value, kind, types.int64) for value, kind in zip(args, signature.args)]


@intrinsic
def copy_bytes(typingctx, destination_at, source_at, count):
    """``memcpy(destination_at, source_at, count)`` as LLVM's memcpy intrinsic (non-overlapping)."""
    def codegen(context, builder, signature, args):
        destination, source, size = _as_i64(context, builder, signature, args)
        cgutils.raw_memcpy(builder, builder.inttoptr(destination, _BYTES), builder.inttoptr(source, _BYTES), size, 1)
        return context.get_dummy_value()
    return types.none(destination_at, source_at, count), codegen


# ------------------------------------------------------------------------------------------ kernels

@njit(cache=True, inline="always")
def dct_denominator(box_height, box_width, out_height, out_width, allowed):
    """The largest of 1, 2, 4, 8 (<= ``allowed``) by which the box can shrink and still cover the output."""
    denom = 1
    while denom < allowed and box_height >= 2 * denom * out_height and box_width >= 2 * denom * out_width:
        denom *= 2
    return denom


@njit(cache=True, nogil=True)
def jpeg_header_size(data):
    """(height, width) from the first SOF marker of the JPEG bytes ``data`` (uint8), or (-1, -1) if the
    bytes do not start like a JPEG or end before a frame header. Reference: the shape OpenCV's / PIL's
    decoders give (tests/test_decode_errors.py checks them against each other).

    Walks the marker segments from the start: FF D8 (start of image), then FF xx [length] segments; the
    frame header (SOF0-15, except DHT C4, JPG C8, DAC CC) holds precision, height, width.
    """
    size = data.shape[0]
    if size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return -1, -1
    position = 2
    while position + 4 <= size:
        if data[position] != 0xFF:
            return -1, -1
        marker = data[position + 1]
        if marker == 0xFF:                     # fill byte before a marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:   # markers without a length
            position += 2
            continue
        length = (np.int64(data[position + 2]) << 8) | np.int64(data[position + 3])
        if 0xC0 <= marker <= 0xCF and marker != 0xC4 and marker != 0xC8 and marker != 0xCC:
            if position + 9 > size:
                return -1, -1
            height = (np.int64(data[position + 5]) << 8) | np.int64(data[position + 6])
            width = (np.int64(data[position + 7]) << 8) | np.int64(data[position + 8])
            return height, width
        if marker == 0xDA or marker == 0xD9 or length < 2:   # scan or end before any frame header
            return -1, -1
        position += 2 + length
    return -1, -1


@njit(cache=True, inline="always")
def box_fits(top, bottom, left, right, height, width, out_height, out_width):
    """What OpenCV's resize needs (it throws otherwise): a non-empty box inside the image, a non-empty output."""
    return 0 <= top < bottom <= height and 0 <= left < right <= width and out_height > 0 and out_width > 0


# Each scratch slot starts with the region decoder's window (int64[6]), then the resampler's work memory, then
# the decoded pixels.
WINDOW_BYTES = 64
# How far back from the end ``ends_with_eoi`` looks for the end-of-image marker (trailing padding some
# writers leave after it; ``sources/jpeg.py`` stores a JPEG only with an EOI after its scan).
EOI_SEARCH = 4096


@njit(cache=True, inline="always")
def ends_with_eoi(data):
    """Whether the JPEG bytes ``data`` (uint8) hold an end-of-image marker (FF D9) in their last
    ``EOI_SEARCH`` bytes. In entropy-coded data an FF byte is followed by 00 or a restart marker, so a
    cut-off copy, or one whose end was zeroed, has none there. Reference: ``bytes.rfind`` (tests)."""
    size = data.shape[0]
    for position in range(size - 2, max(size - EOI_SEARCH, 0) - 1, -1):
        if data[position] == 0xFF and data[position + 1] == 0xD9:
            return True
    return False


@njit(cache=True, inline="always")
def scaled_box(top, left, bottom, right, height, width, denom):
    """The box in the image decoded at 1/``denom`` (ceil(H / d) x ceil(W / d) pixels): start down, end up,
    so it still covers the same pixels. Returns (top, left, bottom, right, scaled height, scaled width)."""
    height, width = (height + denom - 1) // denom, (width + denom - 1) // denom
    return (top // denom, left // denom, min((bottom + denom - 1) // denom, height),
            min((right + denom - 1) // denom, width), height, width)


@njit(cache=True, inline="always")
def decode_whole(data_at, size, height, width, top, left, bottom, right, out_at, out_height, out_width, scratch,
                 max_dct, imdecode_at, resize_at):
    """The exact path: the whole JPEG decoded by libffcv into ``scratch`` (at 1/2..1/8 scale when ``max_dct``
    allows), the box resized from it: FFCV's decoders' pixels for max_dct = 1."""
    denom = dct_denominator(bottom - top, right - left, out_height, out_width, max_dct)
    if call_imdecode(imdecode_at, data_at, size, height, width, scratch, denom) != 0:
        return DECODE_FAILED
    top, left, bottom, right, height, width = scaled_box(top, left, bottom, right, height, width, denom)
    call_resize(resize_at, scratch, height, width, top, bottom, left, right, out_at, out_height, out_width)
    return DECODED


@njit(cache=True, inline="always")
def decode_part(data_at, size, height, width, top, left, bottom, right, out_at, out_height, out_width, scratch,
                scratch_bytes, work_bytes, max_dct, region_at):
    """The default path: only the box's rows and columns decoded (at the DCT scale ``dct_denominator``
    picks) into the scratch slot's window, the box resized from there with ffmix's area resampler
    (``resize_kernels``: the box in scaled pixels, fractional, so no rounding to whole scaled pixels; with
    ``work_bytes`` of work memory after the window). Faster than OpenCV's INTER_AREA on these boxes and
    closer to the exact path (docs/decoding.md)."""
    if not ends_with_eoi(carray(as_pointer(data_at), (size,), np.uint8)):
        return DECODE_FAILED
    denom = dct_denominator(bottom - top, right - left, out_height, out_width, max_dct)
    exact_top, exact_left = top / denom, left / denom
    exact_height, exact_width = (bottom - top) / denom, (right - left) / denom
    top, left, bottom, right, scaled_height, scaled_width = scaled_box(top, left, bottom, right, height, width,
                                                                       denom)
    work = scratch + WINDOW_BYTES
    pixels = work + work_bytes
    status = call_decode_region(region_at, data_at, size, denom, top, left, bottom, right, pixels,
                                scratch_bytes - WINDOW_BYTES - work_bytes, scratch)
    window = carray(as_pointer(scratch), (6,), np.int64)
    if status != 0:
        return DECODE_FAILED
    if window[SCALED_HEIGHT] != scaled_height or window[SCALED_WIDTH] != scaled_width:
        return HEADER_MISMATCH
    rows, cols, col0 = window[ROWS], window[COLS], window[COL0]
    if window[ROW0] != top or rows != bottom - top or not box_fits(0, rows, left - col0, right - col0, rows, cols,
                                                                  out_height, out_width):
        return BAD_BOX
    resized = resize_box(pixels, 3 * cols, rows, cols, exact_top - top, exact_left - col0, exact_height,
                         exact_width, out_at, out_height, out_width, work, work_bytes)
    return DECODED if resized == RESIZED else BAD_BOX


@njit(cache=True, inline="always")
def decode_one(data_at, size, height, width, mode, top, left, box_height, box_width, out_at, out_height,
               out_width, scratch, scratch_bytes, work_bytes, max_dct, exact, imdecode_at, resize_at, region_at):
    """Decode and crop one sample into ``out_at``; returns its status (DECODED or why not).

    A JPEG whose box is the whole image at the output's size is decoded straight into the output; any
    other is decoded into ``scratch`` and resized from there: the whole image (``exact``, or no region
    decoder: ``region_at`` 0) or only the box's region. A raw image is resized straight from the file's pages.
    """
    bottom, right = top + box_height, left + box_width
    if not box_fits(top, bottom, left, right, height, width, out_height, out_width):
        return BAD_BOX
    if mode != JPEG_MODE:
        if size != height * width * 3:
            return RAW_SIZE
        call_resize(resize_at, data_at, height, width, top, bottom, left, right, out_at, out_height, out_width)
        return DECODED
    # libjpeg-turbo decodes at the size the JPEG's header gives, scaled to fit the size passed in: a header
    # that disagrees with the table would leave part of the buffer unwritten (an earlier image's bytes).
    header_height, header_width = jpeg_header_size(carray(as_pointer(data_at), (size,), np.uint8))
    if header_height != height or header_width != width:
        return HEADER_MISMATCH
    whole = top == 0 and left == 0 and bottom == height and right == width
    if whole and out_height == height and out_width == width:
        return DECODED if call_imdecode(imdecode_at, data_at, size, height, width, out_at, 1) == 0 else DECODE_FAILED
    if exact or region_at == 0:
        return decode_whole(data_at, size, height, width, top, left, bottom, right, out_at, out_height, out_width,
                            scratch, max_dct, imdecode_at, resize_at)
    return decode_part(data_at, size, height, width, top, left, bottom, right, out_at, out_height, out_width,
                       scratch, scratch_bytes, work_bytes, max_dct, region_at)


@njit(cache=True, parallel=True, nogil=True)
def decode_crop(table, out_at, out_height, out_width, scratch_at, scratch_bytes, work_bytes, slots, workers, epoch,
                crop, imdecode_at, resize_at, region_at):
    """Decode, crop and resize every sample of ``table`` into the uint8 (count, out_height, out_width, 3)
    batch at ``out_at``; each sample's status goes into ``table[:, STATUS]``. Returns how many failed.

    ``crop`` is the decoder's ``CROP_SETTINGS`` record. The box comes from ``augment`` (random or centre, as
    ``crop.kind`` says); with ``crop.max_dct`` > 1 a JPEG whose box covers the
    output at least twice is decoded at 1/2, 1/4 or 1/8 scale; unless ``crop.exact``, only the box's region
    of it (``decode_part``). ``workers`` (at most ``slots``, the scratch
    buffers) take samples round-robin, each with its own scratch buffer, so the scratch stays in cache and
    costs ``slots`` images rather than a batch of them. The caller passes ``numba.get_num_threads()``:
    calling it here would make the kernel uncacheable (it goes through a ctypes pointer).
    """
    count = table.shape[0]
    seed, kind, max_dct, center_ratio, exact = crop.seed, crop.kind, crop.max_dct, crop.center_ratio, crop.exact
    scale_low, scale_high, log_ratio_low, log_ratio_high = (crop.scale_low, crop.scale_high, crop.log_ratio_low,
                                                            crop.log_ratio_high)
    workers = max(min(slots, workers), 1)
    out_bytes = out_height * out_width * 3
    # Addresses as int64: Numba types uint64 + int64 as a float (exact below 2**53, but no way to do pointers).
    out_base, scratch_base = np.int64(out_at), np.int64(scratch_at)
    for worker in prange(workers):
        scratch = scratch_base + worker * scratch_bytes
        for i in range(worker, count, workers):
            height, width, index = table[i, HEIGHT], table[i, WIDTH], table[i, INDEX]
            if kind == CROP_RANDOM:
                key = sample_key(seed, epoch, index, CROP_STREAM)
                top, left, box_height, box_width, _ = random_crop_box(key, height, width, scale_low, scale_high,
                                                                      log_ratio_low, log_ratio_high)
            else:
                top, left, box_height, box_width = center_crop_box(height, width, out_height, out_width,
                                                                   center_ratio)
            table[i, STATUS] = decode_one(table[i, DATA_AT], table[i, DATA_BYTES], height, width, table[i, MODE],
                                          top, left, box_height, box_width, out_base + i * out_bytes, out_height,
                                          out_width, scratch, scratch_bytes, work_bytes, max_dct, exact,
                                          imdecode_at, resize_at, region_at)
    failed = 0
    for i in range(count):
        failed += table[i, STATUS] != DECODED
    return failed


@njit(cache=True, nogil=True)
def stand_in_donors(table):
    """For each failed sample of ``table``, the nearest decoded sample before it in the batch (wrapping round)
    into ``table[:, STAND_IN]``; decoded samples name themselves. Returns False if none decoded.

    Reference: ``[max(j for j in decoded if j < i) if any else max(decoded)]`` (tests/test_decode_errors.py)."""
    count = table.shape[0]
    donor = NO_DONOR
    for i in range(count):          # the last decoded sample is the donor of failures at the start
        if table[i, STATUS] == DECODED:
            donor = i
    if donor == NO_DONOR:
        return False
    for i in range(count):
        if table[i, STATUS] == DECODED:
            donor = i
        table[i, STAND_IN] = donor
    return True


@njit(cache=True, parallel=True, nogil=True)
def flip_images(images, indices, seed, epoch, probability):
    """Reverse the rows of each sample of uint8 (N, H, W, C) ``images`` whose flip draw says so, in place."""
    n, height, width, channels = images.shape
    rows = images.reshape(n, height, width * channels)
    for i in prange(n):
        if not flip_draw(sample_key(seed, epoch, indices[i], FLIP_STREAM), probability):
            continue
        for y in range(height):
            row = rows[i, y]
            if channels == 3:
                # RGB with a literal stride, as in kernels.py: 3-4x faster than a loop over channels
                for x in range(width // 2):
                    left, right = 3 * x, 3 * (width - 1 - x)
                    red, green, blue = row[left], row[left + 1], row[left + 2]
                    row[left], row[left + 1], row[left + 2] = row[right], row[right + 1], row[right + 2]
                    row[right], row[right + 1], row[right + 2] = red, green, blue
            else:
                for x in range(width // 2):
                    left, right = channels * x, channels * (width - 1 - x)
                    for c in range(channels):
                        row[left + c], row[right + c] = row[right + c], row[left + c]
    return images


@njit(cache=True, parallel=True, nogil=True)
def mix_from_pages(sources, out, partner, weight, box):
    """``kernels.mix_images`` with each sample's pixels read at its own address ``sources[i]`` (the raw
    image in the file's pages) instead of from a decoded batch: the decoder's copy and the mix are one pass.

    out: uint8 (N, H, W, C). The arithmetic is ``mix_images``' exactly (round half up in 1/256ths; CutMix
    takes the box whole from the partner), so the result is bit-identical to a plain copy followed by
    ``mix_images``.
    """
    n, height, width, channels = out.shape
    row_bytes = width * channels
    pixels = height * row_bytes
    flat_out = out.reshape(n, pixels)
    for i in prange(n):
        j = partner[i]
        own = carray(as_pointer(sources[i]), (pixels,), np.uint8)
        other = carray(as_pointer(sources[j]), (pixels,), np.uint8)
        dst = flat_out[i]
        own_weight = np.int32(weight[i])
        y0, y1, x0, x1 = box[i, 0], box[i, 1], box[i, 2], box[i, 3]
        if own_weight == WEIGHT_ONE or (y1 > y0 and x1 > x0):
            # CutMix: the whole image, then the box from the partner (written twice, in cache), by memcpy.
            # Slice assignments or byte loops cost more than the copy itself for small images' rows (they
            # made CutMix 4-6x slower than a copy at 32 x 32; this is about 2x).
            # int64, not uint64: Numba types uint64 + int64 as a float.
            dst_at, other_image = np.int64(dst.ctypes.data), np.int64(sources[j])
            copy_bytes(dst_at, sources[i], pixels)
            if y1 > y0 and x1 > x0:
                span = (x1 - x0) * channels
                for y in range(y0, y1):
                    start = y * row_bytes + x0 * channels
                    copy_bytes(dst_at + start, other_image + start, span)
        else:
            other_weight = WEIGHT_ONE - own_weight
            for k in range(pixels):
                dst[k] = (own[k] * own_weight + other[k] * other_weight + _HALF) >> 8
    return out


@njit(cache=True, nogil=True)
def stand_in(table, out_at, out_bytes, report):
    """The stand-in policy for one decoded batch: each failed sample's slot gets a copy of its donor's pixels
    (``stand_in_donors``), counted in ``report`` with the first ``RECENT`` sample indices. Returns False, with
    nothing copied, when no sample of the batch decoded."""
    if not stand_in_donors(table):
        return False
    out_base = np.int64(out_at)
    for i in range(table.shape[0]):
        donor = table[i, STAND_IN]
        if donor == i:
            continue
        copy_bytes(out_base + i * out_bytes, out_base + donor * out_bytes, out_bytes)
        seen = report[REPORT_STAND_INS]
        if seen < RECENT:
            report[REPORT_RECENT + seen] = table[i, INDEX]
        report[REPORT_STAND_INS] = seen + 1
    return True


# ------------------------------------------------------------------------------------- entry points



@entry_point
def decode_crop_batch(table_at, count, out_at, out_height, out_width, scratch_at, scratch_bytes, work_bytes, slots,
                      workers, control_at, crop_at, imdecode_at, resize_at, region_at, report_at):
    """Decode and crop ``count`` samples (``table``: int64 (count, TABLE_COLUMNS)); see ``decode_crop``.

    Returns how many samples failed (their statuses are in the table). Under ``STAND_IN_POLICY`` their
    slots hold their donors' pixels (see ``stand_in``) and the report names this batch's table for the label
    op; -1 means no sample decoded, so there was no donor and the caller must raise."""
    control = read_control(control_at)
    crop = read_settings(crop_at, CROP_RECORD)
    table = carray(as_pointer(table_at), (count, TABLE_COLUMNS), np.int64)
    failed = decode_crop(table, out_at, out_height, out_width, scratch_at, scratch_bytes, work_bytes, slots, workers,
                         control[EPOCH], crop, imdecode_at, resize_at, region_at)
    if crop.policy != STAND_IN_POLICY:
        return failed
    report = carray(as_pointer(report_at), (REPORT_SIZE,), np.int64)
    report[REPORT_TABLE_AT] = np.int64(table_at)
    report[REPORT_COUNT] = count
    if failed == 0:
        for i in range(count):
            table[i, STAND_IN] = i
        return 0
    return failed if stand_in(table, out_at, out_height * out_width * 3, report) else -1


@entry_point
def stand_in_rows_batch(rows_at, count, report_at):
    """Copy the batch's (sample index, stand-in position) rows, int64 (count, 2), from the table the decoder
    named in the report earlier in the same batch. Returns how many samples are stand-ins, or -1 if the
    report names no batch of this size."""
    report = carray(as_pointer(report_at), (REPORT_SIZE,), np.int64)
    if report[REPORT_TABLE_AT] == 0 or report[REPORT_COUNT] != count:
        return -1
    table = carray(as_pointer(report[REPORT_TABLE_AT]), (count, TABLE_COLUMNS), np.int64)
    rows = carray(as_pointer(rows_at), (count, 2), np.int64)
    replaced = 0
    for i in range(count):
        rows[i, 0] = table[i, INDEX]
        rows[i, 1] = table[i, STAND_IN]
        replaced += table[i, STAND_IN] != i
    report[REPORT_TABLE_AT] = 0       # read once: the next batch must be named again
    return replaced


@entry_point
def flip_batch(images_at, indices_at, count, height, width, channels, control_at, flip_at):
    """Flip, in place, the samples of the uint8 (count, H, W, C) batch that the epoch's draws pick."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    flip = read_settings(flip_at, FLIP_RECORD)
    flip_images(images, indices, flip.seed, control[EPOCH], flip.probability)
    return count


@entry_point
def mix_raw_batch(sources_at, indices_at, count, height, width, channels, out_at, control_at, mix_at):
    """Copy-and-mix ``count`` raw (H, W, C) images, each at its address in ``sources``, into ``out``; the
    parameters are those ``mix_image_batch`` draws for the same key and settings, so the label op agrees."""
    sources = carray(as_pointer(sources_at), (count,), np.uint64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    out = carray(as_pointer(out_at), (count, height, width, channels), np.uint8)
    partner, weight, box, _ = batch_mix_params(control_at, indices, read_settings(mix_at, MIX_RECORD))
    mix_from_pages(sources, out, partner, weight, box)
    return count


@entry_point
def mix_normalize_raw_batch(sources_at, indices_at, count, height, width, channels, out_at, control_at, mix_at,
                            float_at):
    """``mix_raw_batch`` writing normalised float32 as ``batch.mix_normalize_batch`` does: ``out`` is
    (count, C', H, W), or (count, H, W, C') if the ``FLOAT_SETTINGS`` record at ``float_at`` says
    ``channels_last``. The file's pages are read once: copy, mix and normalisation are one pass. With mixing
    switched off the images are only converted."""
    sources = carray(as_pointer(sources_at), (count,), np.uint64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    out, scale, shift, channels_last = float_output(out_at, count, height, width, float_at)
    partner, weight, box, _ = batch_mix_params(control_at, indices, read_settings(mix_at, MIX_RECORD))
    mix_normalize_from_pages(sources, out, partner, weight, box, scale, shift, channels_last, channels)
    return count
