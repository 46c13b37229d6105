"""The Numba kernels that mix a batch. They take every random choice as an argument (see ``params.py``), so
each is a pure function checked value-for-value against ``reference.py``.

They are module-level and ``cache=True`` on purpose: FFCV compiles the closures of its operations in every
process and caches nothing, so a heavy parallel loop inside an operation is recompiled on each start (seconds).
Kept here, it is compiled once per machine and loaded from Numba's on-disk cache afterwards.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .params import WEIGHT_ONE

_HALF = WEIGHT_ONE // 2  # added before the shift: round half up instead of truncating


@njit(cache=True, parallel=True, nogil=True)
def mix_images(images, out, partner, weight, box):
    """Mix a uint8 batch into ``out``; ``images`` is only read.

    images, out: uint8 (N, H, W, C), C-contiguous. For each sample ``i`` with partner ``j``:
    ``out[i] = round((weight[i] * images[i] + (256 - weight[i]) * images[j]) / 256)`` (half up), then the
    rectangle ``box[i] = (y0, y1, x0, x1)`` of ``out[i]`` is replaced by the same rectangle of ``images[j]``.
    """
    n = images.shape[0]
    flat_in = images.reshape(n, -1)
    flat_out = out.reshape(n, -1)
    pixels = flat_in.shape[1]
    for i in prange(n):
        j = partner[i]
        own_weight = np.int32(weight[i])
        if own_weight == WEIGHT_ONE:
            flat_out[i, :] = flat_in[i, :]
        else:
            other_weight = WEIGHT_ONE - own_weight
            own, other, dst = flat_in[i], flat_in[j], flat_out[i]
            for k in range(pixels):
                # int32 arithmetic: 255 * 256 + 128 fits, and LLVM vectorises the loop.
                dst[k] = (own[k] * own_weight + other[k] * other_weight + _HALF) >> 8
        y0, y1, x0, x1 = box[i, 0], box[i, 1], box[i, 2], box[i, 3]
        if y1 > y0 and x1 > x0:
            for y in range(y0, y1):
                out[i, y, x0:x1, :] = images[j, y, x0:x1, :]
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
    for i in range(labels.shape[0]):
        out[i, 0] = labels[i]
        out[i, 1] = labels[partner[i]]
        out[i, 2] = lam[i]
    return out
