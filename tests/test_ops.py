"""The mixing kernels against their NumPy oracle, and the properties of the drawn parameters over many seeds.

Everything here calls the Numba functions directly (no FFCV Loader), so it is fast; the loader tests check
the same operations end to end.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from ffmix import Mixing
from ffmix.ops.kernels import mix_images, mix_normalize, mix_normalize_from_pages, pair_targets, soft_targets
from ffmix.ops.params import MODE_BATCH, MODE_ELEM, MODE_PAIR, MODES, WEIGHT_ONE, draw_mix_params
from ffmix.ops.reference import (box_area_lam, mix_images_reference, mix_normalize_reference,
                                  mixup_weight_reference, soft_targets_reference)
from ffmix.ops.rng import batch_key, symmetric_beta

SEEDS = range(400)


def draw(key, n, height=10, width=14, mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5,
         mode=MODE_ELEM, lam_range=(0.0, 1.0)):
    mode_name = {number: name for name, number in MODES.items()}[mode]
    settings = Mixing(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob,
                      mode=mode_name, lam_range=lam_range).settings_record((height, width))
    return draw_mix_params(np.uint64(key), n, settings[0])


# ------------------------------------------------------------------------------ kernels vs the NumPy oracle

@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 9), height=st.integers(1, 13), width=st.integers(1, 13), channels=st.sampled_from([1, 3]),
       mode=st.sampled_from(sorted(MODES)), mixup_alpha=st.sampled_from([0.0, 0.2, 1.0]),
       cutmix_alpha=st.sampled_from([0.0, 0.5, 1.0]), mix_prob=st.sampled_from([0.5, 1.0]),
       key=st.integers(0, 2**64 - 1))
def test_mix_images_matches_reference_exactly(n, height, width, channels, mode, mixup_alpha, cutmix_alpha,
                                              mix_prob, key):
    rng = np.random.default_rng(key % 2**32)
    images = rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8)
    before = images.copy()
    partner, weight, box, _ = draw(key, n, height, width, mixup_alpha, cutmix_alpha, mix_prob, 0.5, MODES[mode])
    out = np.empty_like(images)
    mix_images(images, out, partner, weight, box)
    np.testing.assert_array_equal(out, mix_images_reference(images, partner, weight, box))
    np.testing.assert_array_equal(images, before)  # the input is only read


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 7), height=st.integers(1, 11), width=st.integers(1, 11), channels=st.sampled_from([1, 3]),
       keep_one=st.booleans(), channels_last=st.booleans(), mode=st.sampled_from(sorted(MODES)),
       key=st.integers(0, 2**64 - 1))
def test_mix_normalize_matches_reference(n, height, width, channels, keep_one, channels_last, mode, key):
    rng = np.random.default_rng(key % 2**32)
    images = rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8)
    out_channels = 1 if keep_one else channels
    scale = rng.uniform(0.001, 0.02, out_channels).astype(np.float32)
    shift = rng.uniform(-2, 2, out_channels).astype(np.float32)
    partner, weight, box, _ = draw(key, n, height, width, 0.5, 1.0, 0.9, 0.5, MODES[mode])
    shape = (n, height, width, out_channels) if channels_last else (n, out_channels, height, width)
    out = np.full(shape, np.nan, np.float32)
    mix_normalize(images, out, partner, weight, box, scale, shift, channels_last)
    expected = mix_normalize_reference(images, partner, weight, box, scale, shift, channels_last)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 9), height=st.integers(1, 35), width=st.integers(1, 35), channels=st.sampled_from([1, 3]),
       keep_one=st.booleans(), channels_last=st.booleans(), mode=st.sampled_from(sorted(MODES)),
       key=st.integers(0, 2**64 - 1))
def test_mix_normalize_from_pages_equals_mix_normalize_bit_for_bit(n, height, width, channels, keep_one,
                                                                   channels_last, mode, key):
    # The samples lie scattered in a larger "file" in shuffled order, as in a .beton's pages.
    rng = np.random.default_rng(key % 2**32)
    pages = rng.integers(0, 256, (3 * n, height, width, channels), dtype=np.uint8)
    stored_at = rng.permutation(3 * n)[:n]
    images = pages[stored_at]
    sources = np.array([pages[k].ctypes.data for k in stored_at], np.uint64)
    out_channels = 1 if keep_one else channels
    scale = rng.uniform(0.001, 0.02, out_channels).astype(np.float32)
    shift = rng.uniform(-2, 2, out_channels).astype(np.float32)
    partner, weight, box, _ = draw(key, n, height, width, 0.5, 1.0, 0.9, 0.5, MODES[mode])
    shape = (n, height, width, out_channels) if channels_last else (n, out_channels, height, width)
    from_batch, from_pages = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    mix_normalize(images, from_batch, partner, weight, box, scale, shift, channels_last)
    mix_normalize_from_pages(sources, from_pages, partner, weight, box, scale, shift, channels_last, channels)
    np.testing.assert_array_equal(from_pages.view(np.uint32), from_batch.view(np.uint32))
    np.testing.assert_allclose(from_pages, mix_normalize_reference(images, partner, weight, box, scale, shift,
                                                                   channels_last), rtol=1e-5, atol=1e-5)


def test_blend_rounds_to_nearest_instead_of_truncating():
    # 0.5 * 1 + 0.5 * 2 = 1.5 rounds to 2 (a float-to-uint8 cast truncates it to 1); 3/4 * 255 = 191.25 -> 191.
    images = np.array([1, 2, 255, 0], np.uint8).reshape(4, 1, 1, 1)
    out = np.empty_like(images)
    mix_images(images, out, np.array([1, 0, 3, 2]), np.array([128, 128, 192, 64], np.int32), np.zeros((4, 4), np.int32))
    assert out.ravel().tolist() == [2, 2, 191, 191]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 12), num_classes=st.integers(1, 7), smoothing=st.sampled_from([0.0, 0.1, 0.3]),
       key=st.integers(0, 2**64 - 1), mode=st.sampled_from(sorted(MODES)))
def test_soft_targets_match_reference(n, num_classes, smoothing, key, mode):
    labels = np.random.default_rng(key % 2**32).integers(0, num_classes, n)
    partner, _, _, lam = draw(key, n, mode=MODES[mode])
    out = np.full((n, num_classes), np.nan, np.float32)
    assert soft_targets(labels, partner, lam, num_classes, smoothing, out)
    np.testing.assert_allclose(out, soft_targets_reference(labels, partner, lam, num_classes, smoothing), atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_soft_targets_when_partners_share_a_class():
    # FFCV's MixupToOneHot writes lam and then 1 - lam into the same cell, so such a row sums to 1 - lam.
    out = np.zeros((2, 3), np.float32)
    assert soft_targets(np.array([2, 2]), np.array([1, 0]), np.array([0.7, 0.7]), 3, 0.0, out)
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 0, 1]])


def test_label_smoothing_values_are_exact():
    num_classes, smoothing = 4, 0.2
    out = np.zeros((2, num_classes), np.float32)
    soft_targets(np.array([0, 3]), np.array([0, 1]), np.array([1.0, 1.0]), num_classes, smoothing, out)
    off, on = smoothing / num_classes, 1 - smoothing + smoothing / num_classes
    np.testing.assert_array_equal(out, np.array([[on, off, off, off], [off, off, off, on]], np.float32))


def test_out_of_range_labels_are_reported_not_written():
    out = np.zeros((2, 3), np.float32)
    assert not soft_targets(np.array([0, 3]), np.array([1, 0]), np.ones(2), 3, 0.0, out)
    assert not soft_targets(np.array([-1, 0]), np.array([1, 0]), np.ones(2), 3, 0.0, out)


def test_pair_targets_carry_both_labels_and_lambda():
    out = np.zeros((3, 3), np.float32)
    pair_targets(np.array([4, 5, 6]), np.array([2, 0, 1]), np.array([0.25, 1.0, 0.5]), out)
    np.testing.assert_array_equal(out, [[4, 6, 0.25], [5, 4, 1.0], [6, 5, 0.5]])


# ------------------------------------------------------------------------- properties of the parameters

@pytest.mark.parametrize("mode", [MODE_BATCH, MODE_PAIR, MODE_ELEM])
@pytest.mark.parametrize("n", [2, 3, 8, 33])
def test_parameters_are_consistent_over_many_seeds(mode, n):
    height, width = 10, 14   # not square: the box and λ must agree in both directions
    for seed in SEEDS:
        partner, weight, box, lam = draw(seed * 7919 + 1, n, height, width, mode=mode)
        assert sorted(set(partner.tolist())) == sorted(set(partner.tolist()) & set(range(n)))
        assert (partner != np.arange(n)).all(), "nobody is their own partner"
        assert ((lam >= 0) & (lam <= 1)).all()
        cut = (box[:, 1] > box[:, 0]) & (box[:, 3] > box[:, 2])
        assert (weight[cut] == WEIGHT_ONE).all()   # a sample is either blended or cut, not both
        np.testing.assert_allclose(lam[cut], box_area_lam(box[cut], height, width), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(lam[~cut], weight[~cut] / WEIGHT_ONE)   # labels use the quantised λ
        assert (box[:, 0] >= 0).all() and (box[:, 1] <= height).all()
        assert (box[:, 2] >= 0).all() and (box[:, 3] <= width).all()
        if mode == MODE_BATCH:
            assert len(set(lam.tolist())) == 1
        if mode == MODE_PAIR:
            for i in range(n):
                assert lam[i] == lam[partner[i]] and (box[i] == box[partner[i]]).all()


def test_pairs_are_mutual_except_the_odd_one_out():
    for seed in SEEDS:
        for n in (6, 7):
            partner = draw(seed, n)[0]
            mutual = partner[partner] == np.arange(n)
            assert mutual.sum() == (n if n % 2 == 0 else n - 1)


def test_a_batch_of_one_is_left_alone():
    partner, weight, box, lam = draw(5, 1)
    assert partner.tolist() == [0] and weight.tolist() == [WEIGHT_ONE] and lam.tolist() == [1.0]
    assert not box.any()


@pytest.mark.parametrize("mix_prob", [0.0, 0.3, 1.0])
def test_mix_prob_is_the_fraction_of_mixed_samples(mix_prob):
    mixed = []
    for seed in SEEDS:
        _, weight, box, _ = draw(seed, 16, mix_prob=mix_prob, mode=MODE_ELEM)
        mixed.extend(((weight != WEIGHT_ONE) | (box[:, 1] > box[:, 0])).tolist())
    # λ can round to 256/256 or give an empty box even when mixed, so the fraction may be slightly lower.
    assert mix_prob - 0.06 <= np.mean(mixed) <= mix_prob + 0.02


@pytest.mark.parametrize("switch_prob", [0.0, 0.25, 1.0])
def test_switch_prob_chooses_cutmix(switch_prob):
    cut = []
    for seed in SEEDS:
        _, weight, box, _ = draw(seed, 2, mode=MODE_BATCH, switch_prob=switch_prob)
        cut.append(bool(box[0, 1] > box[0, 0]) or weight[0] == WEIGHT_ONE and switch_prob > 0)
    assert abs(np.mean(cut) - switch_prob) < 0.07


def test_only_the_configured_augmentation_is_used():
    for seed in SEEDS:
        _, weight, box, _ = draw(seed, 8, mixup_alpha=0.5, cutmix_alpha=0.0)
        assert not box.any()
        _, weight, box, _ = draw(seed, 8, mixup_alpha=0.0, cutmix_alpha=0.5)
        assert (weight == WEIGHT_ONE).all()


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_lambda_follows_beta(alpha):
    state = np.array([batch_key(1, 2, np.arange(3, dtype=np.uint64))], np.uint64)
    draws = np.array([symmetric_beta(state, alpha) for _ in range(20000)])
    assert ((draws >= 0) & (draws <= 1)).all()
    assert abs(draws.mean() - 0.5) < 0.01
    assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.01


@pytest.mark.parametrize("mode", [MODE_BATCH, MODE_PAIR, MODE_ELEM])
@pytest.mark.parametrize("lam_range", [(0.1, 0.9), (0.3, 0.3), (0.0, 0.5)])
def test_lam_range_clips_lambda_before_quantisation(mode, lam_range):
    """Clipping draws nothing, so the same key gives the same stream: the clipped weights are the unclipped
    ones passed through the reference's clip-then-round, and MixUp λ (= weight / 256) stays in range."""
    low, high = lam_range
    for key in SEEDS:
        _, free_weight, _, free_lam = draw(key, 9, mixup_alpha=0.3, cutmix_alpha=0.0, mode=mode)
        partner, weight, box, lam = draw(key, 9, mixup_alpha=0.3, cutmix_alpha=0.0, mode=mode,
                                         lam_range=lam_range)
        # the unclipped weights were rounded from the same λ; rounding is monotone, so clip and round commute
        bounds = mixup_weight_reference([low, high])
        np.testing.assert_array_equal(weight, np.clip(free_weight, bounds[0], bounds[1]))
        assert (lam >= bounds[0] / 256).all() and (lam <= bounds[1] / 256).all()
        np.testing.assert_array_equal(lam, weight / 256)


@pytest.mark.parametrize("lam_range", [(0.1, 0.9), (0.6, 0.8)])
def test_lam_range_bounds_cutmix_boxes(lam_range):
    """A CutMix box covers at most 1 - low of the image, up to the rounding of its sides (clipping the box
    to the image only shrinks it, so λ may exceed ``high`` at the borders but never fall below ``low``)."""
    height, width = 20, 24
    rounding = (height + width + 1) / (height * width)
    for key in SEEDS:
        _, _, box, lam = draw(key, 8, height, width, mixup_alpha=0.0, cutmix_alpha=1.0, lam_range=lam_range)
        np.testing.assert_allclose(lam, box_area_lam(box, height, width))
        assert (lam >= lam_range[0] - rounding).all()


def test_same_key_same_parameters_and_keys_differ_by_epoch_seed_and_samples():
    indices = np.arange(10, 20, dtype=np.uint64)
    assert batch_key(0, 1, indices) == batch_key(0, 1, indices.copy())
    keys = {batch_key(0, 1, indices), batch_key(0, 2, indices), batch_key(1, 1, indices),
            batch_key(0, 1, indices[::-1].copy())}
    assert len(keys) == 4
    first, second = draw(batch_key(0, 1, indices), 10), draw(batch_key(0, 1, indices), 10)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_global_random_states_are_untouched():
    """Other random ops in a pipeline (FFCV's flips and crops use Numba's np.random) must not be disturbed."""
    settings = Mixing(mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem").settings_record((10, 14))[0]

    @njit
    def next_numba_draw(call_ffmix, settings):
        np.random.seed(7)
        np.random.random()
        if call_ffmix:
            draw_mix_params(np.uint64(3), 8, settings)
        return np.random.random()

    assert next_numba_draw(True, settings) == next_numba_draw(False, settings)
    np.random.seed(11)
    expected = np.random.random(2)
    np.random.seed(11)
    draw(3, 8)
    mix_images(np.zeros((2, 2, 2, 3), np.uint8), np.zeros((2, 2, 2, 3), np.uint8), np.array([1, 0]),
               np.array([100, 100], np.int32), np.zeros((2, 4), np.int32))
    np.testing.assert_array_equal(np.random.random(2), expected)


# --------------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("options, message", [
    (dict(mixup_alpha=-0.1), "mixup_alpha"),
    (dict(cutmix_alpha=float("nan")), "cutmix_alpha"),
    (dict(mix_prob=1.5), "mix_prob"),
    (dict(switch_prob=-0.01), "switch_prob"),
    (dict(label_smoothing=2), "label_smoothing"),
    (dict(mode="rows"), "mode"),
    (dict(seed=-1), "seed"),
    (dict(mixup_alpha=1, lam_range=(0.9, 0.1)), "lam_range"),
    (dict(mixup_alpha=1, lam_range=(0.1,)), "lam_range"),
    (dict(cutmix_alpha=1, image_size=(0, 5)), "image_size"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Mixing(**options)


def test_label_op_checks_its_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        Mixing(mixup_alpha=1).label_op(0)
    with pytest.raises(ValueError, match="targets"):
        Mixing(mixup_alpha=1).label_op(3, targets="dense")
