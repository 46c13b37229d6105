"""RandomErasing: the kernel's boxes and values against the Python reference over many seeds, the draws'
properties (chance, sizes inside the image), and ``make_loader(re_prob=...)`` end to end: erased batches equal
the reference applied to the unerased ones (allocation churn and ``gc.collect()`` between batches), targets are
unchanged, runs repeat for one and two workers."""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from ffmix import make_loader
from ffmix.convert import convert_arrays
from ffmix.errors import FfmixError
from ffmix.ops.augment_reference import sample_key
from ffmix.ops.erasing import ERASE_STREAM, MODES, RandomErasing, draw_erasures, erase_images
from ffmix.ops.erasing_reference import erase_reference, sample_erasures
from ffmix.ops.settings import ERASE_SETTINGS

BATCH = 16


def _erase(images, indices, epoch, settings):
    out = images.copy()
    erase_images(out, np.asarray(indices, np.uint64), epoch, settings)
    return out


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("max_count", [1, 3])
def test_kernel_matches_reference(mode, channels_last, max_count):
    settings = RandomErasing(0.7, mode=mode, max_count=max_count, channels_last=channels_last, seed=5).settings
    rng = np.random.default_rng(max_count)
    shape = (40, 11, 13, 3) if channels_last else (40, 3, 11, 13)
    images = rng.normal(size=shape).astype(np.float32)
    indices = rng.permutation(1000)[:40]
    for epoch in (0, 7):
        np.testing.assert_array_equal(_erase(images, indices, epoch, settings),
                                      erase_reference(images, indices, epoch, settings))


def test_draws_follow_timms_rules_over_many_samples():
    settings = RandomErasing(0.25, mode="rand", max_count=3, seed=1).settings
    height, width, erased, counts = 24, 30, 0, []
    for index in range(4000):
        key = sample_key(1, 0, index, int(ERASE_STREAM))
        boxes, used, colours, _ = draw_erasures(np.uint64(key), 3, height, width, **{
            name: settings[name] for name in ERASE_SETTINGS.names if name not in ("seed", "channels_last")})
        reference = sample_erasures(key, 3, height, width, settings)
        assert used == len(reference)
        erased += used > 0
        counts.append(used)
        for (top, left, box_h, box_w), (r_top, r_left, r_h, r_w, values) in zip(boxes[:used], reference):
            assert (top, left, box_h, box_w) == (r_top, r_left, r_h, r_w)
            assert 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
            assert box_h < height and box_w < width
        for b in range(used):
            np.testing.assert_array_equal(colours[b], reference[b][4][:, 0, 0])
    assert abs(erased / 4000 - 0.25) < 0.025
    assert set(counts) == {0, 1, 2, 3}


def test_options_are_checked():
    for kwargs in ({"probability": 1.5}, {"mode": "noise"}, {"max_count": 0}, {"min_count": 3, "max_count": 2},
                   {"min_area": 0.0}, {"seed": -1}):
        with pytest.raises(FfmixError):
            RandomErasing(**kwargs)


# ----------------------------------------------------------------------------------------------- the loader

@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = tmp_path_factory.mktemp("erasing") / "rgb.beton"
    rng = np.random.default_rng(3)
    convert_arrays(rng.integers(0, 256, (64, 12, 16, 3), dtype=np.uint8), rng.integers(0, 4, 64), path)
    return path


def _loader(path, **options):
    options.setdefault("num_workers", 2)
    return make_loader(path, batch_size=BATCH, order="sequential", mixup_alpha=0.5, cutmix_alpha=1.0, mode="elem",
                       seed=2, **options)


@pytest.mark.parametrize("mode, channels_last", [("pixel", False), ("rand", True)])
def test_loader_erases_as_the_reference_and_leaves_targets_alone(beton, mode, channels_last):
    plain = [(i.clone(), t.clone()) for i, t in _loader(beton, channels_last=channels_last)]
    erased = _loader(beton, channels_last=channels_last, re_prob=0.5, re_mode=mode, re_count=2)
    settings = RandomErasing(0.5, mode=mode, max_count=2, channels_last=channels_last, seed=2).settings
    keep, changed = [], 0
    for position, (images, targets) in enumerate(erased):
        assert torch.equal(targets, plain[position][1])
        layout = plain[position][0].permute(0, 2, 3, 1) if channels_last else plain[position][0]
        expected = erase_reference(layout.contiguous().numpy(), range(position * BATCH, (position + 1) * BATCH), 0,
                                   settings)
        got = images.permute(0, 2, 3, 1) if channels_last else images
        np.testing.assert_array_equal(got.numpy(), expected)
        changed += int((images != plain[position][0]).any(dim=(1, 2, 3)).sum())
        keep.extend(torch.full((k + 1, 3, 12, 16), 9.0) for k in range(8))   # allocation churn
        del keep[:-8]
        gc.collect()
    assert 0 < changed < len(plain) * BATCH


def test_same_erasures_for_one_and_two_workers(beton):
    runs = [[i.clone() for i, _ in _loader(beton, num_workers=w, re_prob=0.5, re_mode="pixel")] for w in (1, 2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_erasing_is_refused_for_uint8_output(beton):
    with pytest.raises(FfmixError, match="needs float output"):
        make_loader(beton, batch_size=BATCH, dtype=torch.uint8, normalize=False, re_prob=0.25)
