"""The Numba kernels of ffmix's decoders and flip, and their C entry points (see ``batch.py`` for why cfuncs).

FFCV's compiled JPEG decoder and OpenCV resize (``libffcv``'s ``imdecode`` and ``resize``) are called through
their addresses (``ffcv_compat.libffcv_functions``) with the small intrinsics below: a function that embeds a
ctypes function could not be cached, and these kernels must load from Numba's cache, not recompile per start.

Every address these functions read or write, and its owner (whose lifetime covers the compiled code):

=================  ==============================================  ===========================================
argument           what it points at                               owner
=================  ==============================================  ===========================================
table_at           per-sample (data address, bytes, height,        FFCV's preallocated buffers (the decoder's
                   width, mode, index), int64 (count, 6)            ``AllocationQuery``); the closure fills it
data addresses     each sample's bytes in the file's pages          FFCV's memory manager: the memory-mapped
(in the table,                                                     file or the process cache, valid while the
sources_at)                                                        epoch's memory context is entered, i.e.
                                                                   during every batch
out_at             the decoders' output images                     FFCV's preallocated buffers (the decoder's
                                                                   output ``AllocationQuery``)
images_at          the batch ``flip_batch`` flips in place: the    FFCV's preallocated buffers (the output of
                   decoder's output                                the decoder before it)
scratch_at         one full-size decode buffer per worker          the decoder operation (``_Scratch``, made
                                                                   in ``__init__``; buffers only added, never
                                                                   freed or replaced while the op lives)
indices_at,        the batch's sample indices / data addresses     FFCV's preallocated buffers (scratch
sources_at         as contiguous uint64                            queries), filled by the closure
control_at         epoch (and on/off for the fused mix)            the ``ControlBlock`` passed to the op,
                                                                   which keeps a reference to it
mix_at             the fused mix's ``MIX_SETTINGS`` record          the ``Mixing`` the op holds (see batch.py)
imdecode_at,       ``imdecode`` / ``resize`` in FFCV's             the ``ffcv._libffcv`` shared library,
resize_at          ``_libffcv`` extension                          loaded by ``ffcv.libffcv`` for the process
=================  ==============================================  ===========================================

Everything else (seed, scale and ratio ranges, sizes) travels by value.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..ffcv_compat import JPEG_MODE
from .augment import (CROP_STREAM, FLIP_STREAM, center_crop_box, flip_draw, random_crop_box, sample_key)
from .batch import batch_mix_params
from .control import EPOCH, as_pointer, read_control
from .params import WEIGHT_ONE
from .settings import entry_point, read_mix_settings

TABLE_COLUMNS = 6             # data address, bytes, height, width, mode, sample index
CROP_RANDOM, CROP_CENTER = 1, 0
_HALF = WEIGHT_ONE // 2

_I64, _I32 = ir.IntType(64), ir.IntType(32)
_BYTES = ir.IntType(8).as_pointer()


# ------------------------------------------------------------------------------- calls into libffcv

def _as_i64(context, builder, signature, args):
    return [context.cast(builder, value, kind, types.int64) for value, kind in zip(args, signature.args)]


@intrinsic
def call_imdecode(typingctx, function_at, source_at, source_size, height, width, destination_at, scale_denom):
    """libffcv ``imdecode``: the whole JPEG at ``source_at`` as RGB into ``destination_at``, scaled by
    1/``scale_denom`` (libjpeg-turbo's DCT scaling; 1 = full size: ceil(H / d) x ceil(W / d) pixels).
    Returns libjpeg-turbo's status (0 = clean)."""
    def codegen(context, builder, signature, args):
        fn_at, src, size, h, w, dst, denom = _as_i64(context, builder, signature, args)
        # C: int imdecode(uchar*, uint64, uint32 h, uint32 w, uchar*, uint32 crop_h, uint32 crop_w, uint32 x,
        #                  uint32 y, uint32 num, uint32 denom, bool crop, bool flip); bools passed as int32 0.
        fnty = ir.FunctionType(_I32, [_BYTES, _I64, _I32, _I32, _BYTES] + [_I32] * 8)
        fn = builder.inttoptr(fn_at, fnty.as_pointer())
        h32, w32 = builder.trunc(h, _I32), builder.trunc(w, _I32)
        zero, one = ir.Constant(_I32, 0), ir.Constant(_I32, 1)
        return builder.call(fn, [builder.inttoptr(src, _BYTES), size, h32, w32, builder.inttoptr(dst, _BYTES),
                                 h32, w32, zero, zero, one, builder.trunc(denom, _I32), zero, zero])
    return types.int32(function_at, source_at, source_size, height, width, destination_at, scale_denom), codegen


@intrinsic
def call_resize(typingctx, function_at, source_at, height, width, top, bottom, left, right, destination_at,
                out_height, out_width):
    """libffcv ``resize``: OpenCV INTER_AREA resize of rows [top, bottom) x columns [left, right) of the
    contiguous RGB image at ``source_at`` (height x width) into ``out_height`` x ``out_width`` RGB."""
    def codegen(context, builder, signature, args):
        values = _as_i64(context, builder, signature, args)
        fnty = ir.FunctionType(ir.VoidType(), [_I64] * 11)
        fn = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(fn, [ir.Constant(_I64, 0)] + values[1:])
        return context.get_dummy_value()
    return types.none(function_at, source_at, height, width, top, bottom, left, right, destination_at, out_height,
                      out_width), codegen


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


@njit(cache=True, parallel=True, nogil=True)
def decode_crop(table, out_at, out_height, out_width, scratch_at, scratch_bytes, slots, workers, epoch, seed, kind,
                scale_low, scale_high, log_ratio_low, log_ratio_high, center_ratio, max_dct, imdecode_at,
                resize_at):
    """Decode, crop and resize every sample of ``table`` into the uint8 (count, out_height, out_width, 3)
    batch at ``out_at``. JPEGs are decoded whole into the worker's scratch buffer (as FFCV's decoders do);
    raw images are resized straight from the file's pages. The box comes from ``augment`` (random or centre);
    with ``max_dct`` > 1 a JPEG whose box covers the output at least twice is decoded at 1/2, 1/4 or 1/8 scale.

    ``workers`` (at most ``slots``, the scratch buffers) take samples round-robin, each with its own
    scratch buffer, so the scratch stays in cache and costs ``slots`` images rather than a batch of them.
    The caller passes ``numba.get_num_threads()``: calling it here would make the kernel uncacheable (it
    goes through a ctypes pointer).
    """
    count = table.shape[0]
    workers = max(min(slots, workers), 1)
    out_bytes = out_height * out_width * 3
    # Addresses as int64: Numba types uint64 + int64 as a float (exact below 2**53, but no way to do pointers).
    out_base, scratch_base = np.int64(out_at), np.int64(scratch_at)
    for worker in prange(workers):
        scratch = scratch_base + worker * scratch_bytes
        for i in range(worker, count, workers):
            data_at, size, height, width, mode, index = (table[i, 0], table[i, 1], table[i, 2], table[i, 3],
                                                         table[i, 4], table[i, 5])
            if kind == CROP_RANDOM:
                key = sample_key(seed, epoch, index, CROP_STREAM)
                top, left, box_height, box_width, _ = random_crop_box(key, height, width, scale_low, scale_high,
                                                                      log_ratio_low, log_ratio_high)
            else:
                top, left, box_height, box_width = center_crop_box(height, width, out_height, out_width,
                                                                   center_ratio)
            bottom, right = top + box_height, left + box_width
            source_at = data_at
            if mode == JPEG_MODE:
                denom = dct_denominator(box_height, box_width, out_height, out_width, max_dct)
                call_imdecode(imdecode_at, data_at, size, height, width, scratch, denom)
                source_at = scratch
                if denom > 1:
                    # The image is ceil(H / d) x ceil(W / d) now; the box shrinks with it (start down,
                    # end up, so it still covers the same pixels).
                    height, width = (height + denom - 1) // denom, (width + denom - 1) // denom
                    top, left = top // denom, left // denom
                    bottom = min((bottom + denom - 1) // denom, height)
                    right = min((right + denom - 1) // denom, width)
            call_resize(resize_at, source_at, height, width, top, bottom, left, right, out_base + i * out_bytes,
                        out_height, out_width)
    return count


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


# ------------------------------------------------------------------------------------- entry points

_address, _i64, _f64 = types.uintp, types.int64, types.float64


@cfunc(_i64(_address, _i64, _address, _i64, _i64, _address, _i64, _i64, _i64, _address, _i64, _i64, _f64, _f64,
            _f64, _f64, _f64, _i64, _address, _address), cache=True, nogil=True)
def decode_crop_batch(table_at, count, out_at, out_height, out_width, scratch_at, scratch_bytes, slots, workers,
                      control_at,
                      seed, kind, scale_low, scale_high, log_ratio_low, log_ratio_high, center_ratio, max_dct,
                      imdecode_at, resize_at):
    """Decode and crop ``count`` samples (``table``: int64 (count, TABLE_COLUMNS)); see ``decode_crop``."""
    control = read_control(control_at)
    table = carray(as_pointer(table_at), (count, TABLE_COLUMNS), np.int64)
    return decode_crop(table, out_at, out_height, out_width, scratch_at, scratch_bytes, slots, workers,
                       control[EPOCH],
                       seed, kind, scale_low, scale_high, log_ratio_low, log_ratio_high, center_ratio, max_dct,
                       imdecode_at, resize_at)


@cfunc(_i64(_address, _address, _i64, _i64, _i64, _i64, _address, _i64, _f64), cache=True, nogil=True)
def flip_batch(images_at, indices_at, count, height, width, channels, control_at, seed, probability):
    """Flip, in place, the samples of the uint8 (count, H, W, C) batch that the epoch's draws pick."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    flip_images(images, indices, seed, control[EPOCH], probability)
    return count


@entry_point
def mix_raw_batch(sources_at, indices_at, count, height, width, channels, out_at, control_at, mix_at):
    """Copy-and-mix ``count`` raw (H, W, C) images, each at its address in ``sources``, into ``out``; the
    parameters are those ``mix_image_batch`` draws for the same key and settings, so the label op agrees."""
    sources = carray(as_pointer(sources_at), (count,), np.uint64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    out = carray(as_pointer(out_at), (count, height, width, channels), np.uint8)
    partner, weight, box, _ = batch_mix_params(control_at, indices, read_mix_settings(mix_at))
    mix_from_pages(sources, out, partner, weight, box)
    return count
