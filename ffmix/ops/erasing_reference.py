"""``erasing.py`` in plain Python/NumPy: the boxes and values of RandomErasing, drawn from the same SplitMix64
streams (``augment_reference.Stream``), written into a copy of the batch. The oracle of the tests."""
from __future__ import annotations

import math

import numpy as np

from .augment_reference import Stream, sample_key
from .erasing import ERASE_STREAM, MODE_PIXEL, MODE_RAND, TRIES
from .settings import python_values


def normal(stream: Stream) -> float:
    """``rng.standard_normal``: Box-Muller on two uniforms."""
    radius = math.sqrt(-2.0 * math.log(1.0 - stream.uniform()))
    return radius * math.cos(2.0 * math.pi * stream.uniform())


def normal_pairs(stream: Stream, count: int) -> np.ndarray:
    """``erasing.box_noise``'s values: Box-Muller's cosine and sine halves in turn, float32 (count,)."""
    values = []
    while len(values) < count:
        radius = math.sqrt(-2.0 * math.log(1.0 - stream.uniform()))
        angle = 2.0 * math.pi * stream.uniform()
        values += [radius * math.cos(angle), radius * math.sin(angle)]
    return np.array(values[:count], np.float32)


def sample_erasures(key: int, channels: int, height: int, width: int, settings):
    """A list of ``(top, left, h, w, values)`` with ``values`` float32 (channels, h, w); ``settings``: an
    ``ERASE_SETTINGS`` record (``op.settings``)."""
    settings = python_values(settings)
    stream = Stream(key)
    if stream.uniform() >= settings.probability:
        return []
    count = settings.min_count + stream.next_u64() % (settings.max_count - settings.min_count + 1)
    erasures = []
    for _ in range(count):
        for _attempt in range(TRIES):
            fraction = settings.min_area + (settings.max_area - settings.min_area) * stream.uniform()
            area = fraction * float(height * width) / count
            low, high = settings.log_aspect_low, settings.log_aspect_high
            aspect = math.exp(low + (high - low) * stream.uniform())
            box_h, box_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if box_w < width and box_h < height:
                top = stream.next_u64() % (height - box_h + 1)
                left = stream.next_u64() % (width - box_w + 1)
                values = np.zeros((channels, box_h, box_w), np.float32)
                if settings.mode == MODE_RAND:
                    values[:] = np.array([normal(stream) for _ in range(channels)], np.float32)[:, None, None]
                elif settings.mode == MODE_PIXEL:
                    values[:] = normal_pairs(Stream(stream.next_u64()), values.size).reshape(values.shape)
                erasures.append((top, left, box_h, box_w, values))
                break
    return erasures


def erase_reference(images: np.ndarray, indices, epoch: int, settings) -> np.ndarray:
    """float32 (N, C, H, W) (or (N, H, W, C) with ``settings.channels_last``) ``images`` erased as the FFCV op
    does; a new array."""
    settings = python_values(settings)
    out = images.copy()
    planar = out if not settings.channels_last else out.transpose(0, 3, 1, 2)   # a view: writes reach ``out``
    channels, height, width = planar.shape[1:]
    for position, index in enumerate(indices):
        key = sample_key(settings.seed, epoch, int(index), int(ERASE_STREAM))
        for top, left, box_h, box_w, values in sample_erasures(key, channels, height, width, settings):
            planar[position, :, top:top + box_h, left:left + box_w] = values
    return out
