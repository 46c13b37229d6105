"""The pixel arithmetic of RandAugment's and TrivialAugmentWide's 14 operations, one uint8 (H, W, 3) image at a
time, as torchvision's ``transforms.v2.functional`` computes them on uint8 tensors.

Every op takes its magnitude (already signed) as an argument: no randomness here (``auto_augment_draws.py``
draws it), so each op is a pure function checked against torchvision itself (``tests/test_auto_augment.py``)
and against ``auto_augment_reference.py``'s NumPy model of the geometric ops (``tests/test_auto_augment_kernels.py``).

How they are fast without changing a pixel (``docs/auto_augment.md``, "Speed"): the pointwise colour ops evaluate
torchvision's float32 arithmetic once per level into a 256-entry table and look bytes up; the warps form their
column products once per image and their source offsets once per row, and a translation copies whole runs;
Sharpness's 3x3 smoothing is an exact integer sum; every loop runs over flat bytes with a literal stride of 3.

Why float32 step by step? torchvision computes these ops on float32 tensors and *truncates* back to uint8
(``.to(torch.uint8)``), so a one-ulp difference in a product can move a pixel by 1. The kernels repeat its
float32 operations in its order (scalars cast to float32 as PyTorch casts a Python float operand), which makes
the colour ops bit-exact in practice; the remaining differences are listed per op in ``docs/auto_augment.md``.

Grayscale files are decoded as three equal channels; with ``gray`` set the ops act as torchvision's do on a
1-channel image (Color is the identity, Contrast's mean is the plain pixel mean), the result written to all three.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Op ids, in the order of torchvision's ``_AUGMENTATION_SPACE`` dictionaries.
(IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS, POSTERIZE,
 SOLARIZE, AUTO_CONTRAST, EQUALIZE) = range(14)
NUM_OPS = 14
# Ops whose every output value depends only on the same input value and on statistics gathered before any
# write (a channel's range or histogram, the image's mean): they may write over their input.
POINTWISE = (BRIGHTNESS, COLOR, CONTRAST, POSTERIZE, SOLARIZE, AUTO_CONTRAST, EQUALIZE)
OP_NAMES = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
            "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")

_GRAY_R, _GRAY_G, _GRAY_B = np.float32(0.2989), np.float32(0.587), np.float32(0.114)
_F255 = np.float32(255.0)
_F0 = np.float32(0.0)
_ONE, _TWO = np.uint64(1), np.uint64(2)   # unsigned offsets of a pixel's green and blue bytes
_THREE, _FOUR, _FIVE, _SIX = np.uint64(3), np.uint64(4), np.uint64(5), np.uint64(6)   # the next pixel's, and so on


@njit(cache=True, inline="always")
def _to_uint8(value):
    """torchvision's ``clamp_(0, 255).to(torch.uint8)``: clamp, then truncate toward zero (not round)."""
    return np.uint8(min(max(value, _F0), _F255))


@njit(cache=True, inline="always")
def _fma(a, b, c):
    """float32 ``a * b + c`` rounded once, as PyTorch's vectorised ``add_(other, alpha=...)`` computes it (the
    float32 product is exact in float64, so one rounding of the float64 sum gives the fused result)."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


# ----------------------------------------------------------------------------------------------- geometry

@njit(cache=True)
def inverse_affine(op, magnitude, height, width):
    """The six-entry inverse affine matrix torchvision's ``affine``/``rotate`` build for ``op``, with the
    centre offsets they use (shears about the top-left corner, as RandAugment passes ``center=[0, 0]``;
    translations and rotation about the image centre). Float64, as ``_get_inverse_affine_matrix``."""
    angle, translate_x, translate_y, shear_x, shear_y = 0.0, 0.0, 0.0, 0.0, 0.0
    centre_x, centre_y = 0.0, 0.0
    if op == SHEAR_X or op == SHEAR_Y:
        # degrees(atan(m)) as the transform passes it, radians again inside: round trip kept for equal floats
        shear = math.degrees(math.atan(magnitude))
        if op == SHEAR_X:
            shear_x = shear
        else:
            shear_y = shear
        centre_x, centre_y = -width * 0.5, -height * 0.5
    elif op == TRANSLATE_X:
        translate_x = float(int(magnitude))
    elif op == TRANSLATE_Y:
        translate_y = float(int(magnitude))
    elif op == ROTATE:
        angle = -(magnitude % 360.0)   # rotate() passes -angle to the matrix builder
    rot = math.radians(angle)
    sx, sy = math.radians(shear_x), math.radians(shear_y)
    cos_sy, tan_sx = math.cos(sy), math.tan(sx)
    a = math.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot - sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = np.array([d, -b, 0.0, -c, a, 0.0])
    cx_plus_tx, cy_plus_ty = centre_x + translate_x, centre_y + translate_y
    matrix[2] += centre_x - matrix[0] * cx_plus_tx - matrix[1] * cy_plus_ty
    matrix[5] += centre_y - matrix[3] * cx_plus_tx - matrix[4] * cy_plus_ty
    return matrix


# Every kernel below reads and writes an image as one flat run of bytes with a literal stride of 3 (R, G, B):
# flat loops without per-pixel branches are what LLVM vectorises; Numba's slice assignment (``dst[:] = src``)
# on a 3-d array is an indexed loop about ten times slower than a flat one. Loops index views by their bare loop
# counter, or by an unsigned (``_at``) position: Numba wraps a signed index that could be negative (a compare
# and add per access), which stops vectorisation.

@njit(cache=True, inline="always")
def _flat(image):
    return image.reshape(image.size)


@njit(cache=True, inline="always")
def _same_memory(src, dst):
    return src.ctypes.data == dst.ctypes.data


@njit(cache=True)
def copy_image(src, dst):
    """``dst[...] = src`` as one flat loop (LLVM makes it a memcpy); nothing when they are the same memory."""
    if _same_memory(src, dst):
        return
    flat_in, flat_out = _flat(src), _flat(dst)
    for k in range(flat_in.size):
        flat_out[k] = flat_in[k]


@njit(cache=True, inline="always")
def _at(position):
    """A known non-negative index as unsigned, so that Numba does not wrap it."""
    return np.uint64(position)


@njit(cache=True, inline="always")
def _copy_bytes(flat_in, start_in, flat_out, start_out, count):
    source, target = flat_in[start_in:start_in + count], flat_out[start_out:start_out + count]
    for k in range(count):
        target[k] = source[k]


@njit(cache=True, inline="always")
def _zero_bytes(flat_out, start, count):
    target = flat_out[start:start + count]
    for k in range(count):
        target[k] = 0


@njit(cache=True, inline="always")
def _grid_scales(matrix, height, width):
    """The six float32 factors of torchvision's ``_affine_grid`` (the matrix over half the size)."""
    half_w, half_h = np.float32(0.5 * width), np.float32(0.5 * height)
    return (np.float32(matrix[0]) / half_w, np.float32(matrix[1]) / half_w, np.float32(matrix[2]) / half_w,
            np.float32(matrix[3]) / half_h, np.float32(matrix[4]) / half_h, np.float32(matrix[5]) / half_h)


@njit(cache=True, inline="always")
def _centred(position, size):
    """A pixel's centred coordinate in float32, as ``_affine_grid``'s base grid holds it."""
    return np.float32(position - (size - 1) * 0.5)


@njit(cache=True, inline="always")
def _source_index(grid, half):
    """``grid_sample``'s unnormalised position ``(g + 1) * size / 2 - 0.5``, rounded half to even (float32)."""
    return np.rint((grid + np.float32(1.0)) * half - np.float32(0.5))


@njit(cache=True)
def warp_nearest(src, dst, matrix):
    """``dst[y, x] = src[round(iy), round(ix)]`` (0 outside), with (ix, iy) torchvision's sampling position:
    its float32 grid ``gx = xc * r00 + yc * r10 + r20`` (``_affine_grid``: centred pixel coordinates times the
    matrix over half the size), then ``grid_sample``'s unnormalisation and round half to even.

    Row by row: the column products ``xc * r00`` and ``xc * r01`` are the same floats in every row, so they are
    formed once; each row then computes its source offsets in one branch-free loop and gathers in another
    (outside pixels read offset 0 and are masked to 0). The sums keep torchvision's order, so every rounding is
    its own."""
    height, width, _ = src.shape
    if matrix[1] == 0.0 and matrix[3] == 0.0:
        _warp_separable(src, dst, matrix)
        return
    half_w, half_h = np.float32(0.5 * width), np.float32(0.5 * height)
    r00, r10, r20, r01, r11, r21 = _grid_scales(matrix, height, width)
    column_x = np.empty(width, np.float32)
    column_y = np.empty(width, np.float32)
    for x in range(width):
        column_x[x] = _centred(x, width) * r00
        column_y[x] = _centred(x, width) * r01
    offsets = np.empty(width, np.uint64)
    masks = np.empty(width, np.uint8)
    flat_in, flat_out = _flat(src), _flat(dst)
    for y in range(height):
        yc = _centred(y, height)
        row_x, row_y = yc * r10, yc * r11
        for x in range(width):
            ix = _source_index(column_x[x] + row_x + r20, half_w)
            iy = _source_index(column_y[x] + row_y + r21, half_h)
            inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
            offsets[x] = _at((np.int64(iy) * width + np.int64(ix)) * 3 if inside else 0)
            masks[x] = 255 if inside else 0
        _gather_row(flat_in, flat_out[y * width * 3:(y + 1) * width * 3], offsets, masks)


@njit(cache=True, inline="always")
def _gather_row(flat_in, row_out, offsets, masks):
    """``row_out``'s pixel x = the pixel at byte ``offsets[x]`` of ``flat_in``, and-ed with ``masks[x]``
    (255 inside, 0 outside)."""
    for x in range(offsets.size):
        source, keep, out = offsets[x], masks[x], _at(3 * x)
        row_out[out] = flat_in[source] & keep
        row_out[out + _ONE] = flat_in[source + _ONE] & keep
        row_out[out + _TWO] = flat_in[source + _TWO] & keep


@njit(cache=True)
def _warp_separable(src, dst, matrix):
    """``warp_nearest`` when the matrix has no cross terms (the translations): ``yc * r10`` and ``xc * r01``
    are then signed zeros, which leave torchvision's sums unchanged, so a column's source depends on x alone
    and a row's on y alone. When the inside columns read one contiguous run (a whole-pixel shift), each row is
    a copy of that run between zeros; otherwise a gather through the column map."""
    height, width, _ = src.shape
    half_w, half_h = np.float32(0.5 * width), np.float32(0.5 * height)
    r00, _r10, r20, _r01, r11, r21 = _grid_scales(matrix, height, width)
    source_x = np.empty(width, np.int64)
    for x in range(width):
        ix = _source_index(_centred(x, width) * r00 + r20, half_w)
        source_x[x] = np.int64(ix) if 0 <= ix < width else -1
    first, inside = 0, 0
    while first < width and source_x[first] < 0:
        first += 1
    for x in range(width):
        if source_x[x] >= 0:
            inside += 1
    shift = source_x[first] - first if first < width else 0
    contiguous = True
    for x in range(first, first + inside):
        contiguous &= source_x[x] == x + shift
    offsets = np.empty(width, np.uint64)
    masks = np.empty(width, np.uint8)
    for x in range(width):
        masks[x] = 255 if source_x[x] >= 0 else 0
    flat_in, flat_out = _flat(src), _flat(dst)
    row_bytes = width * 3
    for y in range(height):
        iy = _source_index(_centred(y, height) * r11 + r21, half_h)
        start = y * row_bytes
        if not (0 <= iy < height) or inside == 0:
            _zero_bytes(flat_out, start, row_bytes)
        elif contiguous:
            source_row = np.int64(iy) * row_bytes
            _zero_bytes(flat_out, start, first * 3)
            _copy_bytes(flat_in, source_row + (first + shift) * 3, flat_out, start + first * 3, inside * 3)
            _zero_bytes(flat_out, start + (first + inside) * 3, (width - first - inside) * 3)
        else:
            source_row = np.int64(iy) * row_bytes
            for x in range(width):
                offsets[x] = _at(source_row + max(source_x[x], 0) * 3)
            _gather_row(flat_in, flat_out[start:start + row_bytes], offsets, masks)


@njit(cache=True)
def rotate_quarter(src, dst, turns):
    """``torch.rot90(image, turns)`` over (H, W), the fast path ``rotate`` takes for 90/180/270 degrees
    (90 and 270 only for square images, which the caller checks)."""
    height, width, _ = src.shape
    flat_in, flat_out = _flat(src), _flat(dst)
    for y in range(height):
        for x in range(width):
            if turns == 1:
                sy, sx = x, width - 1 - y
            elif turns == 2:
                sy, sx = height - 1 - y, width - 1 - x
            else:
                sy, sx = height - 1 - x, y
            source, out = _at((sy * width + sx) * 3), _at((y * width + x) * 3)
            flat_out[out] = flat_in[source]
            flat_out[out + _ONE] = flat_in[source + _ONE]
            flat_out[out + _TWO] = flat_in[source + _TWO]


@njit(cache=True)
def geometric(src, dst, op, magnitude):
    height, width, _ = src.shape
    if op == ROTATE:
        angle = magnitude % 360.0
        if angle == 0.0:
            copy_image(src, dst)
            return
        if angle == 180.0:
            rotate_quarter(src, dst, 2)
            return
        if height == width and (angle == 90.0 or angle == 270.0):
            rotate_quarter(src, dst, 1 if angle == 90.0 else 3)
            return
    warp_nearest(src, dst, inverse_affine(op, magnitude, height, width))


# ------------------------------------------------------------------------------------------------ colour
# Brightness, Contrast, Posterize, Solarize, AutoContrast and Equalize map each value through a function of that
# value alone once the image's statistics (mean, range, histogram) are known: the kernels evaluate torchvision's
# float32 arithmetic once per level into a 256-entry table and look each byte up, so a table entry *is* the
# per-pixel result (same operations, same order) and the output cannot differ from the per-pixel loop's.

@njit(cache=True)
def apply_lut(src, dst, lut):
    """``dst = lut[src]`` for every byte (one table for all channels)."""
    flat_in, flat_out = _flat(src), _flat(dst)
    for k in range(flat_in.size):
        flat_out[k] = lut[flat_in[k]]


@njit(cache=True)
def apply_channel_luts(src, dst, luts):
    """``dst[..., c] = luts[c][src[..., c]]``: uint8 (3, 256) tables, one per channel."""
    flat_in, flat_out = _flat(src), _flat(dst)
    red, green, blue = luts[0], luts[1], luts[2]
    for pixel in range(flat_in.size // 3):
        k = _at(3 * pixel)
        flat_out[k] = red[flat_in[k]]
        flat_out[k + _ONE] = green[flat_in[k + _ONE]]
        flat_out[k + _TWO] = blue[flat_in[k + _TWO]]


@njit(cache=True, inline="always")
def _gray_floor(red, green, blue):
    """torchvision's grayscale of an RGB uint8 pixel before a blend: float32, then floored (the level is never
    negative, so truncation toward zero is the floor, and it vectorises)."""
    level = np.float32(red) * _GRAY_R
    level = _fma(_GRAY_G, np.float32(green), level)
    level = _fma(_GRAY_B, np.float32(blue), level)
    return np.int32(level)


@njit(cache=True, inline="always")
def _blend(pixel, other, ratio, rest):
    """``_blend``: ``pixel * ratio + other * (1 - ratio)`` in float32, clamped and truncated."""
    return _to_uint8(_fma(rest, other, np.float32(pixel) * ratio))


@njit(cache=True)
def brightness_lut(factor):
    scale = np.float32(factor)
    lut = np.empty(256, np.uint8)
    for level in range(256):
        lut[level] = _to_uint8(np.float32(level) * scale)
    return lut


@njit(cache=True)
def color(src, dst, factor, gray):
    """``adjust_saturation``: blend with the floored grayscale (a 1-channel image is returned as it is)."""
    if gray:
        copy_image(src, dst)
        return
    ratio, rest = np.float32(factor), np.float32(1.0 - factor)
    flat_in, flat_out = _flat(src), _flat(dst)
    for pixel in range(flat_in.size // 3):
        k = _at(3 * pixel)
        red, green, blue = flat_in[k], flat_in[k + _ONE], flat_in[k + _TWO]
        level = np.float32(_gray_floor(red, green, blue))
        flat_out[k] = _blend(red, level, ratio, rest)
        flat_out[k + _ONE] = _blend(green, level, ratio, rest)
        flat_out[k + _TWO] = _blend(blue, level, ratio, rest)


@njit(cache=True)
def contrast_lut(src, factor, gray):
    """``adjust_contrast``'s table: blend with the mean of the floored grayscale (of the pixels for 1 channel).

    The floored levels are integers, summed exactly (int64); torch sums them in float32, exact below 2**24
    (images up to 256 x 256) whatever its order, so larger images can differ in the mean's last bit."""
    flat_in = _flat(src)
    total = 0
    if gray:
        for pixel in range(flat_in.size // 3):
            total += np.int64(flat_in[_at(3 * pixel)])
    else:
        for pixel in range(flat_in.size // 3):
            k = _at(3 * pixel)
            total += np.int64(_gray_floor(flat_in[k], flat_in[k + _ONE], flat_in[k + _TWO]))
    mean = np.float32(total) / np.float32(flat_in.size // 3)
    ratio, rest = np.float32(factor), np.float32(1.0 - factor)
    lut = np.empty(256, np.uint8)
    for level in range(256):
        lut[level] = _blend(level, mean, ratio, rest)
    return lut


@njit(cache=True, inline="always")
def _smoothed_level(weighted):
    """torchvision's ``round(conv)`` of the 3x3 smoothing (float32 products 1/13 and 5/13, added in turn, then
    rounded half to even), from the exact integer sum ``weighted`` = 8 neighbours + 5 x centre (0..3315).

    Exact in integers: the true value weighted / 13 is never within 1/26 of a half level (its fraction is a
    multiple of 1/13), and torch's float32 steps stay within 3e-4 of it (17 roundings below 2**-16 each, the
    constants within 2**-24), so both round to the same level: ``floor(weighted / 13 + 1/2)``. The test suite
    checks this against the float32 sequence on millions of neighbourhoods, those nearest a half level included.
    """
    return (2 * weighted + 13) // 26


@njit(cache=True)
def sharpness(src, dst, factor):
    """``adjust_sharpness``: blend the interior with a 3x3 smoothing (1s around a 5, over 13), rounded to
    whole levels; the one-pixel border is kept."""
    height, width, _ = src.shape
    if height <= 2 or width <= 2:
        copy_image(src, dst)
        return
    alpha = np.float32(1.0 - factor)
    flat_in, flat_out = _flat(src), _flat(dst)
    row_bytes = width * 3
    _copy_bytes(flat_in, 0, flat_out, 0, row_bytes)
    _copy_bytes(flat_in, (height - 1) * row_bytes, flat_out, (height - 1) * row_bytes, row_bytes)
    for y in range(1, height - 1):
        row = y * row_bytes
        _copy_bytes(flat_in, row, flat_out, row, 3)
        _copy_bytes(flat_in, row + row_bytes - 3, flat_out, row + row_bytes - 3, 3)
        # the row's interior values as one flat loop over three row views (above, this, below), neighbours at
        # unsigned offsets 0, 3, 6 from the counter: few base pointers, no wrapped indices, so it vectorises
        count = row_bytes - 6
        above = flat_in[row - row_bytes:row]
        middle = flat_in[row:row + row_bytes]
        below = flat_in[row + row_bytes:row + 2 * row_bytes]
        out = flat_out[row + 3:row + 3 + count]
        for k in range(count):
            left, centre_at, right = _at(k), _at(k) + _THREE, _at(k) + _SIX
            neighbours = (np.int32(above[left]) + np.int32(above[centre_at]) + np.int32(above[right])
                          + np.int32(middle[left]) + np.int32(middle[right])
                          + np.int32(below[left]) + np.int32(below[centre_at]) + np.int32(below[right]))
            blurred = np.float32(_smoothed_level(neighbours + np.int32(5) * np.int32(middle[centre_at])))
            pixel = np.float32(middle[centre_at])
            out[k] = _to_uint8(_fma(alpha, blurred - pixel, pixel))


@njit(cache=True)
def posterize_lut(bits):
    mask = np.uint8((((1 << bits) - 1) << (8 - bits)) & 255)
    lut = np.empty(256, np.uint8)
    for level in range(256):
        lut[level] = np.uint8(level) & mask
    return lut


@njit(cache=True)
def solarize_lut(fraction):
    """Invert the levels at or above ``255 * fraction`` (compared in float32, as torch compares uint8 with a
    Python float)."""
    threshold = np.float32(255.0 * fraction)
    lut = np.empty(256, np.uint8)
    for level in range(256):
        lut[level] = 255 - level if np.float32(level) >= threshold else level
    return lut


@njit(cache=True)
def auto_contrast_luts(src):
    """Per channel: stretch [min, max] to [0, 255] (float32, truncated); a flat channel is kept."""
    flat_in = _flat(src)
    low = np.full(3, 255, np.int64)
    high = np.zeros(3, np.int64)
    for ch in range(3):   # one channel at a time: plain min/max reductions, which vectorise
        channel_low, channel_high = np.uint8(255), np.uint8(0)
        for pixel in range(flat_in.size // 3):
            value = flat_in[_at(3 * pixel + ch)]
            channel_low, channel_high = min(channel_low, value), max(channel_high, value)
        low[ch], high[ch] = channel_low, channel_high
    step = np.float32(1.0 / 255.0)
    luts = np.empty((3, 256), np.uint8)
    for ch in range(3):
        minimum, inv_scale = np.float32(low[ch]), (np.float32(high[ch]) - np.float32(low[ch])) * step
        if high[ch] == low[ch]:
            minimum, inv_scale = _F0, np.float32(1.0)
        for level in range(256):
            luts[ch, level] = _to_uint8((np.float32(level) - minimum) / inv_scale)
    return luts


@njit(cache=True)
def _channel_histograms(flat_in):
    """int64 (3, 256) counts of each level per channel of the flat RGB bytes. Even and odd pixels count into
    separate tables, added at the end: in smooth images neighbouring pixels share levels, and one table would
    make each increment wait for the previous one to the same counter (twice as fast on photographs)."""
    parts = np.zeros((6, 256), np.int64)
    red, green, blue, red_odd, green_odd, blue_odd = parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]
    for pair in range(flat_in.size // 6):
        k = _at(6 * pair)
        red[flat_in[k]] += 1
        green[flat_in[k + _ONE]] += 1
        blue[flat_in[k + _TWO]] += 1
        red_odd[flat_in[k + _THREE]] += 1
        green_odd[flat_in[k + _FOUR]] += 1
        blue_odd[flat_in[k + _FIVE]] += 1
    if flat_in.size % 6:   # an odd pixel count: the last pixel
        k = _at(flat_in.size - 3)
        red[flat_in[k]] += 1
        green[flat_in[k + _ONE]] += 1
        blue[flat_in[k + _TWO]] += 1
    histograms = np.empty((3, 256), np.int64)
    for ch in range(3):
        for level in range(256):
            histograms[ch, level] = parts[ch, level] + parts[ch + 3, level]
    return histograms


@njit(cache=True)
def equalize_luts(src):
    """Per channel, PIL's histogram equalisation as torchvision computes it: ``step`` = the pixels not at the
    channel's top level // 255; ``lut[k] = min((cum[k - 1] + step // 2) // step, 255)``; ``step == 0`` keeps
    the channel."""
    flat_in = _flat(src)
    pixels = flat_in.size // 3
    histograms = _channel_histograms(flat_in)
    luts = np.empty((3, 256), np.uint8)
    for ch in range(3):
        histogram = histograms[ch]
        top = 255
        while histogram[top] == 0:
            top -= 1
        step = (pixels - histogram[top]) // 255
        for level in range(256):
            luts[ch, level] = level
        if step != 0:
            cumulative = 0
            luts[ch, 0] = 0
            for level in range(1, 256):
                cumulative += histogram[level - 1]
                luts[ch, level] = min((cumulative + step // 2) // step, 255)
    return luts


@njit(cache=True)
def apply_op(src, dst, op, magnitude, gray):
    """Write op ``op`` of ``src`` (uint8 (H, W, 3), C-contiguous) with its signed torchvision magnitude into
    ``dst`` (same shape; it may be ``src`` itself for the ``POINTWISE`` ops, must not for the others).
    Brightness, Color, Contrast and Sharpness use the factor ``1 + magnitude``; Posterize takes bits, Solarize
    the threshold as a fraction of 255."""
    if op == IDENTITY:
        copy_image(src, dst)
    elif op <= ROTATE:
        geometric(src, dst, op, magnitude)
    elif op == BRIGHTNESS:
        apply_lut(src, dst, brightness_lut(1.0 + magnitude))
    elif op == COLOR:
        color(src, dst, 1.0 + magnitude, gray)
    elif op == CONTRAST:
        apply_lut(src, dst, contrast_lut(src, 1.0 + magnitude, gray))
    elif op == SHARPNESS:
        sharpness(src, dst, 1.0 + magnitude)
    elif op == POSTERIZE:
        if magnitude >= 8:
            copy_image(src, dst)
        else:
            apply_lut(src, dst, posterize_lut(np.int64(magnitude)))
    elif op == SOLARIZE:
        apply_lut(src, dst, solarize_lut(magnitude))
    elif op == AUTO_CONTRAST:
        apply_channel_luts(src, dst, auto_contrast_luts(src))
    else:
        apply_channel_luts(src, dst, equalize_luts(src))
