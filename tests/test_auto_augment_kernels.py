"""The fast RandAugment kernels against references that do not depend on the CPU torch runs on.

``test_auto_augment.py`` compares every op with torchvision itself; these tests pin the kernels' own arithmetic:
the geometric ops against a NumPy model of torchvision's float32 grid (``geometric_reference``) at full size,
where the row-wise warp and the run copies of the translations matter, and the lookup-table colour ops over
every input level and many factors (a table entry must be what the per-pixel float32 arithmetic gives).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from augment_ops import apply_each

from ffmix.ops.auto_augment import augment_images
from ffmix.ops.auto_augment_draws import RAND_AUGMENT, TRIVIAL_AUGMENT, op_magnitude
from ffmix.ops.auto_augment_kernels import (AUTO_CONTRAST, BRIGHTNESS, CONTRAST, EQUALIZE, IDENTITY, OP_NAMES,
                                            POSTERIZE, ROTATE, SHARPNESS, SHEAR_X, SOLARIZE, apply_op)
from ffmix.ops.auto_augment_reference import geometric_reference, tv_apply
from ffmix.ops.settings import AUGMENT_SETTINGS, make_record, named_fields

GEOMETRIC = range(SHEAR_X, ROTATE + 1)


def _magnitudes(op, height, width):
    magnitudes = {op_magnitude(policy, op, b, 31, height, width) for policy in (RAND_AUGMENT, TRIVIAL_AUGMENT)
                  for b in range(31)}
    return sorted(magnitudes | {-m for m in magnitudes})


@pytest.mark.parametrize("op", GEOMETRIC, ids=[OP_NAMES[op] for op in GEOMETRIC])
@pytest.mark.parametrize("size", [(224, 224), (13, 17), (31, 20)])
def test_geometric_ops_match_the_numpy_grid_at_every_magnitude(op, size):
    height, width = size
    images = np.random.default_rng(height * width + op).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    for magnitude in _magnitudes(op, height, width):
        out = apply_each(images, op, magnitude, False)
        for image, result in zip(images, out):
            np.testing.assert_array_equal(result, geometric_reference(image, OP_NAMES[op], magnitude),
                                          err_msg=f"{OP_NAMES[op]} {magnitude}")


def test_translations_by_more_than_the_image_leave_zeros():
    image = np.full((8, 10, 3), 200, np.uint8)
    for op in (SHEAR_X + 2, SHEAR_X + 3):   # TranslateX, TranslateY
        for magnitude in (-40.0, 40.0, 10.0, -8.0):
            out = apply_each(image[None], op, magnitude, False)[0]
            np.testing.assert_array_equal(out, geometric_reference(image, OP_NAMES[op], magnitude))


def _every_level(count: int, seed: int) -> np.ndarray:
    """Images of 16 x 16 pixels whose every channel holds each of the 256 levels once (shuffled per channel),
    some with a narrower range (AutoContrast's and Equalize's statistics differ)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 16, 16, 3), np.uint8)
    for i in range(count):
        for ch in range(3):
            images[i, :, :, ch] = rng.permutation(256).reshape(16, 16)
    images[count // 2:] = images[count // 2:] // 2 + 40   # half the images: levels 40..167, twice each
    return images


LUT_OPS = (BRIGHTNESS, CONTRAST, POSTERIZE, SOLARIZE, AUTO_CONTRAST, EQUALIZE)


@pytest.mark.parametrize("op", LUT_OPS, ids=[OP_NAMES[op] for op in LUT_OPS])
def test_table_ops_equal_torchvision_over_every_level(op):
    """Every input level, 400 factors spread over [0, 2) and both tables' magnitudes (their float32 rounding is
    where a table built from different arithmetic would slip)."""
    images = _every_level(6, seed=op)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if op in (BRIGHTNESS, CONTRAST):
        magnitudes = sorted(set(np.linspace(-1.0, 1.0, 400, endpoint=False).tolist()) | set(_magnitudes(op, 16, 16)))
    elif op == SOLARIZE:
        magnitudes = sorted(set(np.linspace(0.0, 1.0, 300).tolist()) | set(_magnitudes(op, 16, 16)))
    elif op == POSTERIZE:
        magnitudes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    else:
        magnitudes = [0.0]
    for magnitude in magnitudes:
        expected = tv_apply(tensors, OP_NAMES[op], magnitude).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(apply_each(images, op, magnitude, False), expected,
                                      err_msg=f"{OP_NAMES[op]} {magnitude}")


def test_sharpness_on_every_level_and_flat_regions():
    """Sharpness over shuffled levels (every neighbourhood sum) and flat patches (its blend of a pixel with
    itself), at 200 factors, against torchvision."""
    images = _every_level(4, seed=11)
    images[1, 4:12, 4:12] = 97
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for magnitude in np.linspace(-1.0, 1.0, 200, endpoint=False).tolist():
        expected = tv_apply(tensors, "Sharpness", magnitude).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(apply_each(images, SHARPNESS, magnitude, False), expected,
                                      err_msg=f"Sharpness {magnitude}")


def test_identity_and_posterize_8_bits_write_nothing_in_place():
    images = _every_level(2, seed=3)
    in_place = images.copy()
    for op, magnitude in ((IDENTITY, 0.0), (POSTERIZE, 8.0)):
        for i in range(len(in_place)):
            apply_op(in_place[i], in_place[i], op, magnitude, False)
        np.testing.assert_array_equal(in_place, images)


def test_batch_op_is_the_same_whichever_buffer_ends_a_sample():
    """The batch op writes ops that read neighbours into the scratch image and back: each sample's result is
    its ops applied one after the other, whatever the number of such ops (0 to 3 here)."""
    settings = named_fields(make_record(AUGMENT_SETTINGS, seed=9, policy=RAND_AUGMENT, num_ops=3, magnitude_bin=20,
                                        num_bins=31, apply_prob=0.8, magnitude_std=0.0, max_bin=30, gray=0))
    images = np.random.default_rng(2).integers(0, 256, (24, 20, 23, 3), dtype=np.uint8)
    indices = np.arange(24, dtype=np.uint64) * np.uint64(7)
    out = images.copy()
    scratch = np.full_like(images, 13)
    augment_images(out, scratch, indices, 2, settings)
    from ffmix.ops.augment import sample_key
    from ffmix.ops.auto_augment_draws import AUTO_AUGMENT_STREAM, draw_sample_ops, signed_magnitude
    for i in range(len(images)):
        key = np.uint64(sample_key(9, 2, indices[i], AUTO_AUGMENT_STREAM))
        ops, bins, negated = draw_sample_ops(key, RAND_AUGMENT, 3, 20, 31, 0.8, 0.0, 30)
        expected = images[i].copy()
        for op, chosen, negative in zip(ops, bins, negated):
            magnitude = signed_magnitude(RAND_AUGMENT, op, chosen, 31, negative, 20, 23)
            following = np.empty_like(expected)
            apply_op(expected, following, op, magnitude, False)
            expected = following
        np.testing.assert_array_equal(out[i], expected, err_msg=f"sample {i}: ops {list(ops)}")


def test_sharpness_integer_smoothing_is_the_float32_sum_rounded():
    """``_smoothed_level`` (integers) against torchvision's arithmetic (nine float32 products of 1/13 and 5/13
    added in turn, rounded half to even) on two million random neighbourhoods, the all-0 and all-255 ones, and
    those whose true value is nearest a half level (sum = 13 n + 6 or 13 n + 7)."""
    from ffmix.ops.auto_augment_kernels import _smoothed_level

    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (2_000_000, 9))
    values[0], values[1] = 0, 255
    centre_at = 4
    weighted = values.sum(axis=1) + 4 * values[:, centre_at]
    assert np.isin(weighted % 13, (6, 7)).sum() > 200_000
    edge, centre = np.float32(1.0 / 13.0), np.float32(5.0 / 13.0)
    total = edge * values[:, 0].astype(np.float32)
    for position in range(1, 9):
        weight = centre if position == centre_at else edge
        total = total + weight * values[:, position].astype(np.float32)
    np.testing.assert_array_equal(_smoothed_level(weighted), np.rint(total).astype(np.int64))
