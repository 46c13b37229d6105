"""Plain Python/NumPy versions of ``augment.py`` (crop boxes, flips) and of the SplitMix64 stream they use:
slow, obvious, and the oracle of the tests.

Integers are Python ints masked to 64 bits; the floating-point steps are the same IEEE operations in the same
order as the kernels (``math.exp``/``math.sqrt`` call the C library, as Numba's do), so boxes agree exactly.
"""
from __future__ import annotations

import math

import numpy as np

from .augment import CROP_STREAM, FALLBACK_TRIES, FLIP_STREAM

MASK = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(value: int) -> int:
    z = value & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Stream:
    """SplitMix64 from ``key``, as ``rng.next_u64``/``rng.uniform``."""

    def __init__(self, key: int):
        self.counter = int(key) & MASK

    def next_u64(self) -> int:
        self.counter = (self.counter + GOLDEN_GAMMA) & MASK
        return mix64(self.counter)

    def uniform(self) -> float:
        return (self.next_u64() >> 11) * (1.0 / 9007199254740992.0)


def sample_key(seed: int, epoch: int, index: int, stream: int) -> int:
    key = mix64(int(seed) ^ GOLDEN_GAMMA)
    key = mix64(key ^ int(epoch))
    key = mix64(key ^ int(index))
    return mix64(key ^ int(stream))


def random_crop_box(key: int, height: int, width: int, scale, ratio):
    """torchvision's ``RandomResizedCrop.get_params`` on stream ``key``: ``(top, left, h, w, tries)``."""
    stream = Stream(key)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    area = float(height) * float(width)
    for attempt in range(FALLBACK_TRIES):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * stream.uniform())
        aspect = math.exp(log_low + (log_high - log_low) * stream.uniform())
        w = round(math.sqrt(target_area * aspect))       # Python rounds half to even, as np.rint
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(stream.uniform() * (height - h + 1))
            left = int(stream.uniform() * (width - w + 1))
            return top, left, h, w, attempt + 1
    ratio_low, ratio_high = math.exp(log_low), math.exp(log_high)
    in_ratio = width / height
    if in_ratio < ratio_low:
        w, h = width, min(round(width / ratio_low), height)
    elif in_ratio > ratio_high:
        h, w = height, min(round(height * ratio_high), width)
    else:
        h, w = height, width
    h, w = max(h, 1), max(w, 1)
    return (height - h) // 2, (width - w) // 2, h, w, FALLBACK_TRIES + 1


def center_crop_box(height: int, width: int, out_height: int, out_width: int, ratio: float):
    """See ``augment.center_crop_box``: ``(top, left, h, w)``."""
    if out_height * width <= out_width * height:
        w = int(ratio * width)
        h = round(w * out_height / out_width)
    else:
        h = int(ratio * height)
        w = round(h * out_width / out_height)
    h, w = min(max(h, 1), height), min(max(w, 1), width)
    return (height - h) // 2, (width - w) // 2, h, w


def crop_boxes(seed: int, epoch: int, indices, sizes, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """int64 (N, 4) random-resized-crop boxes of samples ``indices`` whose (height, width) are ``sizes``."""
    return np.array([random_crop_box(sample_key(seed, epoch, index, CROP_STREAM), h, w, scale, ratio)[:4]
                     for index, (h, w) in zip(indices, sizes)], np.int64).reshape(-1, 4)


def flips(seed: int, epoch: int, indices, probability: float = 0.5) -> np.ndarray:
    """bool (N,): which of samples ``indices`` are flipped."""
    return np.array([Stream(sample_key(seed, epoch, index, FLIP_STREAM)).uniform() < probability
                     for index in indices], bool)


def flip_reference(images: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) with the rows of the ``flipped`` samples reversed; a new array."""
    out = images.copy()
    out[flipped] = images[flipped][:, :, ::-1]
    return out
