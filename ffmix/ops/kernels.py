"""The Numba kernels that mix a batch. They take every random choice as an argument (see ``params.py``), so
each is a pure function checked value-for-value against ``reference.py``.

They are module-level and ``cache=True`` on purpose: FFCV compiles the closures of its operations in every
process and caches nothing, so a heavy parallel loop inside an operation is recompiled on each start (seconds).
Kept here, it is compiled once per machine and loaded from Numba's on-disk cache afterwards.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange

from .control import as_pointer
from .params import WEIGHT_ONE

_HALF = WEIGHT_ONE // 2  # added before the shift: round half up instead of truncating


@njit(cache=True, inline="always")
def _clamped_box(box, i, height, width):
    """Row ``i`` of ``box`` limited to the image, so no box the parameters can hold writes outside a row."""
    y0 = min(max(box[i, 0], 0), height)
    y1 = min(max(box[i, 1], y0), height)
    x0 = min(max(box[i, 2], 0), width)
    x1 = min(max(box[i, 3], x0), width)
    return y0, y1, x0, x1


@njit(cache=True)
def check_partners(partner, n):
    """Partners index the batch: the kernels read ``images[partner[i]]`` without bounds checks."""
    if partner.shape[0] < n:
        raise ValueError("partner has fewer entries than the batch")
    for i in range(n):
        if partner[i] < 0 or partner[i] >= n:
            raise ValueError("a partner index lies outside the batch")


@njit(cache=True, parallel=True, nogil=True)
def mix_images(images, out, partner, weight, box):
    """Mix a uint8 batch into ``out``; ``images`` is only read.

    images, out: uint8 (N, H, W, C), C-contiguous. For each sample ``i`` with partner ``j``:
    ``out[i] = round((weight[i] * images[i] + (256 - weight[i]) * images[j]) / 256)`` (half up), or, when
    ``box[i] = (y0, y1, x0, x1)`` is not empty (CutMix; its weight is then 256), ``images[i]`` with that
    rectangle taken from ``images[j]``.
    """
    n, height, width, channels = images.shape
    flat_in = images.reshape(n, -1)
    flat_out = out.reshape(n, -1)
    rows_in = images.reshape(n, height, width * channels)
    rows_out = out.reshape(n, height, width * channels)
    pixels = flat_in.shape[1]
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        own_weight = np.int32(min(max(weight[i], 0), WEIGHT_ONE))
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        if y1 > y0 and x1 > x0:
            # CutMix: one pass, row by row, each row in three flat spans (own, partner's box, own), rather
            # than a full copy followed by a second write of the box.
            for y in range(height):
                dst, own_row = rows_out[i, y], rows_in[i, y]
                if y0 <= y < y1:
                    other_row = rows_in[j, y]
                    dst[:x0 * channels] = own_row[:x0 * channels]
                    dst[x0 * channels:x1 * channels] = other_row[x0 * channels:x1 * channels]
                    dst[x1 * channels:] = own_row[x1 * channels:]
                else:
                    dst[:] = own_row
        elif own_weight == WEIGHT_ONE:
            flat_out[i, :] = flat_in[i, :]
        else:
            other_weight = WEIGHT_ONE - own_weight
            own, other, dst = flat_in[i], flat_in[j], flat_out[i]
            for k in range(pixels):
                # int32 arithmetic: 255 * 256 + 128 fits, and LLVM vectorises the loop.
                dst[k] = (own[k] * own_weight + other[k] * other_weight + _HALF) >> 8
    return out


@njit(cache=True, nogil=True)
def soft_targets(labels, partner, lam, num_classes, smoothing, out):
    """Mixed, smoothed one-hot targets into ``out`` (float32, (N, num_classes)).

    Row i is ``lam[i] * s(labels[i]) + (1 - lam[i]) * s(labels[partner[i]])`` where ``s(k)`` is the smoothed
    one-hot of class k (``smoothing / C`` off, ``1 - smoothing + smoothing / C`` on). Adding into the row (not
    writing) keeps it summing to 1 when both partners share a class. Returns False, without writing past
    ``out``, if a label is outside [0, C).
    """
    n = labels.shape[0]
    check_partners(partner, n)
    off_value = smoothing / num_classes
    on_extra = 1.0 - smoothing
    for i in range(n):
        own_class = labels[i]
        other_class = labels[partner[i]]
        if own_class < 0 or own_class >= num_classes or other_class < 0 or other_class >= num_classes:
            return False
        for k in range(num_classes):
            out[i, k] = off_value
        # Accumulate in float64, store float32 once, so rows are exact to float32 rounding.
        own_value = off_value + on_extra * lam[i]
        other_value = on_extra * (1.0 - lam[i])
        if own_class == other_class:
            out[i, own_class] = own_value + other_value
        else:
            out[i, own_class] = own_value
            out[i, other_class] = off_value + other_value
    return True


@njit(cache=True, nogil=True)
def pair_targets(labels, partner, lam, out):
    """Targets for index-based cross-entropy: ``out[i] = (labels[i], labels[partner[i]], lam[i])`` as float32
    (N, 3); the loss is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``."""
    check_partners(partner, labels.shape[0])
    for i in range(labels.shape[0]):
        out[i, 0] = labels[i]
        out[i, 1] = labels[partner[i]]
        out[i, 2] = lam[i]
    return out


@njit(cache=True, inline="always")
def _blend_span(out_row, own_row, other_row, channel, start, stop, own_scale, other_scale, offset):
    for x in range(start, stop):
        out_row[x] = own_row[x, channel] * own_scale + other_row[x, channel] * other_scale + offset


@njit(cache=True, inline="always")
def _blend_span_planar(red, green, blue, own, other, start, stop, own_scale, other_scale, shift):
    """RGB pixels ``[start, stop)`` of one row into three planes; ``own``/``other`` are the rows as flat
    bytes. The literal stride of 3 lets LLVM vectorise the interleaved loads, which a stride known only at
    run time prevents (3-5x slower); the scales are (r, g, b) tuples so they stay in registers."""
    for x in range(start, stop):
        red[x] = own[3 * x] * own_scale[0] + other[3 * x] * other_scale[0] + shift[0]
        green[x] = own[3 * x + 1] * own_scale[1] + other[3 * x + 1] * other_scale[1] + shift[1]
        blue[x] = own[3 * x + 2] * own_scale[2] + other[3 * x + 2] * other_scale[2] + shift[2]


@njit(cache=True, inline="always")
def _factor_rows(own_factors, other_factors, shifts, own_weight, scale, shift, x0, x1):
    """The per-element factors of an interleaved RGB row (3 W floats), ``out = own * own_factors + other *
    other_factors + shifts``: row 0 for image rows the CutMix box misses, row 1 for rows it crosses (inside
    the box 0 and ``scale``: the partner's pixel whole). The values are those the planar path keeps in
    registers, so both layouts compute the same floats."""
    width = shifts.shape[0] // 3
    other_weight = np.float32(1.0) - own_weight
    for c in range(3):
        own_scale, other_scale = own_weight * scale[c], other_weight * scale[c]
        for x in range(width):
            inside = x0 <= x < x1
            own_factors[0, 3 * x + c] = own_scale
            other_factors[0, 3 * x + c] = other_scale
            own_factors[1, 3 * x + c] = np.float32(0.0) if inside else own_scale
            other_factors[1, 3 * x + c] = scale[c] if inside else other_scale
            shifts[3 * x + c] = shift[c]


@njit(cache=True, inline="always")
def _blend_row_interleaved(out, own, other, own_factors, other_factors, shifts):
    """One channels-last row as flat floats: every operand contiguous and the loop from 0, so it vectorises
    without the shuffles a stride of 3 needs (a CutMix row is the same loop with the box row's factors)."""
    for k in range(out.shape[0]):
        out[k] = own[k] * own_factors[k] + other[k] * other_factors[k] + shifts[k]


@njit(cache=True, inline="always")
def _mix_normalize_rgb(own, other, out, own_weight, y0, y1, x0, x1, scale, shift, channels_last):
    """One RGB sample: ``own``/``other`` uint8 (H, W, 3) (the sample and its partner), ``out`` float32
    (3, H, W), or (H, W, 3) if ``channels_last``.

    Every inner loop runs from 0 over a whole row or a sliced span (a loop from a run-time start keeps
    Numba's wrap-around check inside and does not vectorise): channels-last rows use per-element factors,
    planar rows are blended whole, then the CutMix box is written over with the partner's pixels (measured
    at 512 x 32 x 32: planar 1.3x, channels-last CutMix 2x faster than three spans per row)."""
    height, width, _ = own.shape
    own_rows, other_rows = own.reshape(height, width * 3), other.reshape(height, width * 3)
    if channels_last:
        own_factors = np.empty((2, width * 3), np.float32)
        other_factors = np.empty((2, width * 3), np.float32)
        shifts = np.empty(width * 3, np.float32)
        _factor_rows(own_factors, other_factors, shifts, own_weight, scale, shift, x0, x1)
        out_rows = out.reshape(height, width * 3)
        for y in range(height):
            crossed = 1 if y0 <= y < y1 and x1 > x0 else 0
            _blend_row_interleaved(out_rows[y], own_rows[y], other_rows[y], own_factors[crossed],
                                   other_factors[crossed], shifts)
        return
    other_weight = np.float32(1.0) - own_weight
    own_scale = (own_weight * scale[0], own_weight * scale[1], own_weight * scale[2])
    other_scale = (other_weight * scale[0], other_weight * scale[1], other_weight * scale[2])
    paste_own = (np.float32(0.0), np.float32(0.0), np.float32(0.0))
    paste_other = (scale[0], scale[1], scale[2])
    offsets = (shift[0], shift[1], shift[2])
    for y in range(height):
        _blend_span_planar(out[0, y], out[1, y], out[2, y], own_rows[y], other_rows[y], 0, width, own_scale,
                           other_scale, offsets)
    if y1 > y0 and x1 > x0:   # the box, pasted whole: 0 x own + scale x partner (the same floats as before)
        for y in range(y0, y1):
            _blend_span_planar(out[0, y, x0:x1], out[1, y, x0:x1], out[2, y, x0:x1], own_rows[y, 3 * x0:3 * x1],
                               other_rows[y, 3 * x0:3 * x1], 0, x1 - x0, paste_own, paste_other, offsets)


@njit(cache=True, inline="always")
def _mix_normalize_sample(own, other, out, weight, y0, y1, x0, x1, scale, shift, channels_last):
    """One sample of ``mix_normalize``: ``own``/``other`` uint8 (H, W, C), ``out`` float32 (C', H, W) or
    (H, W, C'), ``weight`` the own pixels' share in 1/256ths, the box already clamped."""
    height, width, channels = own.shape
    out_channels = scale.shape[0]
    own_weight = np.float32(min(max(weight, 0), WEIGHT_ONE)) / np.float32(WEIGHT_ONE)
    if channels == 3 and out_channels == 3:
        _mix_normalize_rgb(own, other, out, own_weight, y0, y1, x0, x1, scale, shift, channels_last)
        return
    for y in range(height):
        # The row splits into [0, cut_from) blended, [cut_from, cut_to) pasted, [cut_to, W) blended;
        # plain loops over each span vectorise, a per-pixel test would not.
        in_box = y0 <= y < y1 and x1 > x0
        cut_from = x0 if in_box else width
        cut_to = x1 if in_box else width
        own_row, other_row = own[y], other[y]
        for c in range(out_channels):
            # Fold the blend weights into the normalisation: one multiply-add per source pixel.
            own_scale = own_weight * scale[c]
            other_scale = (np.float32(1.0) - own_weight) * scale[c]
            out_row = out[y, :, c] if channels_last else out[c, y]
            _blend_span(out_row, own_row, other_row, c, 0, cut_from, own_scale, other_scale, shift[c])
            _blend_span(out_row, own_row, other_row, c, cut_from, cut_to, np.float32(0.0), scale[c], shift[c])
            _blend_span(out_row, own_row, other_row, c, cut_to, width, own_scale, other_scale, shift[c])


@njit(cache=True, parallel=True, nogil=True, fastmath=True)
def mix_normalize(images, out, partner, weight, box, scale, shift, channels_last):
    """Mix, convert to float and normalise in one pass over memory, writing (N, C', H, W) or (N, H, W, C').

    images: uint8 (N, H, W, C). out: float32 (N, C', H, W), or (N, H, W, C') if ``channels_last``; C' <= C
    (a grayscale file stored as three equal channels is read back as one). For each sample ``i`` with
    partner ``j``, pixel ``p = (weight[i] * images[i] + (256 - weight[i]) * images[j]) / 256`` (no rounding:
    the float keeps the exact weight its label gets), with the box of ``box[i]`` taken from ``images[j]``
    whole, then ``out = p * scale[c] + shift[c]`` (scale = 1 / (255 std), shift = -mean / std normalises).
    """
    n, height, width, _ = images.shape
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        _mix_normalize_sample(images[i], images[j], out[i], weight[i], y0, y1, x0, x1, scale, shift, channels_last)
    return out


@njit(cache=True, parallel=True, nogil=True, fastmath=True)
def mix_normalize_from_pages(sources, out, partner, weight, box, scale, shift, channels_last, channels):
    """``mix_normalize`` with each sample's uint8 (H, W, ``channels``) pixels read at its own address
    ``sources[i]`` (the raw image in the file's pages) instead of from a decoded batch: the decoder's copy,
    the mix and the normalisation are one pass, and the result is ``mix_normalize``'s bit for bit (the same
    per-sample code). out: float32 (N, C', H, W), or (N, H, W, C') if ``channels_last``."""
    n = sources.shape[0]
    if channels_last:
        height, width = out.shape[1], out.shape[2]
    else:
        height, width = out.shape[2], out.shape[3]
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        own = carray(as_pointer(sources[i]), (height, width, channels), np.uint8)
        other = carray(as_pointer(sources[j]), (height, width, channels), np.uint8)
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        _mix_normalize_sample(own, other, out[i], weight[i], y0, y1, x0, x1, scale, shift, channels_last)
    return out


# ----------------------------------------------------------------------------- planar (N, C, H, W) outputs
# The DataLoader collate (``ffmix/collate.py``) hands over (N, C, H, W) batches as PyTorch expects them, from
# samples that come channels-last (NumPy HWC, PIL) or planar (CHW tensors, timm's CHW arrays). These kernels
# fuse the mixing with that layout, so a batch is read and written once.
#
# Their inner loops all start at 0: Numba checks every signed index for a negative value to wrap around, and
# in ``for x in range(start, stop)`` with a run-time ``start`` that check stays in the loop and keeps LLVM from
# vectorising it (about 3x slower on 32-pixel rows). A CutMix row is therefore not cut into spans here; each
# pixel takes its weight from a per-column row (own weight outside the box, 0 inside).
_WEIGHT_ONE_F = np.float32(WEIGHT_ONE)
_HALF_F = np.float32(_HALF)


@njit(cache=True, inline="always")
def _column_weights(weights, x0, x1, inside, outside):
    """``weights[x] = inside`` for x in [x0, x1), else ``outside``."""
    for x in range(weights.shape[0]):
        weights[x] = inside if x0 <= x < x1 else outside


@njit(cache=True, inline="always")
def _round_row_rgb(red, green, blue, own, other, own_weights):
    """One RGB row (``own``/``other`` as flat bytes) blended in 1/256ths, rounded half up, into three uint8
    planes. In float32: every value is an integer below 2**24, so it is exact, and float vectorises the literal
    stride of 3 where Numba's int64 arithmetic does not."""
    for x in range(red.shape[0]):
        own_weight = own_weights[x]
        other_weight = _WEIGHT_ONE_F - own_weight
        red[x] = np.int32(own[3 * x] * own_weight + other[3 * x] * other_weight + _HALF_F) >> 8
        green[x] = np.int32(own[3 * x + 1] * own_weight + other[3 * x + 1] * other_weight + _HALF_F) >> 8
        blue[x] = np.int32(own[3 * x + 2] * own_weight + other[3 * x + 2] * other_weight + _HALF_F) >> 8


@njit(cache=True, inline="always")
def _round_row_strided(plane_row, own, other, channel, channels, own_weights):
    for x in range(plane_row.shape[0]):
        own_weight = own_weights[x]
        plane_row[x] = np.int32(own[channels * x + channel] * own_weight
                                + other[channels * x + channel] * (_WEIGHT_ONE_F - own_weight) + _HALF_F) >> 8


@njit(cache=True, parallel=True, nogil=True)
def mix_images_planar(images, out, partner, weight, box):
    """``mix_images`` writing (N, C, H, W): ``out[i, c] == mix_images(...)[i, ..., c]``, bit for bit.

    images: uint8 (N, H, W, C), C-contiguous, only read. out: uint8 (N, C, H, W), C-contiguous. A pasted
    pixel is the blend with weights (0, 256), a kept one (256, 0): both exact in this formula, so one loop
    serves MixUp, CutMix and unmixed samples.
    """
    n, height, width, channels = images.shape
    rows = images.reshape(n, height, width * channels)
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        own_weight = np.float32(min(max(weight[i], 0), WEIGHT_ONE))
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        plain_row = np.full(width, own_weight, np.float32)
        box_row = np.empty(width, np.float32)
        _column_weights(box_row, x0, x1, np.float32(0.0), own_weight)
        for y in range(height):
            own_weights = box_row if y0 <= y < y1 else plain_row
            own, other = rows[i, y], rows[j, y]
            if channels == 3:
                _round_row_rgb(out[i, 0, y], out[i, 1, y], out[i, 2, y], own, other, own_weights)
            else:
                for c in range(channels):
                    _round_row_strided(out[i, c, y], own, other, c, channels, own_weights)
    return out


@njit(cache=True, inline="always")
def _copy_all(dst, src):
    for k in range(dst.shape[0]):
        dst[k] = src[k]


@njit(cache=True, parallel=True, nogil=True)
def mix_planes(images, out, partner, weight, box):
    """``mix_images`` for planar batches: uint8 (N, C, H, W) in (only read) and out, C-contiguous. Plane c of
    sample i mixes with plane c of ``partner[i]``: ``out == mix_images(NHWC of images)`` in (N, C, H, W), bit
    for bit. A CutMix plane is own pixels copied above and below the box, and its box rows blended per
    column (weights (256, 0) outside the box, (0, 256) inside)."""
    n, channels, height, width = images.shape
    plane = height * width
    flat_in = images.reshape(n, channels, plane)
    flat_out = out.reshape(n, channels, plane)
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        own_weight = np.int32(min(max(weight[i], 0), WEIGHT_ONE))
        other_weight = np.int32(WEIGHT_ONE) - own_weight
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        cut = y1 > y0 and x1 > x0
        keep = np.empty(width, np.int32)
        _column_weights(keep, x0, x1, np.int32(0), np.int32(WEIGHT_ONE))
        for c in range(channels):
            own, other, dst = flat_in[i, c], flat_in[j, c], flat_out[i, c]
            if cut:
                _copy_all(dst[:y0 * width], own[:y0 * width])
                _copy_all(dst[y1 * width:], own[y1 * width:])
                for y in range(y0, y1):
                    own_row, other_row = images[i, c, y], images[j, c, y]
                    dst_row = out[i, c, y]
                    for x in range(width):
                        dst_row[x] = (own_row[x] * keep[x] + other_row[x] * (WEIGHT_ONE - keep[x]) + _HALF) >> 8
            elif own_weight == WEIGHT_ONE:
                _copy_all(dst, own)
            else:
                for k in range(plane):
                    dst[k] = (own[k] * own_weight + other[k] * other_weight + _HALF) >> 8
    return out


@njit(cache=True, inline="always")
def _blend_plane_row(out_row, own_row, other_row, own_scales, other_scales, shift):
    for x in range(out_row.shape[0]):
        out_row[x] = own_row[x] * own_scales[x] + other_row[x] * other_scales[x] + shift


@njit(cache=True, parallel=True, nogil=True, fastmath=True)
def mix_normalize_planar(images, out, partner, weight, box, scale, shift):
    """``mix_normalize`` for planar input: uint8 (N, C, H, W) in, float32 (N, C', H, W) out, C' <= C.

    The same arithmetic as ``mix_normalize`` (weights folded into the normalisation, no rounding, the box
    pasted whole), with per-column scales on the box rows so that every row is one vectorised loop.
    """
    n, channels, height, width = images.shape
    out_channels = scale.shape[0]
    check_partners(partner, n)
    for i in prange(n):
        j = partner[i]
        own_fraction = np.float32(min(max(weight[i], 0), WEIGHT_ONE)) / _WEIGHT_ONE_F
        y0, y1, x0, x1 = _clamped_box(box, i, height, width)
        box_fraction = np.empty(width, np.float32)
        _column_weights(box_fraction, x0, x1, np.float32(0.0), own_fraction)
        plain_own = np.empty(width, np.float32)
        plain_other = np.empty(width, np.float32)
        box_own = np.empty(width, np.float32)
        box_other = np.empty(width, np.float32)
        for c in range(out_channels):
            for x in range(width):
                plain_own[x] = own_fraction * scale[c]
                plain_other[x] = (np.float32(1.0) - own_fraction) * scale[c]
                box_own[x] = box_fraction[x] * scale[c]
                box_other[x] = (np.float32(1.0) - box_fraction[x]) * scale[c]
            for y in range(height):
                in_box = y0 <= y < y1
                _blend_plane_row(out[i, c, y], images[i, c, y], images[j, c, y], box_own if in_box else plain_own,
                                 box_other if in_box else plain_other, shift[c])
    return out
