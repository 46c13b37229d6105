"""``make_loader(auto_augment=...)`` end to end, and timm's config strings: the augmented batches equal the
reference applied to the decoded pixels (with allocation churn and ``gc.collect()`` between batches), runs repeat
for one and two workers, ``set_epoch`` replays, and every timm option is read or refused, never ignored."""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch
from augment_ops import kernel_apply

from ffmix import RandAugment, TrivialAugmentWide, make_loader
from ffmix.convert import convert_arrays
from ffmix.errors import FfmixError
from ffmix.ops.auto_augment_config import parse_auto_augment
from ffmix.ops.auto_augment_reference import augment_reference

BATCH = 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto_augment")
    rng = np.random.default_rng(8)
    paths = {"rgb": root / "rgb.beton", "gray": root / "gray.beton"}
    convert_arrays(rng.integers(0, 256, (100, 14, 18, 3), dtype=np.uint8), rng.integers(0, 4, 100), paths["rgb"])
    convert_arrays(rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), rng.integers(0, 3, 40), paths["gray"])
    return paths


def _uint8(path, **options):
    options.setdefault("num_workers", 2)
    return make_loader(path, batch_size=BATCH, dtype=torch.uint8, normalize=False, **options)


def _nhwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def _churn(keep: list) -> None:
    for size in range(1, 40):
        keep.append(np.full((size, 14, 18, 3), 255, np.uint8))
    del keep[:-16]
    gc.collect()


@pytest.fixture(scope="module")
def raw(files):
    """The decoded pixels of each sequential batch: what every reference starts from."""
    return [_nhwc(images).copy() for images, _ in _uint8(files["rgb"], order="sequential")]


@pytest.mark.parametrize("config", ["rand-m9-mstd0.5-inc1", "trivial"])
def test_augmented_batches_equal_the_reference_under_churn(files, raw, config):
    loader = _uint8(files["rgb"], order="sequential", auto_augment=config, seed=4)
    settings = parse_auto_augment(config, seed=4).settings
    keep: list = []
    for epoch in range(2):
        for position, (images, _) in enumerate(loader):
            indices = np.arange(position * BATCH, (position + 1) * BATCH)
            np.testing.assert_array_equal(_nhwc(images), augment_reference(raw[position], indices, epoch, settings,
                                                                               apply=kernel_apply))
            _churn(keep)


def test_same_batches_for_one_and_two_workers_and_set_epoch_replays(files):
    options = dict(auto_augment="rand-m9-mstd0.5-inc1", mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem", seed=3,
                   hflip=True)
    runs, loaders = {}, {}
    for workers in (1, 2):
        loaders[workers] = _uint8(files["rgb"], num_workers=workers, **options)
        runs[workers] = [[(i.clone(), t.clone()) for i, t in loaders[workers]] for _ in range(2)]
    for epoch_1, epoch_2 in zip(runs[1], runs[2]):
        for (images_1, targets_1), (images_2, targets_2) in zip(epoch_1, epoch_2):
            assert torch.equal(images_1, images_2) and torch.equal(targets_1, targets_2)
    assert not torch.equal(runs[1][0][0][0], runs[1][1][0][0])
    loaders[2].set_epoch(1)
    replay = [(i.clone(), t.clone()) for i, t in loaders[2]]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(replay, runs[1][1]))


def test_float_output_and_grayscale_files(files, raw):
    floats = make_loader(files["rgb"], batch_size=BATCH, order="sequential", num_workers=2, auto_augment="trivial",
                         normalize=False, seed=4)
    settings = parse_auto_augment("trivial", seed=4).settings
    for position, (images, _) in enumerate(floats):
        indices = np.arange(position * BATCH, (position + 1) * BATCH)
        expected = augment_reference(raw[position], indices, 0, settings, apply=kernel_apply)
        assert torch.equal(images, torch.from_numpy(expected).permute(0, 3, 1, 2).float())
    gray = _uint8(files["gray"], order="sequential", auto_augment="rand-m9-inc1-p1")
    for images, _ in gray:
        assert images.shape[1] == 1


# ------------------------------------------------------------------------------------------- config strings

def test_rand_string_reads_timms_options():
    settings = parse_auto_augment("rand-m9-mstd0.5-inc1").settings
    assert (settings.num_ops, settings.magnitude_bin, settings.num_bins, settings.apply_prob,
            settings.magnitude_std, settings.max_bin) == (2, 27, 31, 0.5, 1.5, 30)
    settings = parse_auto_augment("rand-n3-m5-p0.8-mmax7-mstd101-inc1", seed=9).settings
    assert (settings.num_ops, settings.magnitude_bin, settings.apply_prob, settings.max_bin, settings.seed) == (
        3, 15, 0.8, 21, 9)
    assert math.isinf(settings.magnitude_std)
    assert isinstance(parse_auto_augment("rand-inc1"), RandAugment)   # timm's defaults: m10, n2
    assert parse_auto_augment("rand-inc1").settings.magnitude_bin == 30
    assert isinstance(parse_auto_augment("trivial"), TrivialAugmentWide)


@pytest.mark.parametrize("config, message", [
    ("rand-m9-mstd0.5", "inc1"), ("rand-m9-inc0", "inc1"), ("rand-m9-tweights-inc1", "op set"),
    ("rand-m9-x3-inc1", "unknown option"), ("rand-m9-foo-inc1", "cannot read"), ("rand-m11-mmax11-inc1", "past"),
    ("rand-mX-inc1", "cannot read"), ("rand-m9.5-inc1", "integer"), ("augmix-m5", "not implemented"),
    ("rand-p2-inc1", "p in"), (3, "string"),
])
def test_options_without_a_counterpart_are_refused(config, message):
    with pytest.raises(FfmixError, match=message):
        parse_auto_augment(config)


def test_make_loader_refuses_a_bad_string_before_any_work(files):
    with pytest.raises(FfmixError, match="inc1"):
        _uint8(files["rgb"], auto_augment="rand-m9")


# ------------------------------------------------------------------------------------------- ffmix train

def test_train_flags_are_checked_and_reach_the_training_loader_only(files, monkeypatch):
    import argparse

    import ffmix.loader
    from ffmix.distributed import Node
    from ffmix.train.components import make_loaders
    from ffmix.train.config import Config, check_config, configure_parser, config_to_argv

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    argv = ["--train", str(files["rgb"]), "--val", str(files["rgb"]), "--auto-augment", "rand-m9-mstd0.5-inc1",
            "--batch-size", "20", "--re-prob", "0.25", "--re-mode", "pixel", "--re-count", "2"]
    config = Config(**vars(parser.parse_args(argv)))
    assert Config(**vars(parser.parse_args(config_to_argv(config)[1:]))) == config
    check_config(config)
    with pytest.raises(FfmixError, match="--auto-augment: .*inc1"):
        check_config(Config(**{**config.__dict__, "auto_augment": "rand-m9"}))
    calls = []
    monkeypatch.setattr(ffmix.loader, "make_loader", lambda path, **options: calls.append(options))
    make_loaders(config, Node(rank=0, world_size=1, local_rank=0, local_world_size=1,
                              device=torch.device("cpu"), threads=1))
    assert calls[0]["auto_augment"] == "rand-m9-mstd0.5-inc1" and "auto_augment" not in calls[1]
    assert (calls[0]["re_prob"], calls[0]["re_mode"], calls[0]["re_count"]) == (0.25, "pixel", 2)
    assert "re_prob" not in calls[1]   # validation images are never erased
    for flag, value in (("re_prob", 1.5), ("re_count", 0)):
        with pytest.raises(FfmixError, match=f"--{flag.replace('_', '-')}"):
            check_config(Config(**{**config.__dict__, flag: value}))


def test_a_run_from_before_these_flags_resumes(files, tmp_path, capsys):
    """A checkpoint whose config has no auto_augment / re_* entries (written before they existed) resumes: a
    missing setting counts as its default, which is what that run used."""
    from ffmix import cli
    run_dir = tmp_path / "run"
    argv = ["train", "--train", str(files["rgb"]), "--val", str(files["rgb"]), "--model", "tiny", "--epochs", "2",
            "--batch-size", "20", "--device", "cpu", "--out", str(run_dir)]
    assert cli.main(argv + ["--stop-after-epoch", "1"]) == 0
    checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    for key in ("auto_augment", "re_prob", "re_mode", "re_count"):
        del checkpoint["config"][key]
    torch.save(checkpoint, run_dir / "last.pt")
    assert cli.main(argv + ["--resume"]) == 0
    assert cli.main(argv + ["--resume", "--re-prob", "0.5"]) != 0   # a real difference is still refused
    assert "--re-prob 0.0 in the checkpoint but 0.5 now" in capsys.readouterr().err


def test_a_jpeg_run_from_before_the_region_decoder_resumes_only_with_exact_decode():
    """Before ``exact_decode`` existed, JPEGs were decoded whole (today's exact path): a checkpoint without the
    setting counts as exact_decode=True when its file holds JPEGs, so resuming it with the new default path
    (other pixels) is refused; raw files are decoded the same either way and keep the plain default."""
    from dataclasses import replace as with_options

    from ffmix.metadata import DatasetMeta
    from ffmix.train.checkpoints import settings_before_they_existed

    raw = DatasetMeta(num_samples=1, num_classes=1, class_names=["a"], channels=3, image_shape=(8, 8),
                      min_size=(8, 8), max_size=(8, 8), label_counts=[1], write_options={"write_mode": "raw"})
    assert settings_before_they_existed(raw)["exact_decode"] is False
    for mode in ("jpg", "smart", "proportion"):
        jpeg = with_options(raw, write_options={"write_mode": mode})
        assert settings_before_they_existed(jpeg)["exact_decode"] is True
    assert settings_before_they_existed(raw)["re_prob"] == 0.0
