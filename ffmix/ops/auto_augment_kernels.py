"""The pixel arithmetic of RandAugment's and TrivialAugmentWide's 14 operations, one uint8 (H, W, C) image at a
time, as torchvision's ``transforms.v2.functional`` computes them on uint8 tensors.

Every op takes its magnitude (already signed) as an argument: no randomness here (``auto_augment_draws.py``
draws it), so each op is a pure function checked against ``auto_augment_reference.py`` (NumPy, same arithmetic)
and against torchvision itself (``tests/test_auto_augment.py``).

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
_SHARP_EDGE, _SHARP_CENTRE = np.float32(1.0 / 13.0), np.float32(5.0 / 13.0)
_F255 = np.float32(255.0)
_F0 = np.float32(0.0)


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


@njit(cache=True)
def warp_nearest(src, dst, matrix):
    """``dst[y, x] = src[round(iy), round(ix)]`` (0 outside), with (ix, iy) torchvision's sampling position:
    its float32 grid (``_affine_grid``: centred pixel coordinates times the matrix divided by half the size),
    then ``grid_sample``'s unnormalisation ``(g + 1) * size / 2 - 0.5`` and round half to even."""
    height, width, channels = src.shape
    half_w, half_h = np.float32(0.5 * width), np.float32(0.5 * height)
    r00, r10, r20 = np.float32(matrix[0]) / half_w, np.float32(matrix[1]) / half_w, np.float32(matrix[2]) / half_w
    r01, r11, r21 = np.float32(matrix[3]) / half_h, np.float32(matrix[4]) / half_h, np.float32(matrix[5]) / half_h
    one = np.float32(1.0)
    half = np.float32(0.5)
    for y in range(height):
        yc = np.float32(y - (height - 1) * 0.5)
        for x in range(width):
            xc = np.float32(x - (width - 1) * 0.5)
            gx = xc * r00 + yc * r10 + r20
            gy = xc * r01 + yc * r11 + r21
            ix = np.rint((gx + one) * half_w - half)
            iy = np.rint((gy + one) * half_h - half)
            if 0 <= ix < width and 0 <= iy < height:
                sx, sy = np.int64(ix), np.int64(iy)
                for ch in range(channels):
                    dst[y, x, ch] = src[sy, sx, ch]
            else:
                for ch in range(channels):
                    dst[y, x, ch] = 0


@njit(cache=True)
def rotate_quarter(src, dst, turns):
    """``torch.rot90(image, turns)`` over (H, W), the fast path ``rotate`` takes for 90/180/270 degrees
    (90 and 270 only for square images, which the caller checks)."""
    height, width, channels = src.shape
    for y in range(height):
        for x in range(width):
            if turns == 1:
                sy, sx = x, width - 1 - y
            elif turns == 2:
                sy, sx = height - 1 - y, width - 1 - x
            else:
                sy, sx = height - 1 - x, y
            for ch in range(channels):
                dst[y, x, ch] = src[sy, sx, ch]


@njit(cache=True)
def geometric(src, dst, op, magnitude):
    height, width, _ = src.shape
    if op == ROTATE:
        angle = magnitude % 360.0
        if angle == 0.0:
            dst[:] = src
            return
        if angle == 180.0:
            rotate_quarter(src, dst, 2)
            return
        if height == width and (angle == 90.0 or angle == 270.0):
            rotate_quarter(src, dst, 1 if angle == 90.0 else 3)
            return
    warp_nearest(src, dst, inverse_affine(op, magnitude, height, width))


# ------------------------------------------------------------------------------------------------ colour

@njit(cache=True, inline="always")
def _gray_floor(src, y, x):
    """torchvision's grayscale of an RGB uint8 pixel before a blend: float32, then floored."""
    level = np.float32(src[y, x, 0]) * _GRAY_R
    level = _fma(_GRAY_G, np.float32(src[y, x, 1]), level)
    level = _fma(_GRAY_B, np.float32(src[y, x, 2]), level)
    return np.float32(math.floor(level))


@njit(cache=True, inline="always")
def _blend(pixel, other, ratio, rest):
    """``_blend``: ``pixel * ratio + other * (1 - ratio)`` in float32, clamped and truncated."""
    return _to_uint8(_fma(rest, other, np.float32(pixel) * ratio))


@njit(cache=True)
def brightness(src, dst, factor):
    scale = np.float32(factor)
    height, width, channels = src.shape
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                dst[y, x, ch] = _to_uint8(np.float32(src[y, x, ch]) * scale)


@njit(cache=True)
def color(src, dst, factor, gray):
    """``adjust_saturation``: blend with the floored grayscale (a 1-channel image is returned as it is)."""
    if gray:
        dst[:] = src
        return
    ratio, rest = np.float32(factor), np.float32(1.0 - factor)
    height, width, channels = src.shape
    levels = np.empty(width, np.float32)
    for y in range(height):
        for x in range(width):   # the row's gray levels first: two short loops run faster than one long one
            levels[x] = _gray_floor(src, y, x)
        for x in range(width):
            for ch in range(channels):
                dst[y, x, ch] = _blend(src[y, x, ch], levels[x], ratio, rest)


@njit(cache=True)
def contrast(src, dst, factor, gray):
    """``adjust_contrast``: blend with the mean of the floored grayscale (of the pixels for 1 channel).

    The floored levels are integers, so their float32 sum is exact below 2**24 (images up to 256 x 256) and
    agrees with torch's whatever order it sums in; larger images can differ in the mean's last bit."""
    height, width, channels = src.shape
    total = 0.0
    for y in range(height):
        for x in range(width):
            total += src[y, x, 0] if gray else _gray_floor(src, y, x)
    mean = np.float32(total) / np.float32(height * width)
    ratio, rest = np.float32(factor), np.float32(1.0 - factor)
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                dst[y, x, ch] = _blend(src[y, x, ch], mean, ratio, rest)


@njit(cache=True)
def sharpness(src, dst, factor):
    """``adjust_sharpness``: blend the interior with a 3x3 smoothing (1s around a 5, over 13), rounded to
    whole levels; the one-pixel border is kept."""
    dst[:] = src
    height, width, channels = src.shape
    if height <= 2 or width <= 2:
        return
    alpha = np.float32(1.0 - factor)
    edge, centre = _SHARP_EDGE, _SHARP_CENTRE
    rows_in = src.reshape(height, width * channels)
    rows_out = dst.reshape(height, width * channels)
    for y in range(1, height - 1):
        up, row, down, out = rows_in[y - 1], rows_in[y], rows_in[y + 1], rows_out[y]
        # one flat loop over the row's interior values, neighbours ``channels`` apart (it vectorises)
        for k in range(channels, (width - 1) * channels):
            left, right = k - channels, k + channels
            # the nine products added row by row, left to right: the order the exactness tests pin
            total = edge * np.float32(up[left])
            total = total + edge * np.float32(up[k])
            total = total + edge * np.float32(up[right])
            total = total + edge * np.float32(row[left])
            total = total + centre * np.float32(row[k])
            total = total + edge * np.float32(row[right])
            total = total + edge * np.float32(down[left])
            total = total + edge * np.float32(down[k])
            total = total + edge * np.float32(down[right])
            blurred = np.float32(np.rint(total))
            pixel = np.float32(row[k])
            out[k] = _to_uint8(_fma(alpha, blurred - pixel, pixel))


@njit(cache=True)
def posterize(src, dst, bits):
    if bits >= 8:
        dst[:] = src
        return
    mask = np.uint8(((1 << bits) - 1) << (8 - bits))
    height, width, channels = src.shape
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                dst[y, x, ch] = src[y, x, ch] & mask


@njit(cache=True)
def solarize(src, dst, fraction):
    """Invert the pixels at or above ``255 * fraction`` (compared in float32, as torch compares uint8 with a
    Python float)."""
    threshold = np.float32(255.0 * fraction)
    height, width, channels = src.shape
    for y in range(height):
        for x in range(width):
            for ch in range(channels):
                value = src[y, x, ch]
                dst[y, x, ch] = np.uint8(255 - value) if np.float32(value) >= threshold else value


@njit(cache=True)
def auto_contrast(src, dst):
    """Per channel: stretch [min, max] to [0, 255] (float32, truncated); a flat channel is kept."""
    height, width, channels = src.shape
    step = np.float32(1.0 / 255.0)
    for ch in range(channels):
        low, high = 255, 0
        for y in range(height):
            for x in range(width):
                low, high = min(low, src[y, x, ch]), max(high, src[y, x, ch])
        minimum, inv_scale = np.float32(low), (np.float32(high) - np.float32(low)) * step
        if high == low:
            minimum, inv_scale = _F0, np.float32(1.0)
        for y in range(height):
            for x in range(width):
                dst[y, x, ch] = _to_uint8((np.float32(src[y, x, ch]) - minimum) / inv_scale)


@njit(cache=True)
def equalize(src, dst):
    """Per channel, PIL's histogram equalisation as torchvision computes it: ``step`` = the pixels not at the
    channel's top level // 255; ``lut[k] = min((cum[k - 1] + step // 2) // step, 255)``; ``step == 0`` keeps
    the channel."""
    height, width, channels = src.shape
    pixels = height * width
    for ch in range(channels):
        histogram = np.zeros(256, np.int64)
        for y in range(height):
            for x in range(width):
                histogram[src[y, x, ch]] += 1
        top = 255
        while histogram[top] == 0:
            top -= 1
        step = (pixels - histogram[top]) // 255
        lut = np.arange(256).astype(np.uint8)
        if step != 0:
            cumulative = 0
            lut[0] = 0
            for level in range(1, 256):
                cumulative += histogram[level - 1]
                lut[level] = min((cumulative + step // 2) // step, 255)
        for y in range(height):
            for x in range(width):
                dst[y, x, ch] = lut[src[y, x, ch]]


@njit(cache=True)
def apply_op(src, dst, op, magnitude, gray):
    """Write op ``op`` of ``src`` (uint8 (H, W, C), C-contiguous) with its signed torchvision magnitude into
    ``dst`` (same shape; it may be ``src`` itself for the ``POINTWISE`` ops, must not for the others). Brightness, Color, Contrast and Sharpness use the factor
    ``1 + magnitude``; Posterize takes bits, Solarize the threshold as a fraction of 255."""
    if op == IDENTITY:
        dst[:] = src
    elif op <= ROTATE:
        geometric(src, dst, op, magnitude)
    elif op == BRIGHTNESS:
        brightness(src, dst, 1.0 + magnitude)
    elif op == COLOR:
        color(src, dst, 1.0 + magnitude, gray)
    elif op == CONTRAST:
        contrast(src, dst, 1.0 + magnitude, gray)
    elif op == SHARPNESS:
        sharpness(src, dst, 1.0 + magnitude)
    elif op == POSTERIZE:
        posterize(src, dst, np.int64(magnitude))
    elif op == SOLARIZE:
        solarize(src, dst, magnitude)
    elif op == AUTO_CONTRAST:
        auto_contrast(src, dst)
    else:
        equalize(src, dst)
