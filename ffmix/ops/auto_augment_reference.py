"""The oracle of ``auto_augment*.py``: the draws in plain Python, the ops by torchvision itself.

``tv_apply`` calls ``torchvision.transforms.v2.functional`` exactly as torchvision's ``RandAugment`` and
``TrivialAugmentWide`` do for each op name and (signed) magnitude: nearest interpolation, fill 0 (``fill=None``:
``grid_sample``'s zero padding), shears about the top-left corner. ``augment_reference`` strings the draws and
ops of a batch together, for comparison with the FFCV operation's output.

``geometric_reference`` is the geometric ops' arithmetic in NumPy, without torch: torchvision's matrix and float32
sampling grid, each product and sum rounded on its own. torch forms that grid with a batched matrix product
(``bmm``), whose summation the BLAS it runs on may fuse or reorder, so on some CPUs torchvision itself moves a
few pixels; this reference pins the kernels' arithmetic on any CPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .augment_reference import Stream, sample_key
from .auto_augment_draws import AUTO_AUGMENT_STREAM, TRIVIAL_AUGMENT, signed_magnitude
from .auto_augment_kernels import IDENTITY, NUM_OPS, OP_NAMES
from .settings import python_values

_NEAREST = InterpolationMode.NEAREST


def tv_apply(images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """torchvision's op ``name`` with ``magnitude`` on uint8 (..., C, H, W) ``images``."""
    if name == "Identity":
        return images
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return F.affine(images, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[shear, 0.0] if name == "ShearX" else [0.0, shear], interpolation=_NEAREST,
                        fill=None, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        shift = int(magnitude)
        return F.affine(images, angle=0.0, translate=[shift, 0] if name == "TranslateX" else [0, shift],
                        scale=1.0, shear=[0.0, 0.0], interpolation=_NEAREST, fill=None)
    if name == "Rotate":
        return F.rotate(images, angle=magnitude, interpolation=_NEAREST, fill=None)
    enhance = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
               "Sharpness": F.adjust_sharpness}
    if name in enhance:
        return enhance[name](images, 1.0 + magnitude)
    if name == "Posterize":
        return F.posterize(images, int(magnitude))
    if name == "Solarize":
        return F.solarize(images, 255.0 * magnitude)
    if name == "AutoContrast":
        return F.autocontrast(images)
    if name == "Equalize":
        return F.equalize(images)
    raise ValueError(f"unknown op {name!r}")


def geometric_reference(image: np.ndarray, name: str, magnitude: float) -> np.ndarray:
    """NumPy model of torchvision's nearest-neighbour ``affine`` / ``rotate`` (as ``tv_apply`` calls them) on
    uint8 (H, W, C) ``image``: the inverse matrix from torchvision's own builder, the centred pixel coordinates
    times the matrix over half the size in float32 (``x * r00 + y * r10``, then ``+ r20``), ``grid_sample``'s
    ``(g + 1) * size / 2 - 0.5`` rounded half to even, 0 outside; ``rotate``'s ``rot90`` fast paths."""
    from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

    height, width = image.shape[:2]
    if name == "Rotate":
        angle = magnitude % 360
        turns = {0: 0, 180: 2} if height != width else {0: 0, 90: 1, 180: 2, 270: 3}
        if angle in turns:
            return np.ascontiguousarray(np.rot90(image, turns[angle], axes=(0, 1)))
        matrix = _get_inverse_affine_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0])
    elif name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        matrix = _get_inverse_affine_matrix([-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], 1.0,
                                            [shear, 0.0] if name == "ShearX" else [0.0, shear])
    else:
        shift = float(int(magnitude))
        matrix = _get_inverse_affine_matrix([0.0, 0.0], 0.0, [shift, 0.0] if name == "TranslateX" else [0.0, shift],
                                            1.0, [0.0, 0.0])
    half_w, half_h = np.float32(0.5 * width), np.float32(0.5 * height)
    r00, r10, r20 = (np.float32(value) / half_w for value in matrix[0:3])
    r01, r11, r21 = (np.float32(value) / half_h for value in matrix[3:6])
    xs = (np.arange(width) - (width - 1) * 0.5).astype(np.float32)[None, :]
    ys = (np.arange(height) - (height - 1) * 0.5).astype(np.float32)[:, None]
    one, half = np.float32(1.0), np.float32(0.5)
    source_x = np.rint((((xs * r00) + (ys * r10)) + r20 + one) * half_w - half)
    source_y = np.rint((((xs * r01) + (ys * r11)) + r21 + one) * half_h - half)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    out = np.zeros_like(image)
    out[inside] = image[source_y[inside].astype(np.int64), source_x[inside].astype(np.int64)]
    return out


def draw_sample_ops(key: int, policy: int, num_ops: int, magnitude_bin: int, num_bins: int, apply_prob: float,
                    magnitude_std: float, max_bin: int):
    """``auto_augment_draws.draw_sample_ops`` in plain Python: lists (ops, bins, negated)."""
    stream = Stream(key)
    ops, bins, negated = [], [], []
    for _ in range(num_ops):
        op = stream.next_u64() % NUM_OPS
        applies = stream.uniform() < apply_prob
        negated.append(stream.uniform() < 0.5)
        if policy == TRIVIAL_AUGMENT:
            chosen = stream.next_u64() % num_bins
        elif magnitude_std == 0.0:
            chosen = magnitude_bin
        else:
            if math.isinf(magnitude_std):
                position = stream.uniform() * magnitude_bin
            else:
                radius = math.sqrt(-2.0 * math.log(1.0 - stream.uniform()))
                position = magnitude_bin + magnitude_std * radius * math.cos(2.0 * math.pi * stream.uniform())
            chosen = int(np.rint(min(max(position, 0.0), float(max_bin))))
        ops.append(op if applies else IDENTITY)
        bins.append(chosen)
    return ops, bins, negated


def augment_reference(images: np.ndarray, indices, epoch: int, settings, apply=tv_apply) -> np.ndarray:
    """uint8 (N, H, W, C) ``images`` augmented as the FFCV op does, with ``settings`` an ``AUGMENT_SETTINGS``
    record (``op.settings``); a new array. (Color ops of ``settings.gray`` images are not modelled: torchvision
    sees three channels.) ``apply(image (C, H, W) uint8 tensor, op name, magnitude)`` applies one op:
    torchvision's by default. A test of the draws and their wiring passes ffmix's own per-op kernel instead,
    because torchvision's nearest-neighbour sampling positions come from a float32 matrix product whose
    rounding depends on the CPU's BLAS: at positions exactly half-way between two pixels (ties) the chosen
    pixel differs between machines (tests/test_auto_augment.py pins that to ties only)."""
    settings = python_values(settings)
    out = images.copy()
    height, width = images.shape[1:3]
    for position, index in enumerate(indices):
        key = sample_key(settings.seed, epoch, int(index), int(AUTO_AUGMENT_STREAM))
        ops, bins, negated = draw_sample_ops(key, settings.policy, settings.num_ops, settings.magnitude_bin,
                                             settings.num_bins, settings.apply_prob, settings.magnitude_std,
                                             settings.max_bin)
        image = torch.from_numpy(out[position]).permute(2, 0, 1).contiguous()
        for op, chosen, negative in zip(ops, bins, negated):
            magnitude = signed_magnitude(settings.policy, op, chosen, settings.num_bins, negative, height, width)
            image = apply(image, OP_NAMES[op], magnitude)
        out[position] = image.permute(1, 2, 0).numpy()
    return out
