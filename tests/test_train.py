"""``ffmix train``: it learns, resumes bit for bit, splits epochs over ranks, and refuses bad input cleanly.

Data: 16x16 grayscale images of four translation-invariant patterns (horizontal stripes, vertical stripes,
checkerboard, blob) at random phase and contrast plus noise, which the ``tiny`` model separates in a few
epochs. 256 training images = 2 ranks x 8 batches x 16, so FFCV's distributed order needs no padding.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ffmix import cli
from ffmix.convert import convert_arrays
from ffmix.distributed import torchrun_command
from ffmix.errors import FfmixError, FfmixWarning
from ffmix.system import resolve_device
from ffmix.train import ARTIFACTS, Config, LrShape, config_to_argv, configure_parser, make_loss
from ffmix.train.calibration import expected_calibration_error
from ffmix.train.config import auto_batch_size, default_lr, default_warmup_steps, resolve

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
TRAIN_SAMPLES = 256
SUBPROCESS_TIMEOUT = 240  # seconds; a hang fails the test instead of blocking the suite


def pattern_images(count: int, size: int, seed: int, num_classes: int = NUM_CLASSES):
    """``(count, size, size)`` uint8 images and their int64 labels, every class equally often."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((count, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        phase, contrast = rng.uniform(0, 2 * np.pi), rng.uniform(60, 110)
        if label == 0:
            pattern = np.sin(rows * 1.6 + phase)
        elif label == 1:
            pattern = np.sin(cols * 1.6 + phase)
        elif label == 2:
            pattern = np.sin(rows * 1.6 + phase) * np.sin(cols * 1.6 + phase)
        else:
            r0, c0 = rng.uniform(4, size - 4, 2)
            pattern = 2 * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / 8.0) - 1
        values = 128 + contrast * pattern + rng.normal(0, 20, (size, size))
        images[i] = np.clip(np.rint(values), 0, 255)
    return images, labels.astype(np.int64)


def write_beton(path: Path, count: int, size: int, seed: int, num_classes: int = NUM_CLASSES) -> Path:
    images, labels = pattern_images(count, size, seed, num_classes)
    convert_arrays(images, labels, path, class_names=[f"c{k}" for k in range(num_classes)], num_workers=1)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-data")
    return {
        "train": write_beton(folder / "train.beton", TRAIN_SAMPLES, 16, seed=1),
        "val": write_beton(folder / "val.beton", 128, 16, seed=2),
        "val_3_classes": write_beton(folder / "val3.beton", 48, 16, seed=3, num_classes=3),
        "val_12px": write_beton(folder / "val12.beton", 48, 12, seed=4),
        "train_16_images": write_beton(folder / "small.beton", 16, 16, seed=5),
        "train_other": write_beton(folder / "other.beton", TRAIN_SAMPLES, 16, seed=7),  # same shape and counts
    }


# Mixing on (MixUp and CutMix), flips, and mixing switched off for the last epoch: every source of randomness
# the resume test must reproduce.
RECIPE = ["--model", "tiny", "--epochs", "3", "--batch-size", "32", "--lr", "0.1", "--mixup-alpha", "0.4",
          "--cutmix-alpha", "1.0", "--mix-off-epoch", "3", "--hflip", "--tta", "--seed", "3", "--device", "cpu"]


def train(argv, capsys=None) -> tuple:
    """Run ``ffmix train ARGV`` in this process; returns (exit code, stdout, stderr)."""
    code = cli.main(["train", *map(str, argv)])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def data_args(data, train="train", val="val"):
    return ["--train", data[train], "--val", data[val]]


def read_metrics(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """The recipe, trained without interruption."""
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    code, _, _ = train(data_args(data) + RECIPE + ["--out", run_dir])
    assert code == 0
    return run_dir


def test_short_training_lowers_the_loss_and_beats_chance(full_run):
    metrics = read_metrics(full_run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["mixing"] for m in metrics] == [True, True, False]   # --mix-off-epoch 3
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"]
    assert metrics[-1]["val_loss"] < 0.8 * np.log(NUM_CLASSES)   # chance: log(4) nats
    assert metrics[-1]["val_acc"] > 0.6                          # chance: 0.25
    assert all(0.0 <= m["val_ece"] <= 1.0 for m in metrics)      # the values: tests/test_calibration.py
    for name in ("config.json", "last.pt", "best.pt", "curves.png"):
        assert (full_run / name).stat().st_size > 0
    config = json.loads((full_run / "config.json").read_text())
    assert config["config"]["model"] == "tiny" and config["config"]["lr"] == 0.1
    best = torch.load(full_run / "best.pt", weights_only=True)
    assert best["val_acc"] == max(m["val_acc"] for m in metrics)


def test_epoch_lines_and_summary(data, tmp_path, capsys):
    code, out, err = train(data_args(data) + ["--model", "tiny", "--epochs", "1", "--batch-size", "64",
                                              "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    epoch_line = next(line for line in lines if line.startswith("epoch"))
    metrics = read_metrics(tmp_path / "run")[0]
    assert metrics["mixing"] is False, "both alphas 0 (the defaults): nothing was mixed"
    assert f"train loss {metrics['train_loss']:.4f}" in epoch_line
    assert f"val acc {100 * metrics['val_acc']:6.2f}%" in epoch_line and "img/s" in epoch_line
    assert f"data wait {100 * metrics['data_wait_share']:4.1f}%" in epoch_line
    assert f"val NLL {metrics['val_loss']:.4f}  ECE {100 * metrics['val_ece']:5.2f}%" in epoch_line
    assert lines[-1].startswith("done: 1 epoch in") and f"{100 * metrics['val_acc']:.2f}%" in lines[-1]
    assert f"{100 * metrics['data_wait_share']:.1f}% of step time waiting for data" in lines[-1]


def test_data_wait_share_is_a_share_of_the_training_time(full_run):
    for record in read_metrics(full_run):
        assert 0.0 <= record["data_wait_share"] <= 1.0
        assert record["data_wait_share"] * record["train_seconds"] <= record["seconds"]


# ------------------------------------------------------------------------------------ defaults that learn

@pytest.mark.parametrize("options", [[], ["--mixup-alpha", "0.2", "--cutmix-alpha", "1.0"]],
                         ids=["defaults", "defaults-with-mixing"])
def test_defaults_learn_in_the_first_epoch(data, tmp_path, options):
    """Nothing but the data (and mixing): after one epoch the loss is below chance, ln(C). The run is planned
    for two epochs (the default schedule of a two-epoch run) and stopped after the first, the one checked."""
    code, _, _ = train(data_args(data) + ["--epochs", "2", "--stop-after-epoch", "1", "--out", tmp_path / "run",
                                          *options])
    assert code == 0
    first = read_metrics(tmp_path / "run")[0]
    assert first["train_loss"] < np.log(NUM_CLASSES) and first["val_loss"] < np.log(NUM_CLASSES)
    assert first["val_acc"] > 1.5 / NUM_CLASSES
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["batch_size"] == 16 and config["lr"] == pytest.approx(0.2 * 16 / 256)   # resolved, saved


def test_auto_batch_size_lr_and_warmup_follow_the_data():
    assert auto_batch_size(1_281_167, 1) == 256 and auto_batch_size(60_000, 1) == 256
    assert auto_batch_size(5_000, 1) == 64 and auto_batch_size(1_000, 1) == 16 and auto_batch_size(10, 1) == 10
    assert auto_batch_size(5_000, 3) % 3 == 0 and auto_batch_size(5_000, 3) <= 64
    assert default_lr("sgd", 64) == pytest.approx(0.05) and default_lr("adamw", 64) == 2e-3
    assert default_warmup_steps(10_000) == 2_000       # 20% of a long run
    assert default_warmup_steps(156) == 50             # the floor for a short one
    assert default_warmup_steps(38) == 19              # never more than half the run


def test_resolve_saves_concrete_values(data):
    from ffmix.metadata import read_meta
    meta = read_meta(data["train"])
    config = resolve(Config(train=str(data["train"]), epochs=3), meta, world_size=1, device_type="cpu")
    assert (config.model, config.batch_size, config.warmup_steps, config.precision) == ("cnn", 16, 24, "fp32")
    explicit = resolve(Config(batch_size=32, lr=0.3, warmup_steps=5, epochs=3), meta, 1, "cuda")
    assert (explicit.batch_size, explicit.lr, explicit.warmup_steps, explicit.precision) == (32, 0.3, 5, "bf16")
    with pytest.raises(FfmixError, match="--warmup-steps 48 leaves no step"):
        resolve(Config(epochs=3, warmup_steps=48), meta, 1, "cpu")   # 3 x 16 steps


@pytest.mark.parametrize("options", [
    ["--targets", "pair", "--mixup-alpha", "0.4", "--cutmix-alpha", "1.0", "--label-smoothing", "0.1"],
    ["--optimizer", "adamw", "--schedule", "linear", "--mixup-alpha", "0.4", "--channels-last", "off"],
    ["--label-smoothing", "0.1"],   # no mixing: integer labels
], ids=["pair-targets", "adamw-linear", "no-mixing"])
def test_other_losses_and_optimizers_learn(data, tmp_path, options):
    code, _, _ = train(data_args(data) + ["--model", "tiny", "--epochs", "3", "--batch-size", "32",
                                          "--out", tmp_path / "run", *options])
    assert code == 0
    metrics = read_metrics(tmp_path / "run")
    assert metrics[-1]["val_acc"] > 0.6 and metrics[-1]["val_loss"] < metrics[0]["val_loss"]


def test_pair_loss_equals_soft_loss_on_the_same_mix():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator)
    y_a, y_b = torch.randint(0, 5, (16,), generator=generator), torch.randint(0, 5, (16,), generator=generator)
    lam = torch.rand(16, generator=generator)
    smoothing = 0.1

    def smoothed(labels):
        return torch.nn.functional.one_hot(labels, 5).float() * (1 - smoothing) + smoothing / 5
    soft_targets = lam[:, None] * smoothed(y_a) + (1 - lam[:, None]) * smoothed(y_b)
    soft_loss = make_loss(Config(mixup_alpha=1.0, targets="soft"))(logits, soft_targets)
    pair_loss = make_loss(Config(mixup_alpha=1.0, targets="pair", label_smoothing=smoothing))(logits, (y_a, y_b, lam))
    assert torch.allclose(soft_loss, pair_loss, rtol=1e-6)
    assert soft_loss > 0


def test_onecycle_rises_then_falls_to_zero():
    shape = LrShape.of(Config(epochs=4, warmup_steps=10), steps_per_epoch=10)   # 40 steps, peak at 10
    assert shape(0) == pytest.approx(0.1) and shape(5) == pytest.approx(0.55) and shape(10) == 1.0
    assert shape(25) == pytest.approx(0.5) and shape(40) == 0.0
    linear = LrShape.of(Config(epochs=4, schedule="linear"), steps_per_epoch=10)
    assert linear(0) == 1.0 and linear(20) == pytest.approx(0.5) and linear(40) == 0.0


def state_of(checkpoint_path: Path) -> dict:
    return torch.load(checkpoint_path, weights_only=True)


def assert_same_tensors(a, b, where=""):
    """Bitwise equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs (max |diff| {(a.double() - b.double()).abs().max()})"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_interrupted_and_resumed_run_ends_with_the_same_weights(data, full_run, tmp_path, capsys):
    run_dir = tmp_path / "resumed"
    code, out, err = train(data_args(data) + RECIPE + ["--out", run_dir, "--stop-after-epoch", "1"], capsys)
    assert code == 0 and "stopped after epoch 1 of 3" in out, err
    assert len(read_metrics(run_dir)) == 1
    code, out, err = train(data_args(data) + RECIPE + ["--out", run_dir, "--resume"], capsys)
    assert code == 0 and "resuming after epoch 1" in out, err

    full, resumed = state_of(full_run / "last.pt"), state_of(run_dir / "last.pt")
    assert_same_tensors(full["model"], resumed["model"], "model")
    assert_same_tensors(full["optimizer"], resumed["optimizer"], "optimizer")
    assert_same_tensors(full["rng"], resumed["rng"], "rng")
    for key in ("train_loss", "val_loss", "val_acc", "val_ece", "mixing", "lr"):
        assert [m[key] for m in read_metrics(full_run)] == [m[key] for m in read_metrics(run_dir)], key


def test_a_failed_step_closes_both_loaders_and_leaves_no_epoch_thread(data, tmp_path, monkeypatch):
    """A step that raises leaves the epoch early; train closes its loaders on the way out, so their epoch
    thread stops then, whoever still holds a reference to the epoch's iterator."""
    import argparse
    import threading

    from ffmix import distributed
    from ffmix.loader import MixLoader
    from ffmix.train import loop
    from ffmix.train.config import config_from_args

    class StepFailed(Exception):
        pass

    real_make_step, real_close, closed = loop.make_train_step, MixLoader.close, []

    def failing_make_step(*args, **kwargs):
        step, calls = real_make_step(*args, **kwargs), []

        def second_step_fails(images, targets):
            calls.append(None)
            if len(calls) == 2:
                raise StepFailed
            return step(images, targets)
        return second_step_fails

    def recorded_close(loader):
        closed.append(loader)
        real_close(loader)

    monkeypatch.setattr(loop, "make_train_step", failing_make_step)
    monkeypatch.setattr(MixLoader, "close", recorded_close)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    argv = data_args(data) + RECIPE + ["--batch-size", "4", "--out", tmp_path / "run"]   # 64 batches an epoch
    config = config_from_args(parser.parse_args(list(map(str, argv))))
    with pytest.raises(StepFailed):
        loop.train(config, distributed.describe_node("cpu"))
    assert len(closed) == 2 and len({id(loader) for loader in closed}) == 2, "train and validation loaders"
    assert not [t for t in threading.enumerate() if t.name == "ffmix-epoch" and t.is_alive()]


def test_resume_with_other_processes_or_device_is_refused(data, full_run, tmp_path, capsys):
    """The number of processes sets each rank's share and BatchNorm's batch; the device the kernels: a resume
    that changes either would not continue the same computation."""
    for facts, fragments in [({"world_size": 2}, ["2 process(es) in the checkpoint but 1 now", "--nproc 2"]),
                             ({"device_type": "cuda"}, ["device cuda in the checkpoint but cpu now"])]:
        run_dir = tmp_path / f"moved-{next(iter(facts))}"
        shutil.copytree(full_run, run_dir)
        checkpoint = state_of(run_dir / "last.pt")
        checkpoint["computation"].update(facts)
        torch.save(checkpoint, run_dir / "last.pt")
        before = snapshot(run_dir)
        assert_refused(data_args(data) + RECIPE + ["--out", run_dir, "--resume"], capsys, "incompatible",
                       *fragments)
        assert snapshot(run_dir) == before


def test_resume_with_other_data_of_the_same_shape_is_refused_naming_the_file(data, full_run, tmp_path, capsys):
    """Another file of the same shape, count and classes differs only in content: the fingerprint tells."""
    run_dir = tmp_path / "other-data"
    shutil.copytree(full_run, run_dir)
    before = snapshot(run_dir)
    message = assert_refused(data_args(data, train="train_other") + RECIPE + ["--out", run_dir, "--resume"],
                             capsys, f"--train {data['train_other']} is not the file this run was trained with",
                             f"the run used {data['train']}", "fingerprint")
    assert "--val" not in message.split("incompatible")[1]
    assert_refused(data_args(data, val="train_other") + RECIPE + ["--out", run_dir, "--resume"], capsys,
                   f"--val {data['train_other']} is not the file", "num_samples 128 then, 256 now")
    # the same file moved elsewhere is the same data
    moved = tmp_path / "moved.beton"
    shutil.copy(data["train"], moved)
    shutil.copy(f"{data['train']}.json", f"{moved}.json")
    code, out, err = train(["--train", moved, "--val", data["val"]] + RECIPE + ["--out", run_dir, "--resume"],
                           capsys)
    assert code == 0 and "nothing to do" in out, err
    assert snapshot(run_dir) == before


def test_resume_compares_label_counts_even_without_a_fingerprint(data, full_run, tmp_path, capsys):
    run_dir = tmp_path / "counts"
    shutil.copytree(full_run, run_dir)
    checkpoint = state_of(run_dir / "last.pt")
    checkpoint["data"]["fingerprint"] = None       # as from a sidecar older than fingerprints
    checkpoint["data"]["label_counts"] = [65, 63, 64, 64]
    torch.save(checkpoint, run_dir / "last.pt")
    sidecar = json.loads(Path(f"{data['train']}.json").read_text())
    sidecar["beton_fingerprint"] = None
    old = tmp_path / "old.beton"
    shutil.copy(data["train"], old)
    Path(f"{old}.json").write_text(json.dumps(sidecar))
    assert_refused(["--train", old, "--val", data["val"]] + RECIPE + ["--out", run_dir, "--resume"], capsys,
                   f"--train {old} is not the file", "other label counts")


def test_resuming_a_finished_run_changes_nothing(data, full_run, capsys):
    before = snapshot(full_run)
    code, out, err = train(data_args(data) + RECIPE + ["--out", full_run, "--resume"], capsys)
    assert code == 0 and "nothing to do" in out, err
    assert snapshot(full_run) == before


# --------------------------------------------------------------------------------------------- bad input

def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder`` ({} if it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(argv, capsys, *fragments):
    code, out, err = train(argv, capsys)
    assert code == 1, (out, err)
    message = err.strip()
    assert message.startswith("ffmix train: error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file_is_refused_before_anything_is_written(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert_refused(["--train", tmp_path / "nope.beton", "--val", data["val"], "--out", run_dir], capsys,
                   "nope.beton", "no such file")
    assert_refused(data_args(data) + ["--val", tmp_path / "gone.beton", "--out", run_dir], capsys, "gone.beton")
    assert not run_dir.exists()


def test_train_and_val_must_agree(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert_refused(data_args(data, val="val_3_classes") + ["--out", run_dir], capsys, "4 classes", "--val has 3")
    assert_refused(data_args(data, val="val_12px") + ["--out", run_dir], capsys, "16x16", "12x12")
    assert not run_dir.exists()


def test_misleading_input_messages_say_what_is_wrong_and_the_fix(data, tmp_path, capsys):
    """A folder was "no such file"; a grayscale/colour pair had no fix; a plain FFCV file pointed to num_classes=."""
    run_dir = tmp_path / "run"
    assert_refused(["--train", tmp_path, "--val", data["val"], "--out", run_dir], capsys,
                   f"--train {tmp_path} is a folder")
    colour = tmp_path / "colour.beton"
    images, labels = pattern_images(48, 16, seed=6)
    convert_arrays(np.repeat(images[..., None], 3, axis=3), labels, colour,
                   class_names=[f"c{k}" for k in range(NUM_CLASSES)])
    assert_refused(["--train", data["train"], "--val", colour, "--out", run_dir], capsys,
                   "--train has 1-channel images but --val has 3", "convert both from the same kind of source")
    plain = tmp_path / "plain.beton"
    shutil.copy(data["train"], plain)
    message = assert_refused(["--train", plain, "--val", data["val"], "--out", run_dir], capsys, "no ffmix metadata")
    assert "num_classes" not in message
    assert not run_dir.exists()


def test_a_run_interrupted_in_its_first_epoch_is_restarted_with_overwrite(data, full_run, tmp_path, capsys):
    """After Ctrl-C in epoch 1, --resume said "run without --resume" and running without said "pass --resume"."""
    run_dir = tmp_path / "cut-short"
    run_dir.mkdir()
    shutil.copy(full_run / "config.json", run_dir / "config.json")   # what a first epoch leaves when cut short
    for extra in (["--resume"], []):
        message = assert_refused(data_args(data) + RECIPE + ["--out", run_dir] + extra, capsys,
                                 "finished no epoch", "--overwrite")
        assert "pass --resume" not in message and "without --resume to start" not in message


def test_nonsense_options_are_refused_before_anything_is_written(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert_refused(data_args(data) + ["--out", run_dir, "--resume", "--overwrite"], capsys, "pass one of them")
    assert_refused(data_args(data) + ["--out", ""], capsys, "--out is empty")
    assert_refused(data_args(data) + ["--out", run_dir, "--mixup-alpha", "0.2", "--batch-size", "2", "--nproc", "2"],
                   capsys, "leaves 1 image per batch, which cannot mix")
    assert not run_dir.exists()


class FakeRanks:
    """Stands in for the torchrun process: each wait() gives the next outcome (an exit code, or an exception)."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)

    def wait(self):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_an_interruption_is_reported_in_one_line(data, tmp_path, capsys, monkeypatch):
    """Ctrl-C printed "interrupted" up to three times: the epoch's hint, the CLI, and the --nproc launcher."""
    import ffmix.train
    from ffmix.train import loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)
    argv = data_args(data) + ["--model", "tiny", "--epochs", "2", "--batch-size", "64", "--out", tmp_path / "r"]
    code, out, err = train(argv, capsys)
    assert code == 130 and "interrupted" not in out
    assert err.strip() == "ffmix train: interrupted in epoch 1; no epoch finished, so there is nothing to resume"
    monkeypatch.setenv("RANK", "1")   # another rank under torchrun: rank 0 says it
    code, out, err = train(argv + ["--overwrite"], capsys)
    assert code == 130 and "interrupted" not in out + err
    monkeypatch.delenv("RANK")
    monkeypatch.setattr(ffmix.train.subprocess, "Popen", lambda command, env: FakeRanks([KeyboardInterrupt(), 130]))
    code, out, err = train(data_args(data) + ["--out", tmp_path / "r2", "--nproc", "2", "--device", "cpu"], capsys)
    assert code == 130 and "interrupted" not in out + err, "the launcher leaves the line to rank 0"


def test_more_processes_than_cores_a_rounded_batch_and_val_on_train_are_said_once(data, tmp_path, capsys, monkeypatch):
    """--nproc 3 on 2 cores ran silently, and the automatic batch of 16 silently became 15."""
    import ffmix.train
    from ffmix.train.loop import warn_about_inputs
    started = []
    monkeypatch.setattr(ffmix.train, "available_cpus", lambda: 2)
    monkeypatch.setattr(ffmix.train.subprocess, "Popen", lambda command, env: started.append(command) or FakeRanks([0]))
    code, _, err = train(data_args(data) + ["--out", tmp_path / "r", "--nproc", "3", "--device", "cpu"], capsys)
    assert code == 0 and len(started) == 1
    assert err.count("warning") == 1 and "ffmix train: warning: --nproc 3 starts more processes than the 2" in err
    config = Config(train=str(data["train"]), val=str(data["val"]))
    with pytest.warns(FfmixWarning, match="automatic batch size 16 does not divide over 3 processes; using 15"):
        warn_about_inputs(config, 1000, 3)
    with pytest.warns(FfmixWarning, match="--train and --val are the same file"):
        warn_about_inputs(Config(train=str(data["train"]), val=str(data["train"]), batch_size=16), 1000, 1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_inputs(config, 1000, 2)   # 16 divides over 2, held-out --val: nothing to say


def test_batch_larger_than_the_dataset_is_refused(data, tmp_path, capsys):
    assert_refused(data_args(data, train="train_16_images") + ["--batch-size", "32", "--out", tmp_path / "r"],
                   capsys, "--batch-size 32", "16 training images")
    assert not (tmp_path / "r").exists()


def test_an_image_size_that_cannot_fit_is_refused_in_one_line(data, tmp_path, capsys, monkeypatch):
    """--image-size 4000 was killed for memory with no message, and with --nproc 2 crashed with 106 lines."""
    import ffmix.system
    monkeypatch.setattr(ffmix.system, "available_memory", lambda: 8 * 2 ** 30)
    for extra in ([], ["--nproc", "2"]):
        assert_refused(data_args(data) + ["--image-size", "4000", "--batch-size", "32", "--device", "cpu",
                                          "--out", tmp_path / "r"] + extra, capsys,
                       "batches of 32 images of 4000x4000", "only 8.0 GiB is available", "lower --image-size")
    assert not (tmp_path / "r").exists()


def test_unwritable_run_dir_is_refused(data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_refused(data_args(data) + ["--out", blocker / "run"], capsys, "cannot write to run directory")
    assert_refused(data_args(data) + ["--out", blocker], capsys, "is a file")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_run_dir_is_refused(data, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_refused(data_args(data) + ["--out", locked / "run"], capsys, "cannot write to run directory")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_resume_without_a_checkpoint_is_refused(data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_refused(data_args(data) + ["--out", tmp_path / "empty", "--resume"], capsys, "no checkpoint",
                   "last.pt")
    assert_refused(data_args(data) + ["--resume"], capsys, "--resume needs --out")


def test_existing_or_incompatible_runs_are_not_overwritten(data, full_run, tmp_path, capsys):
    before = snapshot(full_run)
    assert_refused(data_args(data) + RECIPE + ["--out", full_run], capsys, "already holds a run", "--resume")
    changed = [arg if arg != "0.1" else "0.05" for arg in RECIPE]   # --lr 0.05 instead of 0.1
    assert_refused(data_args(data) + changed + ["--out", full_run, "--resume"], capsys, "incompatible",
                   "--lr 0.1 in the checkpoint but 0.05 now")
    assert_refused(data_args(data, val="val_12px") + RECIPE + ["--out", full_run, "--resume"], capsys, "12x12")
    assert snapshot(full_run) == before

    broken = tmp_path / "broken"
    shutil.copytree(full_run, broken)
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    broken_before = snapshot(broken)
    assert_refused(data_args(data) + RECIPE + ["--out", broken, "--resume"], capsys, "not a readable")
    assert snapshot(broken) == broken_before


# ------------------------------------------------------------------------------------------ command line

def test_config_round_trips_through_the_command_line_nproc_uses():
    import argparse
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    argv = ["--train", "a.beton", "--val", "b.beton", "--mixup-alpha", "0.2", "--hflip", "--epochs", "7",
            "--mix-off-epoch", "6", "--out", "runs/x", "--lr", "0.05"]
    config = Config(**vars(parser.parse_args(argv)))
    again = Config(**vars(parser.parse_args(config_to_argv(config)[1:])))
    assert again == config
    command = torchrun_command(2, config_to_argv(config))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc-per-node=2" in command
    assert command[-len(config_to_argv(config)):] == config_to_argv(config)


def impostor_folder(tmp_path: Path) -> Path:
    """A folder holding another ``ffmix/`` package, which says so and fails when imported."""
    folder = tmp_path / "elsewhere"
    (folder / "ffmix").mkdir(parents=True)
    (folder / "ffmix" / "__init__.py").write_text("raise SystemExit('IMPOSTOR ffmix imported')\n")
    (folder / "ffmix" / "cli.py").write_text("")
    return folder


def test_train_script_reports_errors_in_one_line_and_runs_the_checkouts_ffmix_from_any_folder(tmp_path):
    """One launch checks both (each used to start the script on its own): started from a folder holding an
    impostor ``ffmix/``, the script runs the checkout's ffmix, which names the missing file in one line."""
    folder = impostor_folder(tmp_path)
    result = subprocess.run([str(REPO / "train"), "--train", str(tmp_path / "x.beton"), "--val",
                             str(tmp_path / "y.beton")], capture_output=True, text=True, cwd=folder,
                            timeout=SUBPROCESS_TIMEOUT)
    assert "IMPOSTOR" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert result.stderr.strip() == (f"ffmix train: error: --train {tmp_path / 'x.beton'}: no such file; "
                                     "create it with `ffmix convert`")


# ------------------------------------------------------------------------------------------- distributed

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_each_epoch_and_end_with_the_same_weights(data, tmp_path):
    run_dir, dump = tmp_path / "ddp", tmp_path / "dump"
    command = [str(REPO / ".venv" / "bin" / "torchrun"), "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "tests.train_probe", str(dump), "train", *map(str, data_args(data)),
               "--model", "tiny", "--epochs", "2", "--batch-size", "32", "--mixup-alpha", "0.4",
               "--cutmix-alpha", "1.0", "--mix-off-epoch", "2", "--device", "cpu", "--out", str(run_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in range(2)]

    labels = pattern_images(TRAIN_SAMPLES, 16, seed=1)[1]
    for epoch in range(2):
        ids = [np.array(rank["sample_ids"][epoch]) for rank in ranks]
        assert len(ids[0]) == len(ids[1]) == TRAIN_SAMPLES // 2
        assert not set(ids[0]) & set(ids[1])                           # disjoint
        assert set(ids[0]) | set(ids[1]) == set(range(TRAIN_SAMPLES))  # together, the whole dataset
    assert not np.array_equal(ranks[0]["sample_ids"][0], ranks[0]["sample_ids"][1])  # reshuffled per epoch
    for rank in ranks:  # epoch 2 is unmixed: the labels that arrived are those of the recorded ids
        assert rank["labels"][1] == labels[rank["sample_ids"][1]].tolist()
    assert_same_tensors(ranks[0]["model"], ranks[1]["model"], "rank 0 vs rank 1")

    # Validation accuracy counts every held-out image once: the reduced figure equals a one-process evaluation.
    metrics = read_metrics(run_dir)
    assert len(metrics) == 2
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(ARTIFACTS)   # and no temporary files left
    correct, loss, ece = evaluate_here(ranks[0]["model"], data["val"])
    assert round(metrics[-1]["val_acc"] * 128) == correct
    assert metrics[-1]["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert metrics[-1]["val_ece"] == pytest.approx(ece, abs=1e-5)   # the ranks' bins summed, not their ECEs


@pytest.mark.slow
def test_resume_with_another_nproc_is_refused_by_every_rank(data, full_run, tmp_path):
    """Also: the ranks run the parent's ffmix, not the current folder's. Ranks were started as
    `python -m ffmix.cli`, which imports ffmix from the current folder first; so this run starts from a folder
    holding an impostor ``ffmix/`` (one --nproc 2 launch checks both, where two tests each paid for one)."""
    run_dir = tmp_path / "one-process-run"
    shutil.copytree(full_run, run_dir)
    before = snapshot(run_dir)
    folder = impostor_folder(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    result = subprocess.run([str(REPO / "train"), *map(str, data_args(data)), *RECIPE, "--out", str(run_dir),
                             "--resume", "--nproc", "2"], capture_output=True, text=True, cwd=folder, env=env,
                            timeout=SUBPROCESS_TIMEOUT)
    assert "IMPOSTOR" not in result.stderr, result.stderr[-3000:]
    assert result.returncode != 0
    # the ranks got as far as the real ffmix takes them: comparing the checkpoint
    assert "1 process(es) in the checkpoint but 2 now (resume with --nproc 1)" in result.stderr, result.stderr[-3000:]
    assert snapshot(run_dir) == before


def evaluate_here(state: dict, val_path: Path):
    """(correct predictions, mean cross-entropy, ECE) of the ``tiny`` model with ``state`` on ``val_path``."""
    from ffmix.loader import make_loader
    from ffmix.models import build_model

    model = build_model("tiny", 1, NUM_CLASSES)
    model.load_state_dict(state)
    model.eval()
    loader = make_loader(val_path, batch_size=128, order="sequential", targets="label", drop_last=False,
                         num_workers=1)
    correct, loss_sum, count, all_logits, all_labels = 0, 0.0, 0, [], []
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
            all_logits.append(logits)
            all_labels.append(labels)
    return correct, loss_sum / count, expected_calibration_error(torch.cat(all_logits), torch.cat(all_labels))


# --------------------------------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_with_bf16_and_channels_last_learns(data, tmp_path, capsys):
    code, out, err = train(data_args(data) + ["--model", "tiny", "--epochs", "3", "--batch-size", "32",
                                              "--mixup-alpha", "0.4", "--device", "cuda", "--out",
                                              tmp_path / "gpu"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "gpu" / "config.json").read_text())
    assert config["precision"] == "bf16" and config["device"].startswith("cuda")
    assert read_metrics(tmp_path / "gpu")[-1]["val_acc"] > 0.6


# ---------------------------------------------------------------------------------------- mixing on/off

def test_compare_mixing_writes_one_table_with_both_runs(data, tmp_path, capsys):
    run_dir = tmp_path / "compare"
    code, out, err = train(data_args(data) + ["--model", "tiny", "--epochs", "1", "--batch-size", "32",
                                              "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0",
                                              "--compare-mixing", "--out", run_dir], capsys)
    assert code == 0, err
    rows = json.loads((run_dir / "compare.json").read_text())
    assert [row["mixing"] for row in rows] == ["on (MixUp α=0.2 + CutMix α=1)", "off"]
    table = (run_dir / "compare.md").read_text().strip().splitlines()
    assert table[0].startswith("| mixing | test accuracy | test NLL | ECE |")
    assert len(table) == 4   # header, rule, two rows
    assert table[0] in out and table[-1] in out
    for row, name in zip(rows, ("mixing-on", "mixing-off")):
        metrics = read_metrics(run_dir / name)
        assert row["val_acc"] == metrics[-1]["val_acc"] and 0.0 <= row["data_wait_share"] <= 1.0
        assert (row["val_loss"], row["val_ece"]) == (metrics[-1]["val_loss"], metrics[-1]["val_ece"])
        assert (f"| {100 * row['val_acc']:.2f}% | {row['val_loss']:.4f} | {100 * row['val_ece']:.2f}% |"
                in table[2 + (name == "mixing-off")])
    mixed = json.loads((run_dir / "mixing-on" / "config.json").read_text())["config"]
    unmixed = json.loads((run_dir / "mixing-off" / "config.json").read_text())["config"]
    assert (mixed["mixup_alpha"], mixed["cutmix_alpha"]) == (0.2, 1.0)
    assert (unmixed["mixup_alpha"], unmixed["cutmix_alpha"]) == (0.0, 0.0)
    assert {k: v for k, v in mixed.items() if k not in ("mixup_alpha", "cutmix_alpha", "out")} == \
        {k: v for k, v in unmixed.items() if k not in ("mixup_alpha", "cutmix_alpha", "out")}


def test_compare_mixing_needs_mixing(data, tmp_path, capsys):
    assert_refused(data_args(data) + ["--compare-mixing", "--out", tmp_path / "c"], capsys, "--mixup-alpha")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------------------ device

def test_device_names_are_parsed_in_one_place():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FfmixError, match="--device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(FfmixError, match="no CUDA GPU"):
            resolve_device("cuda:0", option="device=")


def test_resumed_jpeg_run_of_varying_sizes_ends_with_the_same_weights(tmp_path, capsys):
    """Random-resized crops and flips come from (seed, epoch, image): a resumed run sees the crops the
    uninterrupted one saw, so it ends with the same weights on JPEG data of varying sizes too."""
    rng = np.random.default_rng(7)
    images, labels = [], []
    for size_seed in range(96):
        side = int(rng.integers(18, 30))
        gray, label = pattern_images(1, side, seed=size_seed)
        images.append(np.repeat(gray[0][:, :, None], 3, axis=2))
        labels.append(int(label[0]))
    beton = tmp_path / "varied.beton"
    convert_arrays(images, np.array(labels), beton, write_mode="jpg", num_workers=1)
    recipe = ["--train", beton, "--val", beton, "--image-size", "16", "--model", "tiny", "--epochs", "2",
              "--batch-size", "16", "--lr", "0.1", "--mixup-alpha", "0.4", "--cutmix-alpha", "1.0", "--hflip",
              "--seed", "5", "--device", "cpu"]
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    assert train(recipe + ["--out", full_dir], capsys)[0] == 0
    code, out, err = train(recipe + ["--out", resumed_dir, "--stop-after-epoch", "1"], capsys)
    assert code == 0 and "stopped after epoch 1 of 2" in out, err
    assert train(recipe + ["--out", resumed_dir, "--resume"], capsys)[0] == 0
    full, resumed = state_of(full_dir / "last.pt"), state_of(resumed_dir / "last.pt")
    assert_same_tensors(full["model"], resumed["model"], "model")
    assert [m["train_loss"] for m in read_metrics(full_dir)] == [m["train_loss"] for m in read_metrics(resumed_dir)]
