"""Progressive resolution: ``MixLoader.set_image_size`` between epochs and ``ffmix train --res-schedule``.

The file holds black (class 0) and white (class 1) images of varying sizes: an image's mean brightness / 255
equals its target's weight on class 1 only if the CutMix boxes are cut in the size the images have, so a
box left at the old size after a change shows.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from ffmix import FfmixError, make_loader
from ffmix.convert import convert_arrays
from ffmix.train.resolution import ResSchedule

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 64)
    images = [np.full((int(rng.integers(20, 44)), int(rng.integers(20, 44)), 3), 255 * label, np.uint8)
              for label in labels]
    path = tmp_path_factory.mktemp("res") / "bw.beton"
    convert_arrays(images, labels, path, write_mode="jpg", class_names=["black", "white"])
    return path


def loader_of(beton, size, **options):
    return make_loader(beton, batch_size=8, image_size=size, mixup_alpha=0.5, cutmix_alpha=1.0, mode="elem",
                       hflip=True, seed=4, num_workers=2, dtype=torch.uint8, normalize=False, **options)


def epoch_of(loader):
    out = []
    for images, targets in loader:
        out.append((images.clone(), targets.clone()))
        gc.collect()
    return out


def assert_pixels_match_targets(run):
    images = torch.cat([b[0] for b in run]).float()
    targets = torch.cat([b[1] for b in run])
    share = images.mean(dim=(1, 2, 3)) / 255.0
    np.testing.assert_allclose(share.numpy(), targets[:, 1].numpy(), atol=0.02)


def test_size_changes_at_the_next_epoch_with_boxes_in_the_new_size(beton):
    loader = loader_of(beton, 16)
    first = epoch_of(loader)
    loader.set_image_size((24, 20))
    assert loader.image_size == (24, 20)
    second = epoch_of(loader)
    loader.set_image_size(12)
    running = iter(loader)
    images, _ = next(running)                    # a new epoch: no batch of the old size is left in the ring
    assert images.shape[2:] == (12, 12)
    running.close()
    assert {tuple(b[0].shape[2:]) for b in first} == {(16, 16)}
    assert {tuple(b[0].shape[2:]) for b in second} == {(24, 20)}
    assert_pixels_match_targets(first)
    assert_pixels_match_targets(second)
    assert torch.cat([b[1] for b in second])[:, 1].unique().numel() > 4    # mixed, not only 0 and 1


def test_a_size_change_is_deterministic_and_equals_a_loader_made_at_that_size(beton):
    changed = loader_of(beton, 16)
    original = epoch_of(changed)
    changed.set_image_size(24)
    after_change = epoch_of(changed)
    fresh = loader_of(beton, 24)
    fresh.set_epoch(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after_change, epoch_of(fresh)))
    # and back: epoch 0 at 16 again is the first epoch replayed (that first epoch came from a fresh loader, and
    # a fresh loader equalling a changed one is checked just above, so no third loader is built for it)
    changed.set_epoch(0)
    changed.set_image_size(16)
    replay = epoch_of(changed)
    assert len(replay) == len(original) == len(changed)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(replay, original))


def test_set_image_size_is_refused_for_images_used_as_stored(tmp_path):
    path = tmp_path / "fixed.beton"
    convert_arrays(np.zeros((16, 8, 8, 3), np.uint8), np.arange(16) % 2, path)
    loader = make_loader(path, batch_size=4)
    loader.set_image_size(8)                      # the size it has: nothing to change
    with pytest.raises(FfmixError, match=r"set_image_size\(6\) needs a loader that crops its images, and this "
                                         "one uses them as stored"):
        loader.set_image_size(6)
    with pytest.raises(FfmixError, match="image_size must be a positive int"):
        loader.set_image_size(0)


def reference_size(low, high, start, end, epoch):
    """FFCV's ImageNet recipe rule, written out: 1-based epoch numbers, multiples of 32 when both ends are."""
    number = epoch + 1
    if number <= start:
        return low
    if number >= end:
        return high
    exact = low + (high - low) * (number - start) / (end - start)
    step = 32 if low % 32 == 0 and high % 32 == 0 else 1
    return int(np.round(exact / step)) * step


@pytest.mark.parametrize("text", ["160:192:10:13", "128:224:2:9", "24:32:1:5", "192:160:3:6", "96:96:1:1"])
def test_res_schedule_sizes_per_epoch(text):
    schedule = ResSchedule.parse(text)
    sizes = [schedule.size_at(epoch) for epoch in range(16)]
    assert sizes == [reference_size(*map(int, text.split(":")), epoch) for epoch in range(16)]
    assert sizes[0] == schedule.low and sizes[-1] == schedule.high
    steps = np.diff(sizes)
    assert (steps >= 0).all() or (steps <= 0).all()
    recipe = ResSchedule.parse("160:192:10:13")
    assert (recipe.size_at(10), recipe.size_at(11)) == (160, 192)


@pytest.mark.parametrize("text", ["160:192:10", "a:b:c:d", "160:192:5:3", "0:32:1:2"])
def test_bad_res_schedules_are_refused(text):
    with pytest.raises(FfmixError, match="--res-schedule"):
        ResSchedule.parse(text)


def test_resumed_run_in_the_middle_of_a_schedule_ends_with_the_same_weights(tmp_path, capsys):
    from test_train import assert_same_tensors, pattern_images, read_metrics, state_of, train

    rng = np.random.default_rng(7)
    images, labels = [], []
    for size_seed in range(32):   # 2 steps of 16 per epoch: bit-equal weights need no more
        gray, label = pattern_images(1, int(rng.integers(18, 30)), seed=size_seed)
        images.append(np.repeat(gray[0][:, :, None], 3, axis=2))
        labels.append(int(label[0]))
    path = tmp_path / "varied.beton"
    convert_arrays(images, np.array(labels), path, write_mode="jpg")
    recipe = ["--train", path, "--val", path, "--image-size", "16", "--res-schedule", "12:16:1:3", "--model",
              "tiny", "--epochs", "3", "--batch-size", "16", "--lr", "0.1", "--mixup-alpha", "0.4",
              "--cutmix-alpha", "1.0", "--seed", "5", "--device", "cpu", "--workers", "2"]
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    assert train(recipe + ["--out", full_dir], capsys)[0] == 0
    code, out, err = train(recipe + ["--out", resumed_dir, "--stop-after-epoch", "2"], capsys)
    assert code == 0 and "stopped after epoch 2 of 3" in out, err
    assert train(recipe + ["--out", resumed_dir, "--resume"], capsys)[0] == 0
    assert [m["image_size"] for m in read_metrics(full_dir)] == [[12, 12], [14, 14], [16, 16]]
    assert [m["image_size"] for m in read_metrics(resumed_dir)] == [[12, 12], [14, 14], [16, 16]]
    assert_same_tensors(state_of(full_dir / "last.pt")["model"], state_of(resumed_dir / "last.pt")["model"], "model")


def test_a_schedule_that_starts_at_the_stored_size_is_refused_before_training(tmp_path, capsys):
    from ffmix import cli

    path = tmp_path / "fixed.beton"
    convert_arrays(np.zeros((32, 16, 16, 3), np.uint8), np.arange(32) % 2, path)
    code = cli.main(["train", "--train", str(path), "--val", str(path), "--res-schedule", "16:24:1:2",
                     "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 1
    assert "--res-schedule 16:24:1:2 starts at the stored size of the --train images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
