"""Plain NumPy versions of the kernels in ``kernels.py``: slow, obvious, and the oracle of the tests."""
from __future__ import annotations

import numpy as np


def clamped_boxes(box, height, width):
    """Boxes limited to the image as the kernels limit them: y0, x0 into [0, size], y1 >= y0, x1 >= x0."""
    box = np.asarray(box, np.int64).reshape(-1, 4)
    y0 = np.clip(box[:, 0], 0, height)
    y1 = np.clip(box[:, 1], y0, height)
    x0 = np.clip(box[:, 2], 0, width)
    x1 = np.clip(box[:, 3], x0, width)
    return np.stack([y0, y1, x0, x1], axis=1)


def mix_images_reference(images, partner, weight, box):
    """See ``kernels.mix_images``; returns a new array."""
    own = images.astype(np.int64)
    other = own[partner]
    w = np.clip(weight.astype(np.int64), 0, 256).reshape(-1, 1, 1, 1)
    out = ((w * own + (256 - w) * other + 128) // 256).astype(np.uint8)
    for i, (y0, y1, x0, x1) in enumerate(clamped_boxes(box, images.shape[1], images.shape[2])):
        if y1 > y0 and x1 > x0:
            out[i, y0:y1, x0:x1] = images[partner[i], y0:y1, x0:x1]
    return out


def smoothed_one_hot(labels, num_classes, smoothing):
    """Float64 (N, C): ``smoothing / C`` everywhere, plus ``1 - smoothing`` at each label."""
    targets = np.full((len(labels), num_classes), smoothing / num_classes)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    return targets


def soft_targets_reference(labels, partner, lam, num_classes, smoothing):
    """See ``kernels.soft_targets``; returns float32 (N, C)."""
    lam = np.asarray(lam, np.float64).reshape(-1, 1)
    own = smoothed_one_hot(labels, num_classes, smoothing)
    other = smoothed_one_hot(labels[partner], num_classes, smoothing)
    return (lam * own + (1.0 - lam) * other).astype(np.float32)


def mixup_weight_reference(lam, lam_range=(0.0, 1.0)):
    """The fixed-point MixUp weight of a drawn λ: clipped to ``lam_range``, then rounded to 1/256ths."""
    return np.rint(np.clip(np.asarray(lam, np.float64), *lam_range) * 256).astype(np.int64)


def box_area_lam(box, height, width):
    """The λ a CutMix box implies: the fraction of the image left outside it."""
    box = np.asarray(box, np.int64)
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    return 1.0 - area / (height * width)


def mix_normalize_reference(images, partner, weight, box, scale, shift, channels_last):
    """See ``kernels.mix_normalize``; returns float32 (N, C', H, W) or (N, H, W, C')."""
    own = images.astype(np.float64)
    w = np.clip(weight.astype(np.float64), 0, 256).reshape(-1, 1, 1, 1) / 256
    pixels = w * own + (1 - w) * own[partner]
    for i, (y0, y1, x0, x1) in enumerate(clamped_boxes(box, images.shape[1], images.shape[2])):
        pixels[i, y0:y1, x0:x1] = own[partner[i], y0:y1, x0:x1]
    out_channels = len(scale)
    normalised = pixels[..., :out_channels] * np.asarray(scale) + np.asarray(shift)
    if not channels_last:
        normalised = normalised.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(normalised, dtype=np.float32)


def mix_images_planar_reference(images, partner, weight, box):
    """See ``kernels.mix_images_planar``: uint8 (N, H, W, C) in, uint8 (N, C, H, W) out."""
    return np.ascontiguousarray(mix_images_reference(images, partner, weight, box).transpose(0, 3, 1, 2))


def mix_normalize_planar_reference(images, partner, weight, box, scale, shift):
    """See ``kernels.mix_normalize_planar``: uint8 (N, C, H, W) in, float32 (N, C', H, W) out."""
    return mix_normalize_reference(images.transpose(0, 2, 3, 1), partner, weight, box, scale, shift,
                                   channels_last=False)


def mix_planes_reference(images, partner, weight, box):
    """See ``kernels.mix_planes``: uint8 (N, C, H, W) in and out."""
    return mix_images_planar_reference(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), partner, weight, box)
