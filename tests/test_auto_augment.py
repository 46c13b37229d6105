"""RandAugment / TrivialAugmentWide against torchvision: the magnitude tables, every op at every magnitude bin
on many images, the per-sample draws, and the batch operation against its reference.

Agreement with ``torchvision.transforms.v2.functional`` (uint8 tensors, CPU): every op is pixel-exact here.
``PINNED`` holds, per op, the largest difference and share of differing pixels allowed; a change that makes an
op worse fails. Why the geometric and colour ops can be exact and where that could break (no FMA on the
CPU torch runs on, images over 256 x 256 for Contrast's mean): ``docs/auto_augment.md``. On a CPU whose BLAS
forms torch's sampling grid differently (seen on an AVX-512 Xeon) torchvision's own ShearX/ShearY move a few
pixels and those two cases fail; ``test_auto_augment_kernels.py`` pins the kernels on any CPU.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from augment_ops import apply_each, kernel_apply
from torchvision.transforms import v2 as tv2

from ffmix.ops.auto_augment import RandAugment, TrivialAugmentWide, augment_images
from ffmix.ops.auto_augment_draws import (RAND_AUGMENT, TRIVIAL_AUGMENT, draw_sample_ops, is_signed,
                                          linspace_f32, op_magnitude)
from ffmix.ops.auto_augment_kernels import (IDENTITY, NUM_OPS, OP_NAMES, POINTWISE, POSTERIZE, ROTATE, SHEAR_X,
                                           SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, apply_op, inverse_affine)
from ffmix.ops.auto_augment_reference import augment_reference, tv_apply
from ffmix.ops.auto_augment_reference import draw_sample_ops as draw_sample_ops_reference
from ffmix.ops.settings import AUGMENT_SETTINGS, make_record, named_fields

# op name -> (largest |difference| in levels, share of differing pixels) allowed against torchvision, away from
# ties (below).
PINNED = {name: (0, 0.0) for name in OP_NAMES}
# Ties: an output pixel whose nearest-neighbour sampling position lies half-way between two source pixels (or on
# the image's edge) in either axis. torchvision computes the positions as a float32 matrix product through the
# CPU's BLAS, whose summation order and FMA use differ between CPUs: on an AMD EPYC every tie agreed, on an Intel
# Xeon (AVX-512) one pixel in ~20,000 of the shear tests took the other neighbour. ffmix's kernel is the same on
# every machine; where torchvision itself is not, only the ties may differ, and few of them.
TIE_TOLERANCE = 1e-3      # pixels; float32 positions here are exact to ~1e-5
MAX_TIE_SHARE = 1e-3      # of all values compared


def _ties(op: int, magnitude: float, height: int, width: int) -> np.ndarray:
    """bool (H, W): where ``op``'s sampling position (float64, from the inverse matrix torchvision builds) is
    within ``TIE_TOLERANCE`` of a half-integer in either axis; all False for the ops that do not resample."""
    angle = magnitude % 360.0
    if op not in GEOMETRIC or (op == ROTATE and (angle in (0.0, 180.0) or (height == width and angle in (90.0, 270.0)))):
        return np.zeros((height, width), bool)
    matrix = inverse_affine(op, magnitude, height, width)
    yc, xc = np.mgrid[:height, :width].astype(np.float64)
    yc -= (height - 1) / 2
    xc -= (width - 1) / 2
    x = xc * matrix[0] + yc * matrix[1] + matrix[2] + width / 2 - 0.5
    y = xc * matrix[3] + yc * matrix[4] + matrix[5] + height / 2 - 0.5
    return (np.abs(x - np.floor(x) - 0.5) < TIE_TOLERANCE) | (np.abs(y - np.floor(y) - 0.5) < TIE_TOLERANCE)
GEOMETRIC = (SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE)
POLICIES = {RAND_AUGMENT: tv2.RandAugment, TRIVIAL_AUGMENT: tv2.TrivialAugmentWide}


def _images(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Noise (every rounding case of the geometric ops), low-contrast noise (AutoContrast, Equalize), ramps
    (smooth content), flat images (AutoContrast's and Equalize's degenerate cases)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    quarter = count // 4
    images[quarter:2 * quarter] = rng.integers(60, 140, (quarter, height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    ramp = ((yy * 7 + xx * 5)[..., None] + np.array([0, 40, 90]))[None] % 256
    images[2 * quarter:3 * quarter] = ramp + rng.integers(0, 3, (quarter, 1, 1, 3))
    images[-1] = 77
    return images


@pytest.fixture(scope="module")
def batches():
    """A non-square and a square batch (the square one takes ``rotate``'s 90/270-degree fast path)."""
    return [_images(12, 13, 17, seed=1), _images(8, 16, 16, seed=2)]


# -------------------------------------------------------------------------------------- tables and draws

@pytest.mark.parametrize("steps", [2, 11, 31, 101])
def test_linspace_f32_is_torchs(steps):
    ends = [0.3, 0.9, 0.99, 30.0, 135.0, 32.0] + [150.0 / 331.0 * size for size in range(1, 400, 7)]
    for start, end in [(0.0, end) for end in ends] + [(1.0, 0.0)]:
        ours = np.array([linspace_f32(start, end, steps, i) for i in range(steps)], np.float32)
        np.testing.assert_array_equal(ours, torch.linspace(start, end, steps).numpy())


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("num_bins", [31, 11])
def test_magnitude_tables_are_torchvisions(policy, num_bins):
    space = POLICIES[policy]._AUGMENTATION_SPACE
    assert tuple(space) == OP_NAMES
    for height, width in [(32, 32), (224, 224), (13, 17)]:
        for op, (name, (table_of, signed)) in enumerate(space.items()):
            assert bool(is_signed(op)) == signed, name
            table = table_of(num_bins, height, width)
            for magnitude_bin in range(num_bins):
                expected = 0.0 if table is None else float(table[magnitude_bin])
                assert op_magnitude(policy, op, magnitude_bin, num_bins, height, width) == expected, (name, magnitude_bin)


def test_draws_match_the_python_reference():
    cases = [(RAND_AUGMENT, 2, 9, 31, 1.0, 0.0, 30), (RAND_AUGMENT, 3, 27, 31, 0.5, 1.5, 30),
             (RAND_AUGMENT, 2, 27, 31, 0.5, math.inf, 30), (RAND_AUGMENT, 2, 20, 31, 0.5, 4.0, 24),
             (TRIVIAL_AUGMENT, 1, 0, 31, 1.0, 0.0, 30)]
    for case in cases:
        for key in range(0, 2**64 - 1, 2**64 // 97):
            ops, bins, negated = draw_sample_ops(np.uint64(key), *case)
            assert (list(ops), list(bins), list(negated)) == draw_sample_ops_reference(key, *case)


def test_draws_are_uniform_and_fair():
    count = 20000
    keys = np.arange(count, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    draws = [draw_sample_ops(key, TRIVIAL_AUGMENT, 1, 0, 31, 1.0, 0.0, 30) for key in keys]
    ops = np.array([d[0][0] for d in draws])
    bins = np.array([d[1][0] for d in draws])
    negated = np.array([d[2][0] for d in draws])
    expected = count / NUM_OPS
    assert np.abs(np.bincount(ops, minlength=NUM_OPS) - expected).max() < 5 * math.sqrt(expected)
    assert np.abs(np.bincount(bins, minlength=31) - count / 31).max() < 5 * math.sqrt(count / 31)
    assert abs(negated.mean() - 0.5) < 0.02
    # timm's apply chance and magnitude noise: half the slots are identity, the noisy bin centres on the magnitude
    noisy = [draw_sample_ops(key, RAND_AUGMENT, 2, 27, 31, 0.5, 1.5, 30) for key in keys[:5000]]
    skipped = np.mean([list(d[0]) == [IDENTITY, IDENTITY] for d in noisy])
    assert abs(skipped - (0.5 + 0.5 / NUM_OPS) ** 2) < 0.03
    noisy_bins = np.concatenate([d[1] for d in noisy])
    assert noisy_bins.max() <= 30 and abs(noisy_bins.mean() - 26.8) < 0.2 and 1.2 < noisy_bins.std() < 1.8


# ------------------------------------------------------------------------------ each op against torchvision

@pytest.mark.parametrize("op", range(NUM_OPS), ids=OP_NAMES)
def test_op_agrees_with_torchvision_at_every_magnitude(op, batches):
    """Every bin of both policies' tables, both signs, on 20 images of two sizes."""
    name = OP_NAMES[op]
    worst, differing, tie_differing, total = 0, 0, 0, 0
    for images in batches:
        height, width = images.shape[1:3]
        tensors = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        magnitudes = {op_magnitude(policy, op, b, 31, height, width) for policy in POLICIES for b in range(31)}
        if is_signed(op):
            magnitudes |= {-m for m in magnitudes}
        for magnitude in sorted(magnitudes):
            expected = tv_apply(tensors, name, magnitude).permute(0, 2, 3, 1).numpy()
            difference = np.abs(apply_each(images, op, magnitude, False).astype(np.int16) - expected)
            ties = _ties(op, magnitude, height, width)
            at_ties = difference * ties[None, :, :, None]
            difference -= at_ties
            worst = max(worst, int(difference.max()))
            differing += int(np.count_nonzero(difference))
            tie_differing += int(np.count_nonzero(at_ties.any(axis=3)))
            total += difference.size
    allowed_max, allowed_share = PINNED[name]
    assert worst <= allowed_max and differing / total <= allowed_share, (name, worst, differing / total)
    assert tie_differing <= MAX_TIE_SHARE * total, (name, tie_differing, total)


@pytest.mark.parametrize("op", POINTWISE, ids=[OP_NAMES[op] for op in POINTWISE])
def test_pointwise_ops_may_write_over_their_input(op, batches):
    images = batches[0]
    magnitude = op_magnitude(TRIVIAL_AUGMENT, op, 20, 31, *images.shape[1:3])
    expected = apply_each(images, op, magnitude, False)
    in_place = images.copy()
    for i in range(len(in_place)):
        apply_op(in_place[i], in_place[i], op, magnitude, False)
    np.testing.assert_array_equal(in_place, expected)


@pytest.mark.parametrize("op", range(NUM_OPS), ids=OP_NAMES)
def test_grayscale_ops_act_as_torchvision_on_one_channel(op, batches):
    gray = batches[0][..., :1]
    three = np.ascontiguousarray(np.repeat(gray, 3, axis=3))
    tensors = torch.from_numpy(np.ascontiguousarray(gray)).permute(0, 3, 1, 2).contiguous()
    for magnitude_bin in (0, 9, 30):
        magnitude = op_magnitude(TRIVIAL_AUGMENT, op, magnitude_bin, 31, *gray.shape[1:3])
        expected = tv_apply(tensors, OP_NAMES[op], magnitude).permute(0, 2, 3, 1).numpy()
        out = apply_each(three, op, magnitude, True)
        away = ~_ties(op, magnitude, *gray.shape[1:3])          # ties: see _ties
        np.testing.assert_array_equal(out[:, away], np.repeat(expected, 3, axis=3)[:, away], err_msg=OP_NAMES[op])


def test_posterize_bins_cover_torchvisions_bit_counts():
    bits = {op_magnitude(RAND_AUGMENT, POSTERIZE, b, 31, 8, 8) for b in range(31)}
    assert bits == {4.0, 5.0, 6.0, 7.0, 8.0}


# -------------------------------------------------------------------------------------- the batch operation

def _settings(**fields):
    return named_fields(make_record(AUGMENT_SETTINGS, **fields))


SETTINGS = [_settings(seed=3, policy=RAND_AUGMENT, num_ops=2, magnitude_bin=9, num_bins=31, apply_prob=1.0,
                      magnitude_std=0.0, max_bin=30, gray=0),
            _settings(seed=5, policy=RAND_AUGMENT, num_ops=3, magnitude_bin=27, num_bins=31, apply_prob=0.5,
                      magnitude_std=1.5, max_bin=30, gray=0),
            TrivialAugmentWide(seed=7).settings]


def _run(images, indices, epoch, settings):
    out = images.copy()
    augment_images(out, np.empty_like(out), np.asarray(indices, np.uint64), epoch, settings)
    return out


@pytest.mark.parametrize("settings", SETTINGS, ids=["ra-2-9", "timm-3-27-mstd", "trivial"])
def test_batch_op_matches_reference(settings):
    images = _images(16, 12, 15, seed=4)
    indices = np.arange(100, 116)[::-1]
    for epoch in (0, 3):
        np.testing.assert_array_equal(_run(images, indices, epoch, settings),
                                      augment_reference(images, indices, epoch, settings, apply=kernel_apply))


def test_a_samples_ops_depend_only_on_seed_epoch_and_index():
    settings = SETTINGS[0]
    images = _images(8, 12, 15, seed=5)
    indices = np.array([40, 2, 17, 9, 33, 5, 21, 8])
    whole = _run(images, indices, 1, settings)
    order = np.random.default_rng(0).permutation(8)
    shuffled = _run(images[order], indices[order], 1, settings)
    np.testing.assert_array_equal(shuffled, whole[order])
    singles = np.concatenate([_run(images[i:i + 1], indices[i:i + 1], 1, settings) for i in range(8)])
    np.testing.assert_array_equal(singles, whole)
    assert not np.array_equal(_run(images, indices, 2, settings), whole)          # epochs differ
    other_seed = _settings(**{**{name: settings[name] for name in AUGMENT_SETTINGS.names}, "seed": 4})
    assert not np.array_equal(_run(images, indices, 1, other_seed), whole)       # seeds differ


def test_constructors_refuse_out_of_range_values():
    from ffmix.errors import FfmixError
    for kwargs in ({"magnitude": 31}, {"num_ops": -1}, {"num_magnitude_bins": 1}, {"apply_prob": 1.5},
                   {"magnitude_std": -1.0}, {"max_magnitude": 40}, {"seed": -1}):
        with pytest.raises(FfmixError):
            RandAugment(**kwargs)
    with pytest.raises(FfmixError):
        TrivialAugmentWide(num_magnitude_bins=0)
