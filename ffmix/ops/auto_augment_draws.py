"""The random choices of RandAugment / TrivialAugmentWide for one sample, and torchvision's magnitude tables.

Each sample draws from its own stream, keyed by (seed, epoch, sample index, ``AUTO_AUGMENT_STREAM``), as the
crops and flips do (``augment.py``): its ops do not depend on the thread, the batch or its position there, so a
run repeats for any number of workers and ``set_epoch(k)`` replays epoch k.

Per op slot the stream gives, always in this order (so the layout never depends on the settings' values):
the op (uniform over the 14), whether it applies (chance ``apply_prob``; timm applies each with 1/2,
torchvision always), its sign (signed ops are negated with chance 1/2), then the magnitude bin: TrivialAugment
draws it uniformly; RandAugment uses ``magnitude_bin``, moved by timm's magnitude noise when ``magnitude_std`` is
set (Gaussian, or uniform over [0, magnitude_bin] when infinite), rounded to a bin and clipped to
[0, ``max_bin``].

Magnitudes are torchvision's ``_AUGMENTATION_SPACE`` tables, computed here as torch computes them in float32
(``linspace_f32``), so a bin gives the very value torchvision passes to its functional op.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .auto_augment_kernels import (AUTO_CONTRAST, BRIGHTNESS, COLOR, CONTRAST, EQUALIZE, IDENTITY, NUM_OPS,
                                   POSTERIZE, ROTATE, SHARPNESS, SHEAR_X, SHEAR_Y, SOLARIZE, TRANSLATE_X,
                                   TRANSLATE_Y)
from .rng import next_u64, standard_normal, uniform

RAND_AUGMENT, TRIVIAL_AUGMENT = 0, 1
AUTO_AUGMENT_STREAM = np.uint64(0xD1B54A32D192ED03)


@njit(cache=True)
def linspace_f32(start, end, steps, index):
    """Entry ``index`` of ``torch.linspace(start, end, steps)`` in float32: float32 ends and step, the first
    half counted up from ``start``, the second down from ``end``, each entry one fused multiply-add (rounded
    once, as PyTorch's vectorised CPU kernel; float64 holds the float32 product exactly, so this is that)."""
    first, last = np.float32(start), np.float32(end)
    if steps == 1:
        return first
    step = np.float64((last - first) / np.float32(steps - 1))
    if index < steps // 2:
        return np.float32(np.float64(first) + step * index)
    return np.float32(np.float64(last) - step * (steps - 1 - index))


@njit(cache=True)
def is_signed(op):
    return SHEAR_X <= op <= SHARPNESS


@njit(cache=True)
def op_magnitude(policy, op, magnitude_bin, num_bins, height, width):
    """torchvision's (unsigned) magnitude of ``op`` at ``magnitude_bin`` for an ``height`` x ``width`` image,
    as the float64 its transform passes on (posterize: the bit count)."""
    wide = policy == TRIVIAL_AUGMENT
    if op == IDENTITY or op == AUTO_CONTRAST or op == EQUALIZE:
        return 0.0
    if op == SHEAR_X or op == SHEAR_Y:
        return np.float64(linspace_f32(0.0, 0.99 if wide else 0.3, num_bins, magnitude_bin))
    if op == TRANSLATE_X or op == TRANSLATE_Y:
        if wide:
            end = 32.0
        else:
            end = 150.0 / 331.0 * (width if op == TRANSLATE_X else height)
        return np.float64(linspace_f32(0.0, end, num_bins, magnitude_bin))
    if op == ROTATE:
        return np.float64(linspace_f32(0.0, 135.0 if wide else 30.0, num_bins, magnitude_bin))
    if op <= SHARPNESS:   # Brightness, Color, Contrast, Sharpness
        return np.float64(linspace_f32(0.0, 0.99 if wide else 0.9, num_bins, magnitude_bin))
    if op == POSTERIZE:
        # (8 - (arange(bins) / ((bins - 1) / k))).round().int(): float32, round half to even
        level = np.float32(magnitude_bin) / np.float32((num_bins - 1) / (6.0 if wide else 4.0))
        return np.float64(np.rint(np.float32(8.0) - level))
    return np.float64(linspace_f32(1.0, 0.0, num_bins, magnitude_bin))   # Solarize: threshold fraction


@njit(cache=True)
def draw_sample_ops(key, policy, num_ops, magnitude_bin, num_bins, apply_prob, magnitude_std, max_bin):
    """The op ids (int64 (num_ops,), ``IDENTITY`` for a slot that does not apply), magnitude bins and signs
    (True: negated) of one sample, from stream ``key``; see the module docstring for the draw order."""
    ops = np.empty(num_ops, np.int64)
    bins = np.empty(num_ops, np.int64)
    negated = np.empty(num_ops, np.bool_)
    state = np.empty(1, np.uint64)
    state[0] = key
    for slot in range(num_ops):
        op = np.int64(next_u64(state) % np.uint64(NUM_OPS))
        applies = uniform(state) < apply_prob
        negated[slot] = uniform(state) < 0.5
        if policy == TRIVIAL_AUGMENT:
            chosen = np.int64(next_u64(state) % np.uint64(num_bins))
        elif magnitude_std == 0.0:
            chosen = np.int64(magnitude_bin)
        else:
            if math.isinf(magnitude_std):
                position = uniform(state) * magnitude_bin
            else:
                position = magnitude_bin + magnitude_std * standard_normal(state)
            chosen = np.int64(np.rint(min(max(position, 0.0), np.float64(max_bin))))
        ops[slot] = op if applies else IDENTITY
        bins[slot] = chosen
    return ops, bins, negated


@njit(cache=True)
def signed_magnitude(policy, op, magnitude_bin, num_bins, negated, height, width):
    magnitude = op_magnitude(policy, op, magnitude_bin, num_bins, height, width)
    return -magnitude if negated and is_signed(op) else magnitude
