"""C-callable entry points that the FFCV operations call once per batch.

Why C callbacks and not plain calls into the jitted kernels? When Numba compiles a function that calls
another jitted function, it links the callee's code into the caller and optimises it again. FFCV compiles
each operation's closure in every process, so calling the kernels directly re-optimised the whole
parallel kernel at every start (seconds before the first batch). A ``cfunc`` is compiled once per machine
(``cache=True``) and called through its address, so the closure that FFCV compiles stays tiny.

Arrays cross the boundary as addresses plus shapes; the callers pass C-contiguous arrays.
"""
from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types
from numba.np.ufunc import parallel as _parallel

from .control import ENABLED, EPOCH, HEIGHT, WIDTH, as_pointer, read_control
from .kernels import mix_images, mix_normalize, pair_targets, soft_targets
from .params import WEIGHT_ONE, draw_mix_params
from .rng import batch_key

# A cached cfunc holding parallel code needs Numba's thread pool started before it is loaded.
_parallel._launch_threads()

MIXED, UNCHANGED, BAD_LABEL = 1, 0, -1

_address, _i64, _f64 = types.uintp, types.int64, types.float64


@cfunc(_i64(_address, _address, _address, _i64, _i64, _i64, _i64, _address, _i64, _f64, _f64, _f64, _f64, _i64),
       cache=True, nogil=True)
def mix_image_batch(images_at, out_at, indices_at, count, height, width, channels, control_at, seed,
                    mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode):
    """Mix ``count`` uint8 (H, W, C) images into ``out``; returns UNCHANGED when mixing is switched off."""
    control = read_control(control_at)
    if control[ENABLED] == 0:
        return UNCHANGED
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    out = carray(as_pointer(out_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    key = batch_key(seed, control[EPOCH], indices)
    partner, weight, box, _ = draw_mix_params(key, count, control[HEIGHT], control[WIDTH], mixup_alpha,
                                              cutmix_alpha, mix_prob, switch_prob, mode, 0.0, 1.0)
    mix_images(images, out, partner, weight, box)
    return MIXED


@cfunc(_i64(_address, _address, _address, _i64, _i64, _i64, _i64, _i64, _address, _i64, _f64, _f64, _f64, _f64,
            _i64, _address, _address, _i64), cache=True, nogil=True)
def mix_normalize_batch(images_at, out_at, indices_at, count, height, width, channels, out_channels, control_at,
                        seed, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, mode, scale_at, shift_at,
                        channels_last):
    """Mix ``count`` uint8 (H, W, C) images and write them as normalised float32 to ``out`` ((count, C', H, W),
    or (count, H, W, C') if ``channels_last``), ``scale``/``shift`` holding C' float32 each. With mixing
    switched off the images are only converted."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    scale = carray(as_pointer(scale_at), (out_channels,), np.float32)
    shift = carray(as_pointer(shift_at), (out_channels,), np.float32)
    if control[ENABLED] == 0:
        partner = np.arange(count)
        weight = np.full(count, WEIGHT_ONE, np.int32)
        box = np.zeros((count, 4), np.int32)
    else:
        key = batch_key(seed, control[EPOCH], indices)
        partner, weight, box, _ = draw_mix_params(key, count, control[HEIGHT], control[WIDTH], mixup_alpha,
                                                  cutmix_alpha, mix_prob, switch_prob, mode, 0.0, 1.0)
    if channels_last:
        out = carray(as_pointer(out_at), (count, height, width, out_channels), np.float32)
    else:
        out = carray(as_pointer(out_at), (count, out_channels, height, width), np.float32)
    mix_normalize(images, out, partner, weight, box, scale, shift, channels_last != 0)
    return MIXED


@cfunc(_i64(_address, _address, _address, _i64, _address, _i64, _f64, _f64, _f64, _f64, _i64, _i64, _f64,
            _i64), cache=True, nogil=True)
def mix_label_batch(labels_at, out_at, indices_at, count, control_at, seed, mixup_alpha, cutmix_alpha,
                    mix_prob, switch_prob, mode, num_classes, smoothing, soft):
    """Targets of ``count`` int64 labels into ``out`` (float32 (count, C) if ``soft``, else (count, 3));
    returns BAD_LABEL, leaving ``out`` unspecified, if a label is outside [0, num_classes)."""
    control = read_control(control_at)
    labels = carray(as_pointer(labels_at), (count,), np.int64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    if control[ENABLED] == 0:
        partner = np.arange(count)
        lam = np.ones(count)
    else:
        key = batch_key(seed, control[EPOCH], indices)
        partner, _, _, lam = draw_mix_params(key, count, control[HEIGHT], control[WIDTH], mixup_alpha,
                                             cutmix_alpha, mix_prob, switch_prob, mode, 0.0, 1.0)
    if soft:
        out = carray(as_pointer(out_at), (count, num_classes), np.float32)
        return MIXED if soft_targets(labels, partner, lam, num_classes, smoothing, out) else BAD_LABEL
    out = carray(as_pointer(out_at), (count, 3), np.float32)
    pair_targets(labels, partner, lam, out)
    return MIXED
