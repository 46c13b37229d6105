"""The random choices of the per-sample augmentations: a crop box and a horizontal flip per image.

Each sample gets its own stream, keyed by (seed, epoch, sample index) and a purpose constant, so its crop
and flip depend on neither the thread that decodes it, nor the batch it lands in, nor its position there:
the same seed gives the same crops for any batch size and number of workers, and ``set_epoch(k)`` replays
epoch k. The purpose constants keep the crop, the flip and the mixing streams (``rng.batch_key``) apart.

Boxes are ``(top, left, height, width)`` in source pixels, as torchvision's ``RandomResizedCrop.get_params``
returns them. Everything here is a pure function of its arguments, mirrored in ``augment_reference.py``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .rng import GOLDEN_GAMMA, mix64, uniform

# Purpose constants (arbitrary odd 64-bit values): one stream per kind of draw.
CROP_STREAM = np.uint64(0xC6A4A7935BD1E995)
FLIP_STREAM = np.uint64(0x8CB92BA72F3D8DD7)
FALLBACK_TRIES = 10   # torchvision's RandomResizedCrop gives up after ten draws and crops centrally


@njit(cache=True, inline="always")
def sample_key(seed, epoch, index, stream):
    """The 64-bit stream key of one sample for one purpose (``CROP_STREAM``, ``FLIP_STREAM``)."""
    key = mix64(np.uint64(seed) ^ GOLDEN_GAMMA)
    key = mix64(key ^ np.uint64(epoch))
    key = mix64(key ^ np.uint64(index))
    return mix64(key ^ stream)


@njit(cache=True)
def random_crop_box(key, height, width, scale_low, scale_high, log_ratio_low, log_ratio_high):
    """torchvision's random-resized-crop box of a ``height`` x ``width`` image, drawn from stream ``key``.

    Up to ten tries: area fraction uniform in [scale_low, scale_high], log aspect ratio (w / h) uniform in
    [log_ratio_low, log_ratio_high], sides rounded half to even (Python's ``round``); the first box that fits
    gets a uniform position. Otherwise the centred crop of the whole image clamped to the ratio range.
    Returns ``(top, left, box_height, box_width, tries)``; ``tries`` is ``FALLBACK_TRIES + 1`` for the fallback.
    """
    state = np.empty(1, np.uint64)
    state[0] = key
    area = np.float64(height) * np.float64(width)
    for attempt in range(FALLBACK_TRIES):
        target_area = area * (scale_low + (scale_high - scale_low) * uniform(state))
        aspect = np.exp(log_ratio_low + (log_ratio_high - log_ratio_low) * uniform(state))
        box_width = np.int64(np.rint(np.sqrt(target_area * aspect)))
        box_height = np.int64(np.rint(np.sqrt(target_area / aspect)))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = np.int64(uniform(state) * (height - box_height + 1))
            left = np.int64(uniform(state) * (width - box_width + 1))
            return top, left, box_height, box_width, attempt + 1
    ratio_low, ratio_high = np.exp(log_ratio_low), np.exp(log_ratio_high)
    in_ratio = np.float64(width) / np.float64(height)
    if in_ratio < ratio_low:
        box_width = np.int64(width)
        box_height = min(np.int64(np.rint(box_width / ratio_low)), np.int64(height))
    elif in_ratio > ratio_high:
        box_height = np.int64(height)
        box_width = min(np.int64(np.rint(box_height * ratio_high)), np.int64(width))
    else:
        box_height, box_width = np.int64(height), np.int64(width)
    box_height, box_width = max(box_height, 1), max(box_width, 1)
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width, FALLBACK_TRIES + 1


@njit(cache=True)
def center_crop_box(height, width, out_height, out_width, ratio):
    """The centred box with the output's aspect ratio whose limiting side is ``ratio`` times the image's.

    For a square output this is FFCV's ``CenterCropRGBImageDecoder`` box exactly: a square of side
    ``int(ratio * min(height, width))``. Returns ``(top, left, box_height, box_width)``.
    """
    if out_height * width <= out_width * height:     # the width limits
        box_width = np.int64(ratio * width)
        box_height = np.int64(np.rint(box_width * np.float64(out_height) / np.float64(out_width)))
    else:
        box_height = np.int64(ratio * height)
        box_width = np.int64(np.rint(box_height * np.float64(out_width) / np.float64(out_height)))
    box_height = min(max(box_height, 1), np.int64(height))
    box_width = min(max(box_width, 1), np.int64(width))
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


@njit(cache=True, inline="always")
def flip_draw(key, probability):
    """Whether the sample of stream ``key`` is flipped (chance ``probability``)."""
    state = np.empty(1, np.uint64)
    state[0] = key
    return uniform(state) < probability
