"""``ffmix train``: train an image classifier on ffmix's MixUp/CutMix stream and report test accuracy.

    ffmix train --train data/fmnist-train.beton --val data/fmnist-test.beton --mixup-alpha 0.2 --out runs/a
    torchrun --nproc-per-node 2 -m ffmix.cli train ...      # or: ffmix train --nproc 2 ...

Read top to bottom: the options, then ``run`` -> ``train``: check the inputs (before anything is written),
build loaders / model / optimizer / schedule, restore a checkpoint when resuming, then the epoch loop (train,
validate, log, checkpoint), then a summary. The run directory gets ``config.json``, ``metrics.jsonl``,
``last.pt`` (everything needed to resume), ``best.pt`` (best validation accuracy) and ``curves.png``.

Resuming is exact on CPU: the loader's order and mixing follow (seed, epoch), and the checkpoint holds the
model, optimizer, schedule and torch RNG state, so an interrupted and resumed run ends with the same weights
as one that was never interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .distributed import Node
from .errors import FfmixError
from .metadata import DatasetMeta, read_meta
from .system import available_cpus
from .models import MODEL_NAMES, build_model, count_parameters, resolve_model_name

CHECKPOINT_FORMAT = 1
ARTIFACTS = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png")
DEFAULT_LR = {"sgd": 0.2, "adamw": 2e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 5e-2}


# ----------------------------------------------------------------------------------------------- options

@dataclass
class Config:
    """Everything that decides a run; saved as ``config.json`` and inside every checkpoint."""

    train: str = ""
    val: str = ""
    model: str = "auto"
    width: Optional[int] = None           # None: the model's default
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: Optional[float] = None            # None: DEFAULT_LR of the optimizer
    weight_decay: Optional[float] = None  # None: DEFAULT_WEIGHT_DECAY of the optimizer
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup: float = 0.2
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mix_mode: str = "batch"
    mix_off_epoch: Optional[int] = None
    label_smoothing: float = 0.0
    targets: str = "soft"
    hflip: bool = False
    tta: bool = False
    image_size: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "on"
    compile: bool = False
    workers: Optional[int] = None
    nproc: int = 1
    out: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    stop_after_epoch: Optional[int] = None
    debug_dump: Optional[str] = None


# Settings that may change between an interrupted run and its resumption: where and how fast it runs, not
# what it computes. (Paths may move; the datasets themselves are compared by their facts instead.)
RUNTIME_KEYS = frozenset({"train", "val", "device", "channels_last", "compile", "workers", "nproc", "out", "resume",
                          "overwrite", "stop_after_epoch", "debug_dump"})
CHOICES = {"optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "linear"), "mix_mode": ("batch", "pair", "elem"),
           "targets": ("soft", "pair"), "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16"),
           "channels_last": ("on", "off"), "model": MODEL_NAMES}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults that say something: not None/False, nor where the help already states it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.description = (
        "Train an image classifier on the MixUp/CutMix stream of TRAIN.beton and report top-1 accuracy on "
        "VAL.beton after every epoch. RUN_DIR gets config.json, metrics.jsonl, last.pt (for --resume), best.pt "
        "and curves.png; only rank 0 of a multi-process run writes there.")
    data = parser.add_argument_group("data")
    data.add_argument("--train", required=True, metavar="TRAIN.beton", help="training set (from `ffmix convert`)")
    data.add_argument("--val", required=True, metavar="VAL.beton", help="held-out set for accuracy")
    data.add_argument("--image-size", type=int, metavar="PX", help="crop/resize to PX x PX (needed when image "
                      "sizes vary)")
    data.add_argument("--workers", type=int, metavar="N",
                      help="loader threads per process (default: the cores of the process's share)")

    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", default="auto", choices=MODEL_NAMES,
                       help="auto: cnn for images up to 28x28, resnet9 above")
    model.add_argument("--width", type=int, help="channel count that sets the model's size (default: cnn 48 "
                       "at 14x14, then 96; resnet9 64, 128, 256, 512; tiny 8, 16)")
    model.add_argument("--epochs", type=int, default=Config.epochs, help="length of the schedule")
    model.add_argument("--batch-size", type=int, default=Config.batch_size, help="global batch (all processes)")
    model.add_argument("--optimizer", default="sgd", choices=CHOICES["optimizer"], help="sgd is Nesterov SGD")
    model.add_argument("--lr", type=float, help="peak learning rate (default: "
                       + ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items()) + ")")
    model.add_argument("--weight-decay", type=float, help="on weights, never on BatchNorm or biases (default: "
                       + ", ".join(f"{wd:g} for {name}" for name, wd in DEFAULT_WEIGHT_DECAY.items()) + ")")
    model.add_argument("--momentum", type=float, default=Config.momentum, help="SGD momentum")
    model.add_argument("--schedule", default="onecycle", choices=CHOICES["schedule"],
                       help="onecycle: linear warm-up then linear decay to 0; linear: decay to 0 from the start")
    model.add_argument("--warmup", type=float, default=Config.warmup, help="onecycle warm-up, fraction of steps")
    model.add_argument("--hflip", action="store_true", help="flip half the images left-right (not for digits)")
    model.add_argument("--tta", action="store_true",
                       help="validate on each image and its mirror image, averaging the logits (with --hflip)")

    mix = parser.add_argument_group("mixing")
    mix.add_argument("--mixup-alpha", type=float, default=0.0, help="MixUp Beta(a, a); 0 = off")
    mix.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix Beta(a, a); 0 = off")
    mix.add_argument("--mix-prob", type=float, default=Config.mix_prob, help="chance a batch is mixed")
    mix.add_argument("--switch-prob", type=float, default=Config.switch_prob,
                     help="chance of CutMix rather than MixUp when both are on")
    mix.add_argument("--mix-mode", default="batch", choices=CHOICES["mix_mode"],
                     help="one lambda per batch, per pair or per sample")
    mix.add_argument("--mix-off-epoch", type=int, metavar="K",
                     help="train epochs K..EPOCHS (counted from 1) without mixing")
    mix.add_argument("--label-smoothing", type=float, default=0.0, help="epsilon of smoothed one-hot targets")
    mix.add_argument("--targets", default="soft", choices=CHOICES["targets"],
                     help="soft: cross-entropy on mixed soft targets; pair: lam*CE(y_a) + (1-lam)*CE(y_b)")

    run_group = parser.add_argument_group("running")
    run_group.add_argument("--seed", type=int, default=0, help="fixes initialisation, order, mixing and flips (default: 0)")
    run_group.add_argument("--device", default="auto", choices=CHOICES["device"],
                           help="auto: this rank's GPU if CUDA is available, else the CPU")
    run_group.add_argument("--precision", default="auto", choices=CHOICES["precision"],
                           help="auto: bf16 autocast on GPU, fp32 on CPU")
    run_group.add_argument("--channels-last", default="on", choices=CHOICES["channels_last"],
                           help="NHWC memory layout (faster for these convolutions on GPU and CPU)")
    run_group.add_argument("--compile", action="store_true", help="torch.compile the model (slower on CPU)")
    run_group.add_argument("--nproc", type=int, default=1, help="start this many processes with torchrun")
    run_group.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/train-TIMESTAMP)")
    run_group.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last.pt")
    run_group.add_argument("--overwrite", action="store_true", help="replace an earlier run in RUN_DIR")
    run_group.add_argument("--stop-after-epoch", type=int, metavar="K",
                           help="stop after epoch K as if interrupted (continue with --resume)")
    # Test hook: each rank writes the sample ids it trained on and its final weights to this folder.
    run_group.add_argument("--debug-dump", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of parsed arguments; raises ValueError for values out of range, naming the flag."""
    config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    check_config(config)
    return config


def check_config(config: Config) -> None:
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ValueError(f"--{flag(name)} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    positive = ["epochs", "batch_size", "nproc"] + [n for n in ("workers", "image_size", "width")
                                                    if getattr(config, n) is not None]
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"--{flag(name)} must be at least 1, got {getattr(config, name)}")
    for name in ("lr", "weight_decay", "momentum", "mixup_alpha", "cutmix_alpha"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{flag(name)} must be a finite number >= 0, got {value}")
    for name in ("mix_prob", "switch_prob", "label_smoothing", "warmup"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"--{flag(name)} must be in [0, 1], got {getattr(config, name)}")
    for name in ("mix_off_epoch", "stop_after_epoch"):
        value = getattr(config, name)
        if value is not None and not 1 <= value <= config.epochs:
            raise ValueError(f"--{flag(name)} must be an epoch in 1..{config.epochs} (--epochs), got {value}")
    if config.resume and not config.out:
        raise ValueError("--resume needs --out RUN_DIR: the run directory to continue")
    if config.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {config.seed}")


def flag(name: str) -> str:
    return name.replace("_", "-")


def config_to_argv(config: Config) -> List[str]:
    """The ``train`` command line that reproduces ``config`` (options left at their defaults are omitted)."""
    argv = ["train"]
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if value == field.default or value is None:
            continue
        if isinstance(value, bool):
            argv.append(f"--{flag(field.name)}")
        else:
            argv += [f"--{flag(field.name)}", str(value)]
    return argv


def mixing_configured(config: Config) -> bool:
    return (config.mixup_alpha > 0 or config.cutmix_alpha > 0) and config.mix_prob > 0


# --------------------------------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.nproc > 1 and not distributed.under_torchrun():
        return launch_processes(config)
    node = distributed.describe_node(config.device)
    if config.nproc > 1 and config.nproc != node.world_size:
        raise ValueError(f"--nproc {config.nproc} but torchrun started {node.world_size} processes; "
                         "drop --nproc when starting with torchrun")
    distributed.start(node)
    try:
        return train(config, node)
    finally:
        distributed.stop()


def launch_processes(config: Config) -> int:
    """``--nproc N``: check the inputs here (one clear error, not N), then start N ranks under torchrun."""
    node = distributed.describe_node(config.device)
    config = dataclasses.replace(config, out=str(run_dir_of(config)))  # one timestamped default for all ranks
    check_inputs(config, world_size=config.nproc)
    prepare_run_dir(config, is_main=False)  # read-only checks; rank 0 creates it
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, available_cpus() // config.nproc)))
    if node.device.type == "cuda" and config.nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {config.nproc} but only {torch.cuda.device_count()} GPU(s) are visible")
    argv = config_to_argv(dataclasses.replace(config, nproc=1))
    return subprocess.run(distributed.torchrun_command(config.nproc, argv), env=env).returncode


def train(config: Config, node: Node) -> int:
    train_meta = check_inputs(config, node.world_size)
    config = resolve(config, train_meta)
    run_dir = prepare_run_dir(config, is_main=node.is_main)
    checkpoint = load_checkpoint(run_dir, config, train_meta) if config.resume else None
    if checkpoint is not None and checkpoint["epoch"] >= config.epochs:
        say(node, f"ffmix train: {run_dir} already finished its {config.epochs} epochs; nothing to do")
        return 0

    torch.manual_seed(config.seed)
    train_loader, val_loader = make_loaders(config, node)
    model = build_model(config.model, train_meta.channels, train_meta.num_classes, config.width)
    model = model.to(node.device, memory_format=memory_format(config))
    optimizer = make_optimizer(model, config)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LrShape.of(config, steps_per_epoch))
    history: List[dict] = []
    best = {"val_acc": -1.0, "epoch": 0}
    if checkpoint is not None:
        restore(checkpoint, model, optimizer, scheduler, node)
        history, best = checkpoint["history"], checkpoint["best"]
    start_epoch = len(history)
    if node.is_main and checkpoint is None:
        write_json(run_dir / "config.json", describe_run(config, node, model, train_meta, val_loader.meta))
    to_input = ToModelInput(train_meta.channels, node.device, memory_format(config))
    step = make_train_step(wrap(model, config, node), optimizer, scheduler, make_loss(config), to_input, config,
                           node)
    dump = DebugDump(config, node)
    say(node, f"ffmix train: {config.model} ({count_parameters(model) / 1e6:.2f} M parameters) on "
              f"{train_meta.num_samples} images of {train_meta.num_classes} classes, {config.epochs} epochs x "
              f"{steps_per_epoch} steps of {config.batch_size}, {node.world_size} process(es) on {node.device}, "
              f"{precision(config, node)}" + (f"; resuming after epoch {start_epoch}" if start_epoch else ""))

    stop_at = config.stop_after_epoch or config.epochs
    elapsed_before = history[-1]["elapsed"] if history else 0.0   # earlier sessions of a resumed run
    loop_start = time.perf_counter()
    with hint_on_interrupt(node, run_dir, history):
        for epoch in range(start_epoch, stop_at):
            epoch_start = time.perf_counter()
            train_loader.set_epoch(epoch)
            train_loader.mixing_enabled = mixing_on(config, epoch)
            dump.start_epoch(train_loader)
            model.train()
            train_loss, train_seconds = train_one_epoch(step, train_loader, node, epoch, config.epochs, dump)
            distributed.broadcast_buffers(model, node)
            val_loss, val_acc = evaluate(model, val_loader, to_input, config, node)
            history.append({
                "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc,
                "train_images_per_s": steps_per_epoch * config.batch_size / train_seconds,
                "train_seconds": train_seconds, "seconds": time.perf_counter() - epoch_start,
                "lr": optimizer.param_groups[0]["lr"], "mixing": train_loader.mixing_enabled,
                "elapsed": elapsed_before + time.perf_counter() - loop_start})  # run time so far, with saving
            say(node, epoch_line(history[-1], config.epochs))
            if node.is_main:
                best = save_epoch(run_dir, model, optimizer, scheduler, config, train_meta, history, best)
    dump.finish(model)
    if len(history) < config.epochs:
        say(node, f"ffmix train: stopped after epoch {len(history)} of {config.epochs}; "
                  f"{resume_hint(run_dir, history)}")
        return 0
    say(node, summary_line(history, best, run_dir))
    return 0


@contextmanager
def hint_on_interrupt(node: Node, run_dir: Path, history: List[dict]):
    """On Ctrl-C, say what can be resumed before the CLI reports the interruption."""
    try:
        yield
    except KeyboardInterrupt:
        say(node, f"ffmix train: interrupted in epoch {len(history) + 1}; {resume_hint(run_dir, history)}")
        raise


def resume_hint(run_dir: Path, history: List[dict]) -> str:
    if not history:
        return "no epoch finished, so there is nothing to resume"
    return f"{run_dir / 'last.pt'} holds epoch {len(history)}: continue with the same options plus --resume"


def say(node: Node, line: str) -> None:
    if node.is_main:
        print(line, flush=True)


# ---------------------------------------------------------------------------------------- input checks

def check_inputs(config: Config, world_size: int) -> DatasetMeta:
    """Fail before anything is written: missing files, train/val that disagree, a batch too large.
    Returns the training set's metadata."""
    train_meta, val_meta = read_dataset(config.train, "--train"), read_dataset(config.val, "--val")
    if train_meta.num_classes != val_meta.num_classes:
        raise FfmixError(f"--train has {train_meta.num_classes} classes but --val has {val_meta.num_classes}; "
                         "they must be splits of the same dataset")
    if train_meta.channels != val_meta.channels:
        raise FfmixError(f"--train has {train_meta.channels}-channel images but --val has {val_meta.channels}")
    if config.image_size is None:
        for name, meta in (("--train", train_meta), ("--val", val_meta)):
            if meta.image_shape is None:
                raise FfmixError(f"{name} images vary in size ({meta.min_size} to {meta.max_size}); "
                                 "pass --image-size to crop them to one size")
        if tuple(train_meta.image_shape) != tuple(val_meta.image_shape):
            raise FfmixError(f"--train images are {fmt_shape(train_meta.image_shape)} but --val images are "
                             f"{fmt_shape(val_meta.image_shape)}; pass --image-size to bring both to one size")
    if config.batch_size > train_meta.num_samples:
        raise FfmixError(f"--batch-size {config.batch_size} is larger than the {train_meta.num_samples} "
                         f"training images in {config.train}; lower it")
    if val_meta.num_samples < world_size:
        raise FfmixError(f"--val has {val_meta.num_samples} images, fewer than the {world_size} processes")
    if config.batch_size % world_size:
        raise FfmixError(f"--batch-size {config.batch_size} (the global batch) must divide evenly over "
                         f"{world_size} processes")
    return train_meta


def read_dataset(path: str, flag_name: str) -> DatasetMeta:
    if not path:
        raise FfmixError(f"{flag_name} is required")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag_name} {path}: no such file; create it with `ffmix convert`")
    return read_meta(path)


def fmt_shape(shape) -> str:
    return "x".join(map(str, shape))


def resolve(config: Config, train_meta: DatasetMeta) -> Config:
    """Replace the 'auto' / None choices that depend on the data or the optimizer by concrete values, so that
    the saved config says exactly what ran."""
    shape = (config.image_size,) * 2 if config.image_size else train_meta.image_shape
    return dataclasses.replace(
        config, model=resolve_model_name(config.model, shape),
        lr=DEFAULT_LR[config.optimizer] if config.lr is None else config.lr,
        weight_decay=DEFAULT_WEIGHT_DECAY[config.optimizer] if config.weight_decay is None else config.weight_decay,
        out=str(run_dir_of(config)))


def run_dir_of(config: Config) -> Path:
    if config.out:
        return Path(config.out)
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(config: Config, is_main: bool) -> Path:
    """Check RUN_DIR can take this run (and, on rank 0, create it) without touching an earlier run in it."""
    run_dir = run_dir_of(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise FfmixError(f"--out {run_dir} is a file, not a directory; choose another --out")
    existing = [name for name in ARTIFACTS if (run_dir / name).exists()]
    if config.resume and not (run_dir / "last.pt").is_file():
        raise FfmixError(f"--resume: no checkpoint to resume in {run_dir} (last.pt is missing); "
                         "run without --resume to start a new run")
    if existing and not config.resume and not config.overwrite:
        raise FfmixError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out")
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise FfmixError(f"cannot write to run directory {run_dir} ({exc.strerror}); choose another --out") \
                from None
        if config.overwrite and not config.resume:
            for name in existing:
                (run_dir / name).unlink()
    elif not os.access(nearest_existing(run_dir), os.W_OK):
        raise FfmixError(f"cannot write to run directory {run_dir} (permission denied); choose another --out")
    return run_dir


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --------------------------------------------------------------------------------- data, model, optimizer

def make_loaders(config: Config, node: Node):
    """The training loader (this rank's share of each epoch, mixed) and the validation loader (this rank's
    every world_size-th image, in order, unpadded so each image counts once in the accuracy).

    Both hand over uint8 pixels, which ``ToModelInput`` normalises on the device: on a GPU that is the
    loader's own float path anyway, and on the CPU it costs well under 1% of a step for these models. (The
    loader's fused CPU float output is avoided on purpose: its normalisation constants are freed when FFCV
    re-declares the pipeline, so with two loaders in turn it read garbage from the second epoch on.)
    """
    from .loader import make_loader  # imported here so `ffmix train --help` does not start Numba

    common = dict(device=node.device, image_size=config.image_size, num_workers=config.workers or node.threads,
                  dtype=torch.uint8, normalize=False)
    mix = mixing_configured(config)
    targets = config.targets if mix else "label"
    # Index targets carry no smoothing; the loss applies it then.
    smoothing = config.label_smoothing if targets == "soft" else 0.0
    train_loader = make_loader(
        config.train, batch_size=config.batch_size // node.world_size, seed=config.seed, order="random",
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, mix_prob=config.mix_prob,
        switch_prob=config.switch_prob, mode=config.mix_mode, label_smoothing=smoothing, targets=targets,
        distributed=node.distributed, drop_last=True, **common)
    val_meta = read_meta(config.val)
    val_indices = list(range(node.rank, val_meta.num_samples, node.world_size))
    val_loader = make_loader(config.val, batch_size=2 * config.batch_size // node.world_size, order="sequential",
                             targets="label", indices=val_indices, drop_last=False, **common)
    return train_loader, val_loader


class ToModelInput:
    """uint8 (N, C, H, W) pixels -> float32 in the model's memory format, normalised as ffmix's loader does
    by default: [-1, 1] for grayscale, ImageNet mean/std for colour."""

    def __init__(self, channels: int, device: torch.device, memory_format: torch.memory_format):
        from .loader import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD

        mean, std = (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)
        mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std   # one multiply-add per pixel
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(torch.float32, memory_format=self.memory_format)
        return images.mul_(self.scale).add_(self.shift)


def memory_format(config: Config) -> torch.memory_format:
    # NHWC lets cuDNN use tensor cores without transposes, and oneDNN's CPU convolutions also run faster on it
    # for these small nets (1.2-1.5x for `cnn` on 28x28, measured on 1 and 2 CPU cores).
    return torch.contiguous_format if config.channels_last == "off" else torch.channels_last


def precision(config: Config, node: Node) -> str:
    if config.precision == "auto":
        # CPUs without bf16 units emulate it slowly; GPUs since Ampere run it at twice the fp32 tensor rate.
        return "bf16" if node.device.type == "cuda" else "fp32"
    return config.precision


def autocast(config: Config, node: Node):
    if precision(config, node) == "bf16":
        return torch.autocast(device_type=node.device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    # Weight decay on BatchNorm scales and biases only shrinks what the next layer undoes; keep it on weights.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class LrShape:
    """Learning-rate multiplier per step, piecewise linear: from ``start`` up to 1 at ``peak_step``, then down
    to 0 at ``total_steps``. A plain object (not a lambda) so LambdaLR saves and restores it."""

    total_steps: int
    peak_step: int
    start: float

    @classmethod
    def of(cls, config: Config, steps_per_epoch: int) -> "LrShape":
        total = config.epochs * steps_per_epoch
        if config.schedule == "linear":
            return cls(total, 0, 1.0)
        return cls(total, max(1, round(config.warmup * total)), 0.1)

    def __call__(self, step: int) -> float:
        if step < self.peak_step:
            return self.start + (1.0 - self.start) * step / self.peak_step
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.peak_step))


def wrap(model: nn.Module, config: Config, node: Node) -> nn.Module:
    """What the training step calls: ``model`` in DDP and/or compiled; ``model`` itself stays the plain module
    that evaluation and checkpoints use (they share parameters)."""
    if node.distributed:
        device_ids = [node.device.index] if node.device.type == "cuda" else None
        # BatchNorm statistics are synchronised once per epoch (broadcast_buffers in the loop), not before every
        # step. Newer torch calls this switch forward_sync_buffers and warns about the old name.
        ddp = nn.parallel.DistributedDataParallel
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else "broadcast_buffers")
        model = ddp(model, device_ids=device_ids, **{no_sync: False})
    if config.compile:
        model = torch.compile(model)  # after DDP, so compiled graphs break at its gradient buckets
    return model


def make_loss(config: Config):
    """loss(logits, targets) for what the training loader yields: soft targets, (y_a, y_b, lam) or labels."""
    smoothing = config.label_smoothing

    def soft_cross_entropy(logits, soft_targets):
        return -(soft_targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()

    def pair_cross_entropy(logits, pair):
        y_a, y_b, lam = pair
        logits = logits.float()
        loss_a = F.cross_entropy(logits, y_a, reduction="none", label_smoothing=smoothing)
        loss_b = F.cross_entropy(logits, y_b, reduction="none", label_smoothing=smoothing)
        return (lam * loss_a + (1 - lam) * loss_b).mean()

    def label_cross_entropy(logits, labels):
        return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)

    if not mixing_configured(config):
        return label_cross_entropy
    return soft_cross_entropy if config.targets == "soft" else pair_cross_entropy


def mixing_on(config: Config, epoch: int) -> bool:
    """Whether 0-based ``epoch`` mixes: always, unless --mix-off-epoch K (1-based) switched it off."""
    return config.mix_off_epoch is None or epoch + 1 < config.mix_off_epoch


# ------------------------------------------------------------------------------------------ train, eval

def make_train_step(model: nn.Module, optimizer, scheduler, loss_fn, to_input: ToModelInput, config: Config,
                    node: Node):
    """step(images, targets) -> the batch's loss (a detached tensor): forward, backward, update, schedule."""

    def step(images, targets) -> torch.Tensor:
        images = to_input(images)
        if config.hflip:
            images = random_hflip(images)
        with autocast(config, node):
            loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return step


def train_one_epoch(step, loader, node: Node, epoch: int, epochs: int, dump) -> Tuple[float, float]:
    """One pass over this rank's share; returns (mean training loss over all ranks, seconds)."""
    from tqdm import tqdm

    loss_sum = torch.zeros((), dtype=torch.float64, device=node.device)  # summed on device: no sync per step
    steps = 0
    start = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step",
               disable=None if node.is_main else True)
    for images, targets in loader:
        if steps == 0:
            # FFCV sets torch's thread count to its worker count at each epoch start; keep ours.
            torch.set_num_threads(node.threads)
        dump.batch(targets)
        loss_sum += step(images, targets)
        steps += 1
        bar.update()
        if steps % 25 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss_sum.item() / steps:.4f}")
    bar.close()
    if node.device.type == "cuda":
        torch.cuda.synchronize(node.device)
    seconds = time.perf_counter() - start
    total_loss, total_steps = distributed.sum_over_ranks([loss_sum.item(), steps], node)
    return total_loss / total_steps, seconds


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (torch's global RNG, which checkpoints save).
    Flipping after mixing equals mixing flipped images: a CutMix box moves, its area (the label weight) not."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


@torch.no_grad()
def evaluate(model: nn.Module, loader, to_input: ToModelInput, config: Config, node: Node) -> Tuple[float, float]:
    """(cross-entropy, top-1 accuracy) on the validation set, summed over every rank's share."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=node.device)
    correct = torch.zeros((), dtype=torch.int64, device=node.device)
    count = 0
    for images, labels in loader:
        images = to_input(images)
        with autocast(config, node):
            logits = model(images).float()
            if config.tta:  # the mirror image is as likely as the original when training used --hflip
                logits = (logits + model(images.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        count += labels.shape[0]
    total_loss, total_correct, total_count = distributed.sum_over_ranks([loss_sum.item(), correct.item(), count],
                                                                          node)
    return total_loss / total_count, total_correct / total_count


def epoch_line(record: dict, epochs: int) -> str:
    mixing = "" if record["mixing"] else "  (no mixing)"
    return (f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f}  "
            f"{record['train_images_per_s']:>6.0f} img/s  val acc {100 * record['val_acc']:6.2f}%  "
            f"val loss {record['val_loss']:.4f}  {record['seconds']:6.1f} s{mixing}")


def summary_line(history: List[dict], best: dict, run_dir: Path) -> str:
    train_seconds = sum(r["train_seconds"] for r in history)
    images_per_s = sum(r["train_images_per_s"] * r["train_seconds"] for r in history) / train_seconds
    return (f"done: {len(history)} epochs in {history[-1]['elapsed']:.1f} s ({images_per_s:.0f} train img/s); "
            f"final val acc {100 * history[-1]['val_acc']:.2f}% (best {100 * best['val_acc']:.2f}% at epoch "
            f"{best['epoch']}); {run_dir}")


# ------------------------------------------------------------------------------------- checkpoints, files

def save_epoch(run_dir: Path, model, optimizer, scheduler, config: Config, meta: DatasetMeta,
               history: List[dict], best: dict) -> dict:
    """After an epoch (rank 0): last.pt, best.pt when validation accuracy improved, metrics and curves.
    Every file is written to a temporary name and renamed, so an interruption leaves the previous one."""
    latest = history[-1]
    if latest["val_acc"] > best["val_acc"]:
        best = {"val_acc": latest["val_acc"], "epoch": latest["epoch"]}
        atomic_save({"format": CHECKPOINT_FORMAT, "epoch": latest["epoch"], "val_acc": latest["val_acc"],
                     "config": dataclasses.asdict(config), "model": model.state_dict()}, run_dir / "best.pt")
    state = {"format": CHECKPOINT_FORMAT, "epoch": latest["epoch"], "config": dataclasses.asdict(config),
             "data": data_facts(meta), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history, "best": best}
    atomic_save(state, run_dir / "last.pt")
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    plot_curves(history, run_dir / "curves.png")
    return best


def data_facts(meta: DatasetMeta) -> dict:
    """What a checkpoint's model depends on in the training data."""
    return {"num_classes": meta.num_classes, "channels": meta.channels, "num_samples": meta.num_samples,
            "image_shape": list(meta.image_shape) if meta.image_shape else None}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_checkpoint(run_dir: Path, config: Config, meta: DatasetMeta) -> dict:
    """last.pt of ``run_dir``, checked against this run's settings and data; raises FfmixError naming every
    difference, so a resumed run never silently continues a different one."""
    path = run_dir / "last.pt"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises assorted errors on truncated or foreign files
        raise FfmixError(f"--resume: {path} is not a readable ffmix checkpoint ({type(exc).__name__}); "
                         "start a new run with another --out") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise FfmixError(f"--resume: {path} is not an ffmix checkpoint (format {CHECKPOINT_FORMAT})")
    saved = {k: v for k, v in checkpoint["config"].items() if k not in RUNTIME_KEYS}
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_KEYS}
    differences = [f"--{flag(k)} {saved.get(k)!r} in the checkpoint but {wanted[k]!r} now"
                   for k in wanted if saved.get(k) != wanted[k]]
    differences += [f"training data {k} {checkpoint['data'].get(k)!r} in the checkpoint but {v!r} now"
                    for k, v in data_facts(meta).items() if checkpoint["data"].get(k) != v]
    if differences:
        raise FfmixError(f"--resume: the run in {run_dir} is incompatible with these options: "
                         f"{'; '.join(differences)}. Resume with the run's options, or choose another --out")
    return checkpoint


def restore(checkpoint: dict, model, optimizer, scheduler, node: Node) -> None:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if node.device.type == "cuda" and "cuda" in checkpoint["rng"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, content: dict) -> None:
    atomic_write(path, json.dumps(content, indent=2) + "\n")


def describe_run(config: Config, node: Node, model: nn.Module, train_meta: DatasetMeta,
                 val_meta: DatasetMeta) -> dict:
    """config.json: the resolved options, plus the facts needed to compare runs."""
    from importlib.metadata import version  # FFCV's own __version__ is stale (1.0.2 says 0.0.3rc1)

    return {"config": dataclasses.asdict(config), "command": shlex.join(["ffmix", *config_to_argv(config)]),
            "world_size": node.world_size, "device": str(node.device), "precision": precision(config, node),
            "threads_per_process": node.threads, "parameters": count_parameters(model),
            "train_data": dataclasses.asdict(train_meta), "val_data": dataclasses.asdict(val_meta),
            "versions": {name: version(name) for name in ("ffmix", "torch", "ffcv", "numpy", "numba")}
            | {"python": sys.version.split()[0]}}


def plot_curves(history: List[dict], path: Path) -> None:
    """curves.png: training and validation loss, and validation accuracy, per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train (on its targets)")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.plot(epochs, [100 * r["val_acc"] for r in history], marker="o", color="tab:green")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="validation accuracy")
    unmixed = [r["epoch"] for r in history if not r["mixing"]]
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if unmixed and len(unmixed) < len(history):  # mark --mix-off-epoch: the train loss drops there
            ax.axvspan(min(unmixed) - 0.5, max(unmixed) + 0.5, color="grey", alpha=0.15, label="no mixing")
    loss_ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


class DebugDump:
    """``--debug-dump DIR`` (a test hook): each rank writes ``rank{R}.pt`` with the sample ids of every epoch
    (FFCV's order for this rank), the labels of unmixed batches as they arrived, and its final weights."""

    def __init__(self, config: Config, node: Node):
        self.folder = Path(config.debug_dump) if config.debug_dump else None
        self.rank = node.rank
        self.sample_ids: List[List[int]] = []
        self.labels: List[List[int]] = []
        self.mixing = False

    def start_epoch(self, loader) -> None:
        if self.folder is None:
            return
        ffcv_loader = loader.ffcv_loader
        order = ffcv_loader.next_traversal_order()[:len(loader) * loader.batch_size]
        self.sample_ids.append([int(i) for i in order])
        self.labels.append([])
        self.mixing = loader.mixing_enabled

    def batch(self, targets) -> None:
        if self.folder is None:
            return
        # A mixed batch has no single label per image; record labels only when they are plain.
        if isinstance(targets, torch.Tensor) and (targets.ndim == 1 or not self.mixing):
            labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
            self.labels[-1] += labels.tolist()

    def finish(self, model: nn.Module) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save({"sample_ids": self.sample_ids, "labels": self.labels, "model": state},
                   self.folder / f"rank{self.rank}.pt")
