"""The options of ``ffmix train``: the Config, its command line, its checks, and the defaults that depend on the data.

A default that cannot be one number for every dataset (batch size, learning rate, warm-up, precision) is None or
"auto" on the command line and is replaced by a concrete value in ``resolve``, so the saved config says what ran:

* batch size: 256, halved (down to 16) until an epoch has at least 64 steps, so that a small dataset still gets
  dozens of updates per epoch (1,000 images: 62 steps of 16; 5,000: 78 of 64; 60,000: 234 of 256);
* learning rate: for SGD 0.2 at batch 256, scaled linearly with the batch (the linear scaling rule: the same
  step per image seen); AdamW keeps 2e-3 at any batch (its steps are normalised per parameter, and a rate
  shrunk for small batches left a short run of 24 steps at chance);
* warm-up: 20% of the run but at least 50 steps (a short run's 20% is too few steps for BatchNorm statistics and
  momentum to settle at the peak rate), never more than half the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from ..cli import HelpFormatter
from ..errors import FfmixError
from ..metadata import DatasetMeta, read_meta
from ..models import MODEL_NAMES, resolve_model_name
from ..system import check_memory, loader_buffer_bytes
from .resolution import ResSchedule

BASE_LR = {"sgd": 0.2, "adamw": 2e-3}           # peak learning rate at batch BASE_BATCH (SGD: scaled)
BASE_BATCH = 256
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 5e-2}
MAX_AUTO_BATCH, MIN_AUTO_BATCH, MIN_STEPS_PER_EPOCH = 256, 16, 64
WARMUP_FRACTION, WARMUP_MIN_STEPS = 0.2, 50


@dataclass
class Config:
    """Everything that decides a run; saved as ``config.json`` and inside every checkpoint."""

    train: str = ""
    val: str = ""
    model: str = "auto"
    width: Optional[int] = None           # None: the model's default
    epochs: int = 10
    batch_size: Optional[int] = None      # None: auto_batch_size
    optimizer: str = "sgd"
    lr: Optional[float] = None            # None: default_lr
    weight_decay: Optional[float] = None  # None: DEFAULT_WEIGHT_DECAY of the optimizer
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_steps: Optional[int] = None    # None: default_warmup_steps
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mix_mode: str = "batch"
    mix_off_epoch: Optional[int] = None
    label_smoothing: float = 0.0
    targets: str = "soft"
    hflip: bool = False
    auto_augment: Optional[str] = None
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1
    tta: bool = False
    image_size: Optional[int] = None
    res_schedule: Optional[str] = None    # LOW:HIGH:E1:E2 (resolution.ResSchedule); None: image_size throughout
    on_decode_error: str = "raise"
    exact_decode: bool = False
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
    compare_mixing: bool = False


# Settings that may change between an interrupted run and its resumption: where the files are and how fast the
# loader runs, not what is computed. (Paths may move; the datasets themselves are compared by their facts. The
# world size and device are compared separately: they are not options of a torchrun-started rank.
# --on-decode-error may change too: a run stopped by a damaged image is resumed with skip.)
RUNTIME_KEYS = frozenset({"train", "val", "device", "workers", "nproc", "out", "resume", "overwrite",
                          "stop_after_epoch", "compare_mixing", "on_decode_error"})
CHOICES = {"optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "linear"), "mix_mode": ("batch", "pair", "elem"),
           "targets": ("soft", "pair"), "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16"),
           "channels_last": ("on", "off"), "model": MODEL_NAMES, "on_decode_error": ("raise", "skip"),
           "re_mode": ("const", "rand", "pixel")}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    parser.description = (
        "Train an image classifier on the MixUp/CutMix stream of TRAIN.beton and report top-1 accuracy on "
        "VAL.beton after every epoch, with the share of step time spent waiting for data. RUN_DIR gets "
        "config.json, metrics.jsonl, last.pt (for --resume), best.pt and curves.png; only rank 0 of a "
        "multi-process run writes there. The defaults learn on any dataset `ffmix convert` writes: batch size, "
        "learning rate and warm-up follow the dataset's size (config.json records the values used).")
    data = parser.add_argument_group("data")
    data.add_argument("--train", required=True, metavar="TRAIN.beton", help="training set (from `ffmix convert`)")
    data.add_argument("--val", required=True, metavar="VAL.beton", help="held-out set for accuracy")
    data.add_argument("--image-size", type=int, metavar="PX", help="crop/resize to PX x PX (needed when image "
                      "sizes vary)")
    data.add_argument("--res-schedule", metavar="LOW:HIGH:E1:E2", help=(
        "progressive resolution for training: LOW px up to epoch E1, HIGH from epoch E2, linear between, "
        "rounded to a multiple of 32 (whole pixels when LOW or HIGH is not one); evaluation stays at "
        "--image-size (e.g. 160:192:10:13)"))
    data.add_argument("--on-decode-error", default="raise", choices=CHOICES["on_decode_error"], help=(
        "an image that cannot be decoded stops the run with its index and file (raise), or is replaced by "
        "another image of its batch, label included, and counted per epoch (skip)"))
    data.add_argument("--exact-decode", action="store_true", help=(
        "decode each cropped JPEG whole, as FFCV does (FFCV's pixels, 1.4-2x slower); by default only the crop "
        "box's region is decoded, DCT-scaled (docs/decoding.md)"))
    data.add_argument("--workers", type=int, metavar="N",
                      help="loader threads per process (default: the cores of the process's share)")

    model = parser.add_argument_group("model and optimisation")
    model.add_argument("--model", default="auto", choices=MODEL_NAMES,
                       help="auto: cnn for images up to 28x28, resnet9 above")
    model.add_argument("--width", type=int, help="channel count that sets the model's size (default: cnn 48 "
                       "at 14x14, then 96; resnet9 64, 128, 256, 512; tiny 8, 16)")
    model.add_argument("--epochs", type=int, default=Config.epochs, help="length of the schedule")
    model.add_argument("--batch-size", type=int, help=(
        f"global batch, all processes (default: {MAX_AUTO_BATCH}, halved down to {MIN_AUTO_BATCH} until an "
        f"epoch has {MIN_STEPS_PER_EPOCH} steps)"))
    model.add_argument("--optimizer", default="sgd", choices=CHOICES["optimizer"], help="sgd is Nesterov SGD")
    model.add_argument("--lr", type=float, help=(
        f"peak learning rate (default: sgd {BASE_LR['sgd']:g} x batch/{BASE_BATCH}, adamw {BASE_LR['adamw']:g})"))
    model.add_argument("--weight-decay", type=float, help="on weights, never on BatchNorm or biases (default: "
                       + ", ".join(f"{wd:g} for {name}" for name, wd in DEFAULT_WEIGHT_DECAY.items()) + ")")
    model.add_argument("--momentum", type=float, default=Config.momentum, help="SGD momentum")
    model.add_argument("--schedule", default="onecycle", choices=CHOICES["schedule"],
                       help="onecycle: linear warm-up then linear decay to 0; linear: decay to 0 from the start")
    model.add_argument("--warmup-steps", type=int, metavar="N", help=(
        f"onecycle warm-up in optimizer steps (default: {100 * WARMUP_FRACTION:.0f}%% of the run, at least "
        f"{WARMUP_MIN_STEPS} steps, at most half the run)"))
    model.add_argument("--hflip", action="store_true", help="flip half the training images left-right, seeded by (seed, epoch, image) like the mixing, so a resumed run sees the same flips (not for digits)")
    model.add_argument("--auto-augment", metavar="CONFIG", help=(
        "RandAugment as timm's config string (e.g. rand-m9-mstd0.5-inc1) or 'trivial' (TrivialAugmentWide): "
        "torchvision's ops on the uint8 images before mixing, seeded by (seed, epoch, image); "
        "docs/auto_augment.md"))
    model.add_argument("--re-prob", type=float, default=0.0, help=(
        "RandomErasing: chance an image gets erased boxes, after mixing, on the normalised images (CPU or GPU); "
        "targets untouched, as in timm"))
    model.add_argument("--re-mode", default="const", choices=CHOICES["re_mode"],
                       help="erased values: const 0 (the mean colour), rand normal per box and channel, pixel per pixel")
    model.add_argument("--re-count", type=int, default=1, help="up to this many boxes per erased image")
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
    mix.add_argument("--compare-mixing", action="store_true", help=(
        "train twice, as given and with mixing off (everything else equal), into RUN_DIR/mixing-on and "
        "RUN_DIR/mixing-off, then print and save (RUN_DIR/compare.md, compare.json) a table of accuracy, "
        "seconds, train images/s and data-wait share"))

    run_group = parser.add_argument_group("running")
    run_group.add_argument("--seed", type=int, default=0,
                           help="fixes initialisation, order, mixing and flips (default: 0)")
    run_group.add_argument("--device", default="auto", choices=CHOICES["device"],
                           help="auto: this rank's GPU if CUDA is available, else the CPU")
    run_group.add_argument("--precision", default="auto", choices=CHOICES["precision"],
                           help="auto: bf16 autocast on GPU, fp32 on CPU")
    run_group.add_argument("--channels-last", default="on", choices=CHOICES["channels_last"],
                           help="NHWC memory layout (faster for these convolutions on GPU and CPU)")
    run_group.add_argument("--compile", action="store_true", help="torch.compile the model (slower on CPU)")
    run_group.add_argument("--nproc", type=int, default=1, help="start this many processes with torchrun")
    run_group.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/train-TIMESTAMP)")
    run_group.add_argument("--resume", action="store_true", help=(
        "continue the run in RUN_DIR from its last.pt; refused if anything that changes the computation "
        "differs (options, data, number of processes, device type)"))
    run_group.add_argument("--overwrite", action="store_true", help="replace an earlier run in RUN_DIR")
    run_group.add_argument("--stop-after-epoch", type=int, metavar="K",
                           help="stop after epoch K as if interrupted (continue with --resume)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of parsed arguments; raises FfmixError for values out of range, naming the flag."""
    config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    check_config(config)
    return config


def check_config(config: Config) -> None:
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise FfmixError(f"--{flag(name)} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
    positive = ["epochs", "nproc"] + [n for n in ("workers", "image_size", "width", "batch_size")
                                      if getattr(config, n) is not None]
    for name in positive:
        if getattr(config, name) < 1:
            raise FfmixError(f"--{flag(name)} must be at least 1, got {getattr(config, name)}")
    if config.warmup_steps is not None and config.warmup_steps < 0:
        raise FfmixError(f"--warmup-steps must be >= 0, got {config.warmup_steps}")
    for name in ("lr", "weight_decay", "momentum", "mixup_alpha", "cutmix_alpha"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise FfmixError(f"--{flag(name)} must be a finite number >= 0, got {value}")
    if config.re_count < 1:
        raise FfmixError(f"--re-count must be at least 1, got {config.re_count}")
    for name in ("mix_prob", "switch_prob", "label_smoothing", "re_prob"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise FfmixError(f"--{flag(name)} must be in [0, 1], got {getattr(config, name)}")
    for name in ("mix_off_epoch", "stop_after_epoch"):
        value = getattr(config, name)
        if value is not None and not 1 <= value <= config.epochs:
            raise FfmixError(f"--{flag(name)} must be an epoch in 1..{config.epochs} (--epochs), got {value}")
    if config.res_schedule is not None:
        ResSchedule.parse(config.res_schedule)
    if config.auto_augment is not None:
        from ..ops.auto_augment_config import read_auto_augment
        try:
            read_auto_augment(config.auto_augment)
        except FfmixError as error:
            raise FfmixError(f"--auto-augment: {error}") from None
    if config.resume and not config.out:
        raise FfmixError("--resume needs --out RUN_DIR: the run directory to continue")
    if config.resume and config.overwrite:
        raise FfmixError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if config.out is not None and not config.out.strip():
        raise FfmixError("--out is empty; name the run directory (or omit --out for runs/train-TIMESTAMP)")
    if config.seed < 0:
        raise FfmixError(f"--seed must be >= 0, got {config.seed}")
    if config.compare_mixing:
        if not mixing_configured(config):
            raise FfmixError("--compare-mixing compares a mixed run with an unmixed one: also pass --mixup-alpha "
                             "and/or --cutmix-alpha (> 0, with --mix-prob > 0)")
        if config.resume or config.stop_after_epoch is not None:
            raise FfmixError("--compare-mixing runs both trainings to the end: drop --resume and "
                             "--stop-after-epoch (or resume each run directory on its own)")


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


# ------------------------------------------------------------------------------- defaults from the data

def auto_batch_size(num_samples: int, world_size: int) -> int:
    """MAX_AUTO_BATCH, halved (not below MIN_AUTO_BATCH) until an epoch has MIN_STEPS_PER_EPOCH steps; a
    multiple of ``world_size`` and at most ``num_samples``."""
    batch = MAX_AUTO_BATCH
    while batch > MIN_AUTO_BATCH and num_samples // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    batch = min(batch, num_samples)
    return max(world_size, batch - batch % world_size)


def default_lr(optimizer: str, batch_size: int) -> float:
    return BASE_LR[optimizer] * (batch_size / BASE_BATCH if optimizer == "sgd" else 1.0)


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch: FFCV gives each rank ceil(N / world) samples (padding with repeats) and
    drops the last partial batch."""
    return math.ceil(num_samples / world_size) // (batch_size // world_size)


def default_warmup_steps(total_steps: int) -> int:
    return min(max(WARMUP_MIN_STEPS, round(WARMUP_FRACTION * total_steps)), total_steps // 2)


def resolve(config: Config, train_meta: DatasetMeta, world_size: int, device_type: str) -> Config:
    """Replace the "auto" / None choices that depend on the data, the processes or the device by concrete
    values, so that the saved config says exactly what ran."""
    side = config.image_size or (ResSchedule.parse(config.res_schedule).high if config.res_schedule else None)
    shape = (side,) * 2 if side else train_meta.image_shape
    batch_size = config.batch_size or auto_batch_size(train_meta.num_samples, world_size)
    total_steps = config.epochs * steps_per_epoch(train_meta.num_samples, batch_size, world_size)
    warmup_steps = default_warmup_steps(total_steps) if config.warmup_steps is None else config.warmup_steps
    if config.schedule == "onecycle" and warmup_steps >= total_steps:
        raise FfmixError(f"--warmup-steps {warmup_steps} leaves no step to decay in a run of {total_steps} steps "
                         f"({config.epochs} epochs); lower it (or omit it for the default)")
    return dataclasses.replace(
        config, model=resolve_model_name(config.model, shape), batch_size=batch_size,
        lr=default_lr(config.optimizer, batch_size) if config.lr is None else config.lr,
        weight_decay=DEFAULT_WEIGHT_DECAY[config.optimizer] if config.weight_decay is None else config.weight_decay,
        warmup_steps=warmup_steps if config.schedule == "onecycle" else 0,
        # CPUs without bf16 units emulate it slowly; GPUs since Ampere run it at twice the fp32 tensor rate.
        precision=("bf16" if device_type == "cuda" else "fp32") if config.precision == "auto" else config.precision,
        out=str(run_dir_of(config)))


def run_dir_of(config: Config) -> Path:
    if config.out:
        return Path(config.out)
    return Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------------ input checks

def check_inputs(config: Config, world_size: int) -> Tuple[DatasetMeta, DatasetMeta]:
    """Fail before anything is written: missing files, train/val that disagree, a batch too large.
    Returns the training and validation sets' metadata."""
    train_meta, val_meta = read_dataset(config.train, "--train"), read_dataset(config.val, "--val")
    if train_meta.num_classes != val_meta.num_classes:
        raise FfmixError(f"--train has {train_meta.num_classes} classes but --val has {val_meta.num_classes}; "
                         "they must be splits of the same dataset")
    if train_meta.channels != val_meta.channels:
        raise FfmixError(f"--train has {train_meta.channels}-channel images but --val has {val_meta.channels} "
                         "(one was converted from grayscale, the other from colour images); convert both from "
                         "the same kind of source so the model sees one channel count")
    if config.image_size is None:
        # with --res-schedule the training images are cropped to the schedule's sizes; evaluation is not
        checked = [("--val", val_meta)] + ([] if config.res_schedule else [("--train", train_meta)])
        for name, meta in checked:
            if meta.image_shape is None:
                raise FfmixError(f"{name} images vary in size ({meta.min_size} to {meta.max_size}); "
                                 "pass --image-size to crop them to one size")
        if config.res_schedule is None and tuple(train_meta.image_shape) != tuple(val_meta.image_shape):
            raise FfmixError(f"--train images are {fmt_shape(train_meta.image_shape)} but --val images are "
                             f"{fmt_shape(val_meta.image_shape)}; pass --image-size to bring both to one size")
    if config.res_schedule is not None and train_meta.image_shape is not None:
        schedule = ResSchedule.parse(config.res_schedule)
        first, stored = schedule.size_at(0), tuple(train_meta.image_shape)
        if (first, first) == stored and schedule.high != schedule.low:
            # a loader made at the stored size decodes as stored and cannot change size later
            raise FfmixError(f"--res-schedule {config.res_schedule} starts at the stored size of the --train images "
                             f"({fmt_shape(stored)}); start below or above it (the loader crops only then)")
    if config.batch_size is not None and config.batch_size > train_meta.num_samples:
        raise FfmixError(f"--batch-size {config.batch_size} is larger than the {train_meta.num_samples} "
                         f"training images in {config.train}; lower it")
    if val_meta.num_samples < world_size or train_meta.num_samples < world_size:
        raise FfmixError(f"--train has {train_meta.num_samples} and --val {val_meta.num_samples} images: each "
                         f"needs at least one per process ({world_size})")
    if config.batch_size is not None and config.batch_size % world_size:
        raise FfmixError(f"--batch-size {config.batch_size} (the global batch) must divide evenly over "
                         f"{world_size} processes")
    if mixing_configured(config) and config.batch_size is not None and config.batch_size // world_size < 2:
        raise FfmixError(f"--batch-size {config.batch_size} over {world_size} process(es) leaves "
                         f"{config.batch_size // world_size} image per batch, which cannot mix (the partner is "
                         "another image of the batch); raise --batch-size or drop the mixing options")
    check_loader_memory(config, train_meta, world_size)
    return train_meta, val_meta


def check_loader_memory(config: Config, train_meta: DatasetMeta, world_size: int) -> None:
    """Refuse, before any rank allocates, an image size and batch whose loader buffers (training batch, and the
    validation batch of twice its size, summed over this node's processes) would not fit in memory."""
    shape = (config.image_size,) * 2 if config.image_size else tuple(train_meta.image_shape)
    batch = config.batch_size or auto_batch_size(train_meta.num_samples, world_size)
    import torch
    on_host = 4 if config.device == "cpu" or not torch.cuda.is_available() else 0  # float32 output on the CPU
    needed = loader_buffer_bytes(batch, shape, output_itemsize=on_host) + loader_buffer_bytes(
        2 * batch, shape, output_itemsize=on_host)
    check_memory(needed, f"the loaders' buffers for batches of {batch} images of {fmt_shape(shape)} "
                 f"({world_size} process(es))", "lower --image-size or --batch-size")


def read_dataset(path: str, flag_name: str) -> DatasetMeta:
    if not path:
        raise FfmixError(f"{flag_name} is required")
    if Path(path).is_dir():
        raise FfmixError(f"{flag_name} {path} is a folder; give the .beton file `ffmix convert` wrote")
    if not Path(path).is_file():
        raise FfmixError(f"{flag_name} {path}: no such file; create it with `ffmix convert`")
    from ..integrity import open_whole_beton
    open_whole_beton(path)  # damage is named as such, before the sidecar's fingerprint is compared
    return read_meta(path)


def fmt_shape(shape) -> str:
    return "x".join(map(str, shape))
