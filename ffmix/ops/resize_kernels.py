"""Crop-and-resize of uint8 RGB images in Numba: OpenCV's INTER_AREA filter for a fractional box, faster.

``resize_box`` resizes the box ``[top, top + height) x [left, left + width)`` (source pixels, fractional) of
an RGB image to ``out_height x out_width``. Per axis each output pixel is the source averaged over its
footprint, the box cut into equal parts, with fractional coverage at the ends: the area average where the
axis shrinks, and OpenCV's INTER_AREA enlarging (two taps, the second weighted by the footprint's share past
the first pixel's end) where it grows. ``resize_reference.py`` states the filter and is the oracle.

How it is fast (OpenCV's INTER_AREA takes its slow general path at non-integer ratios):

* Per axis, the taps are computed once per call: each output's first source pixel and a fixed number of
  weights (the most any output needs; unused taps weigh 0), so the passes have no per-pixel branches.
  Weights are fixed point and rounded cumulatively (``round(one * covered_so_far)`` differenced), so each
  output's weights sum to exactly ``one`` and a constant image stays constant.
* Two passes, rounding once: horizontal weights sum to ``ONE_X`` (2**12), vertical to ``ONE_Y`` (2**11);
  255 * 2**23 + 2**22 fits an int32, so every sum is int32 and the last shift rounds half up.
* The vertical pass runs along whole rows (contiguous, one weight per row: it vectorises); the horizontal pass
  is a gather with a literal stride of 3. The pass order is chosen per call so the horizontal pass runs over
  the fewer rows: horizontal first (each touched source row once, kept in a ring of as many rows as the
  vertical taps) when the box has fewer rows than the output, vertical first (per output row, over the box's
  touched columns) when it has more.

No allocation: the caller gives scratch memory (``work_at``, ``work_bytes``); ``resize_work_bytes`` says how
much any box of an image up to a given size needs. Addresses are int64, as in ``decode_kernels.py``; the
caller owns all three buffers for the call. The kernel is sequential; callers parallelise over images.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit

from .control import as_pointer

ONE_X_BITS, ONE_Y_BITS = 12, 11
ONE_X, ONE_Y = 1 << ONE_X_BITS, 1 << ONE_Y_BITS
SHIFT = ONE_X_BITS + ONE_Y_BITS
HALF = 1 << (SHIFT - 1)
CHANNELS = 3
# resize_box's results.
RESIZED, BAD_BOX, SHORT_WORK = 0, -1, -2
# How far (source pixels) a box may overshoot the image from float rounding; it is clipped to the image.
BOX_SLACK = 1e-6


# ------------------------------------------------------------------------------------------ taps

@njit(cache=True, nogil=True, inline="always")
def _footprint(lo, scale, o, size):
    """Output ``o``'s source interval ``[a, b)``, clipped to the image's ``[0, size]``."""
    a = min(max(lo + o * scale, 0.0), np.float64(size))
    b = min(max(lo + (o + 1) * scale, a), np.float64(size))
    return a, b


@njit(cache=True, nogil=True, inline="always")
def _covered(x, a, b, one, pixel):
    """``one`` times the share of ``[a, b)`` left of ``x``, rounded; an empty footprint (float underflow of a
    tiny box) is all on its ``pixel``."""
    if b <= a:
        return one if x > pixel else 0
    return np.int64(np.floor(one * (min(max(x, a), b) - a) / (b - a) + 0.5))


@njit(cache=True, nogil=True, inline="always")
def _used_pixels(a, b, one, size):
    """The first and last source pixel whose rounded weight in ``[a, b)`` is not 0."""
    pixel = min(np.int64(np.floor(a)), size - 1)
    end = min(max(np.int64(np.ceil(b)), pixel + 1), size)
    first, last = end, pixel
    previous = 0
    for i in range(pixel, end):
        current = _covered(np.float64(i + 1), a, b, one, pixel)
        if current > previous:
            first, last = min(first, i), i
        previous = current
    return first, last


@njit(cache=True, nogil=True)
def axis_tap_count(lo, length, size, out_size, one):
    """The most source pixels any output of the axis weighs (the taps every output gets)."""
    scale = length / out_size
    taps = 1
    for o in range(out_size):
        a, b = _footprint(lo, scale, o, size)
        first, last = _used_pixels(a, b, one, size)
        taps = max(taps, last - first + 1)
    return taps


@njit(cache=True, nogil=True)
def fill_axis_taps(lo, length, size, out_size, one, taps, starts, weights):
    """Each output's first tap (int32 ``starts[o]``, never past ``size - taps``) and its ``taps`` weights
    (int32 ``weights[o * taps + k]`` for source pixel ``starts[o] + k``), summing to exactly ``one``."""
    scale = length / out_size
    for o in range(out_size):
        a, b = _footprint(lo, scale, o, size)
        first, _ = _used_pixels(a, b, one, size)
        pixel = min(np.int64(np.floor(a)), size - 1)
        start = min(first, size - taps)
        starts[o] = start
        for k in range(taps):
            i = np.float64(start + k)
            weights[o * taps + k] = _covered(i + 1.0, a, b, one, pixel) - _covered(i, a, b, one, pixel)


# ------------------------------------------------------------------------------------------ passes
#
# All sums are int32 (np.int32 on every operand, shifts by constants): int64 lanes halve what a vector holds,
# and a shift by a variable kept LLVM from narrowing them (the vertical pass ran 5-7x slower).

@njit(cache=True, nogil=True, inline="always")
def _store_sum(out, q, value):
    """The horizontal pass of the horizontal-first order: keep the full int32 sum."""
    out[q] = value


@njit(cache=True, nogil=True, inline="always")
def _store_rounded(out, q, value):
    """The horizontal pass of the vertical-first order: the last pass, so round (half up) to uint8."""
    out[q] = np.uint8((value + np.int32(HALF)) >> np.int32(SHIFT))


@njit(cache=True, nogil=True, inline="always")
def _horizontal(row, starts, weights, taps, out, out_offset, count, store):
    """``store(out, out_offset + 3 o + c, sum_k weights[o * taps + k] * row[3 (starts[o] + k) + c])`` for the
    ``count`` outputs of one row: a gather, so scalar; the taps are unrolled for 1 to 4 (a loop over them
    cost twice as much), with a literal stride of 3 and int32 sums."""
    if taps == 1:
        for o in range(count):
            p, q, w0 = CHANNELS * starts[o], out_offset + CHANNELS * o, np.int32(weights[o])
            for c in range(CHANNELS):
                store(out, q + c, w0 * np.int32(row[p + c]))
    elif taps == 2:
        for o in range(count):
            p, q = CHANNELS * starts[o], out_offset + CHANNELS * o
            w0, w1 = np.int32(weights[2 * o]), np.int32(weights[2 * o + 1])
            for c in range(CHANNELS):
                store(out, q + c, w0 * np.int32(row[p + c]) + w1 * np.int32(row[p + 3 + c]))
    elif taps == 3:
        for o in range(count):
            p, q = CHANNELS * starts[o], out_offset + CHANNELS * o
            w0, w1, w2 = np.int32(weights[3 * o]), np.int32(weights[3 * o + 1]), np.int32(weights[3 * o + 2])
            for c in range(CHANNELS):
                store(out, q + c, w0 * np.int32(row[p + c]) + w1 * np.int32(row[p + 3 + c])
                      + w2 * np.int32(row[p + 6 + c]))
    elif taps == 4:
        for o in range(count):
            p, q = CHANNELS * starts[o], out_offset + CHANNELS * o
            w0, w1 = np.int32(weights[4 * o]), np.int32(weights[4 * o + 1])
            w2, w3 = np.int32(weights[4 * o + 2]), np.int32(weights[4 * o + 3])
            for c in range(CHANNELS):
                store(out, q + c, w0 * np.int32(row[p + c]) + w1 * np.int32(row[p + 3 + c])
                      + w2 * np.int32(row[p + 6 + c]) + w3 * np.int32(row[p + 9 + c]))
    else:
        for o in range(count):
            p, q = CHANNELS * starts[o], out_offset + CHANNELS * o
            red = green = blue = np.int32(0)
            for k in range(taps):
                weight = np.int32(weights[o * taps + k])
                red += weight * np.int32(row[p])
                green += weight * np.int32(row[p + 1])
                blue += weight * np.int32(row[p + 2])
                p += CHANNELS
            store(out, q, np.int32(red))
            store(out, q + 1, np.int32(green))
            store(out, q + 2, np.int32(blue))


@njit(cache=True, nogil=True, inline="always")
def _vertical(rows, weights, taps, sums):
    """int32 ``sums[x] = sum_k weights[k] * rows[k][x]`` along whole rows: contiguous, so it vectorises."""
    weight, row = np.int32(weights[0]), rows[0]
    for x in range(sums.shape[0]):
        sums[x] = weight * np.int32(row[x])
    for k in range(1, taps):
        weight, row = np.int32(weights[k]), rows[k]
        for x in range(sums.shape[0]):
            sums[x] += weight * np.int32(row[x])


@njit(cache=True, nogil=True, inline="always")
def _round_row(sums, out):
    """uint8 ``out[x] = (sums[x] + HALF) >> SHIFT``: round half up, once, at the end."""
    for x in range(out.shape[0]):
        out[x] = np.uint8((sums[x] + np.int32(HALF)) >> np.int32(SHIFT))


# ------------------------------------------------------------------------------------------ entry

@njit(cache=True, nogil=True)
def resize_work_bytes(max_height, max_width, out_height, out_width):
    """Scratch bytes ``resize_box`` needs for any box of any image up to ``max_height x max_width``.

    Along an axis an output's footprint is at most ``size / out_size`` pixels long, so it touches at most
    ``size // out_size + 2`` pixels (and at most ``size``)."""
    taps_x = min(max_width, max_width // out_width + 2)
    taps_y = min(max_height, max_height // out_height + 2)
    return 4 * _work_ints(out_height, out_width, taps_x, taps_y, max_width)


@njit(cache=True, nogil=True, inline="always")
def _work_ints(out_height, out_width, taps_x, taps_y, span):
    """int32 slots: the tap tables, then the ring and a row of sums (horizontal first) or the sums over the
    touched columns (vertical first)."""
    tables = out_width * (1 + taps_x) + out_height * (1 + taps_y)
    rows = max((taps_y + 1) * out_width, span) * CHANNELS
    return tables + rows


@njit(cache=True, nogil=True)
def box_fits_image(top, left, box_height, box_width, height, width):
    """A non-empty box inside the image (up to ``BOX_SLACK`` of float rounding)."""
    return (box_height > 0 and box_width > 0 and top >= -BOX_SLACK and left >= -BOX_SLACK
            and top + box_height <= height + BOX_SLACK and left + box_width <= width + BOX_SLACK)


@njit(cache=True, nogil=True)
def resize_box(source_at, source_row_bytes, height, width, top, left, box_height, box_width, out_at, out_height,
               out_width, work_at, work_bytes):
    """Resize the box ``[top, top + box_height) x [left, left + box_width)`` (float source pixels) of the uint8
    RGB image at ``source_at`` (``height`` rows of ``source_row_bytes`` bytes, ``width`` pixels used) into the
    contiguous uint8 (out_height, out_width, 3) image at ``out_at``, with ``work_bytes`` of scratch at
    ``work_at`` (``resize_work_bytes``). Returns RESIZED, or BAD_BOX / SHORT_WORK with nothing written."""
    if not (box_fits_image(top, left, box_height, box_width, height, width) and out_height > 0
            and out_width > 0 and source_row_bytes >= CHANNELS * width):
        return BAD_BOX
    taps_x = axis_tap_count(left, box_width, width, out_width, ONE_X)
    taps_y = axis_tap_count(top, box_height, height, out_height, ONE_Y)
    work = carray(as_pointer(work_at), (work_bytes // 4,), np.int32)
    x_starts, rest = work[:out_width], work[out_width:]
    x_weights, rest = rest[:out_width * taps_x], rest[out_width * taps_x:]
    y_starts, rest = rest[:out_height], rest[out_height:]
    y_weights, rest = rest[:out_height * taps_y], rest[out_height * taps_y:]
    if work_bytes < 4 * (out_width * (1 + taps_x) + out_height * (1 + taps_y)):
        return SHORT_WORK             # the tap tables themselves do not fit
    fill_axis_taps(left, box_width, width, out_width, ONE_X, taps_x, x_starts, x_weights)
    fill_axis_taps(top, box_height, height, out_height, ONE_Y, taps_y, y_starts, y_weights)
    first_column = x_starts[0]
    span = x_starts[out_width - 1] + taps_x - first_column
    if work_bytes < 4 * _work_ints(out_height, out_width, taps_x, taps_y, span):
        return SHORT_WORK
    source = carray(as_pointer(source_at), (height * source_row_bytes,), np.uint8)
    out = carray(as_pointer(out_at), (out_height * out_width * CHANNELS,), np.uint8)
    rows_touched = y_starts[out_height - 1] + taps_y - y_starts[0]
    if rows_touched <= out_height:
        _horizontal_first(source, source_row_bytes, width, x_starts, x_weights, taps_x, y_starts, y_weights, taps_y, out,
                          out_height, out_width, rest)
    else:
        for o in range(out_width):
            x_starts[o] -= first_column
        _vertical_first(source, source_row_bytes, x_starts, x_weights, taps_x, y_starts, y_weights, taps_y, out,
                        out_height, out_width, first_column, span, rest)
    return RESIZED


@njit(cache=True, nogil=True)
def _horizontal_first(source, row_bytes, width, x_starts, x_weights, taps_x, y_starts, y_weights, taps_y, out,
                      out_height, out_width, rest):
    """Each touched source row through the horizontal pass once, into a ring of ``taps_y`` rows; each output
    row from its ring rows."""
    row_length = out_width * CHANNELS
    ring = rest[:taps_y * row_length].reshape(taps_y, row_length)
    sums = rest[taps_y * row_length:(taps_y + 1) * row_length]
    rows = [ring[0]] * taps_y
    ready = y_starts[0]                   # the first source row not yet in the ring
    for y in range(out_height):
        start = y_starts[y]
        for r in range(max(ready, start), start + taps_y):
            at = r * row_bytes
            _horizontal(source[at:at + CHANNELS * width], x_starts, x_weights, taps_x, ring[r % taps_y], 0,
                        out_width, _store_sum)
        ready = start + taps_y
        for k in range(taps_y):
            rows[k] = ring[(start + k) % taps_y]
        _vertical(rows, y_weights[y * taps_y:(y + 1) * taps_y], taps_y, sums)
        _round_row(sums, out[y * row_length:(y + 1) * row_length])


@njit(cache=True, nogil=True)
def _vertical_first(source, row_bytes, x_starts, x_weights, taps_x, y_starts, y_weights, taps_y, out,
                    out_height, out_width, first_column, span, rest):
    """Per output row: the vertical pass over the box's touched columns, then the horizontal pass of that one
    row into the output. ``x_starts`` count from ``first_column`` here."""
    span_length = span * CHANNELS
    sums = rest[:span_length]
    row_length = out_width * CHANNELS
    column_offset = first_column * CHANNELS
    rows = [source[0:span_length]] * taps_y
    for y in range(out_height):
        start = y_starts[y]
        for k in range(taps_y):
            at = (start + k) * row_bytes + column_offset
            rows[k] = source[at:at + span_length]
        _vertical(rows, y_weights[y * taps_y:(y + 1) * taps_y], taps_y, sums)
        _horizontal(sums, x_starts, x_weights, taps_x, out, y * row_length, out_width, _store_rounded)


def resize_array(image: np.ndarray, top: float, left: float, box_height: float, box_width: float,
                 out_height: int, out_width: int, out: np.ndarray = None, work: np.ndarray = None) -> np.ndarray:
    """``resize_box`` on arrays (for tests and benchmarks): uint8 (H, W, 3) ``image``, rows may be padded.

    Returns the uint8 (out_height, out_width, 3) image (``out`` when given); ValueError if the box does not fit.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != CHANNELS or image.strides[1:] != (3, 1):
        raise ValueError("image must be uint8 (H, W, 3) with contiguous pixels")
    height, width = image.shape[:2]
    if out is None:
        out = np.empty((out_height, out_width, CHANNELS), np.uint8)
    if work is None:
        work = np.empty(resize_work_bytes(height, width, out_height, out_width), np.uint8)
    status = resize_box(image.ctypes.data, image.strides[0], height, width, float(top), float(left),
                        float(box_height), float(box_width), out.ctypes.data, out_height, out_width,
                        work.ctypes.data, work.nbytes)
    if status != RESIZED:
        raise ValueError(f"resize_box returned {status} for box {(top, left, box_height, box_width)} of a "
                         f"{height} x {width} image")
    return out
