"""``ffmix bench collate``: mixing in a PyTorch ``DataLoader`` collate_fn, for people who stay on DataLoader.

The same uint8 samples (CHW NumPy arrays, as timm's ``ToNumpy`` makes them) go through seven collates:

* ``default_collate``: PyTorch's plain stacking, no mixing;
* ``ceiling``: no collate at all (one byte per sample, in one block): what the DataLoader alone costs, fetching
  the samples and handing a batch to the main process; no collate_fn delivers more images/s than this;
* ``ffmix_uint8``: ``ffmix.MixCollate`` with uint8 output, the contract of timm's collate;
* ``timm``: timm's ``FastCollateMixup`` (uint8 out; a per-sample Python loop);
* ``ffmix_float``: ``ffmix.MixCollate`` with normalised float32 output;
* ``tutorial``: the tutorial recipe as ``alternatives.py`` writes it: the dataset converts and normalises each
  sample to float (``ToTensor`` + ``Normalize``), ``MixingCollate`` stacks and mixes them in torch; float32 out;
* ``tutorial_uint8``: the same torch mixing on the uint8 samples, converted to float in the collate.

Two measurements per dataset (32x32 RGB and 28x28 gray): the collate alone on one batch of samples in this
process, on one thread as in a worker (ms/batch; the ratio to ``default_collate`` is what mixing adds), and
images/s delivered by the same ``DataLoader`` (workers, batch size, shuffling) with each collate. ffmix's rows
are compared with the path of the same contract: uint8 with timm, float with the tutorial. Every path's first
output is checked (shapes, rows summing to one, mixed), and ffmix's value for value against the NumPy
reference, before anything is timed.

A DataLoader fetches samples one by one in Python and hands each batch to the main process; that cost is the
same for every collate and bounds the images/s ratios: ffmix's lead over timm delivered is at most the ceiling's
rate over timm's, which the section prints beside its table. Each shared-memory block a batch travels in costs
a file-descriptor handshake between the main process and the worker (torch's default sharing strategy), which
is why MixCollate puts images and targets in one block.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB, SMOOTHING = 0.8, 1.0, 0.5, 0.1

PATHS = {
    "default_collate": "default_collate of the uint8 samples (no mixing)",
    "ceiling": "no collate: the DataLoader alone (a byte per sample), the most any collate_fn delivers",
    "ffmix_uint8": "ffmix MixCollate, uint8 out",
    "timm": "timm FastCollateMixup, uint8 out",
    "ffmix_float": "ffmix MixCollate, float32 normalised out",
    "tutorial": "tutorial recipe: float samples, torch MixUp/CutMix collate, float32 out",
    "tutorial_uint8": "tutorial collate on the uint8 samples (converts in the collate), float32 out",
}
FLOAT_PATHS = {"ffmix_float", "tutorial", "tutorial_uint8"}
DATASETS = ("rgb32", "fmnist")


def ceiling_collate(samples):
    """Drops the pixels: what is left of a DataLoader's time is fetching the samples and handing over one
    shared-memory block (a byte per sample), as the smallest real batch would be."""
    return (torch.zeros((len(samples), 1), dtype=torch.uint8),)


class TutorialCollate:
    """The tutorial recipe on uint8 samples: stack, convert to float and normalise, then the torch MixUp or
    CutMix of ``alternatives.py`` (CutMix with probability ``SWITCH_PROB``). Picklable for worker processes."""

    def __init__(self, num_classes: int, mean, std):
        self.num_classes = num_classes
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, samples):
        from .alternatives import torch_cutmix, torch_mixup

        images, labels = default_collate(samples)
        images = images.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        if float(torch.rand(())) < SWITCH_PROB:
            return torch_cutmix(images, labels, self.num_classes, CUTMIX_ALPHA)
        return torch_mixup(images, labels, self.num_classes, MIXUP_ALPHA)


def collate_arrays(name: str, quick: bool, fmnist: Path):
    """(title, uint8 (N, C, H, W) images, int64 labels, num_classes) of the dataset ``name``."""
    from .data import balanced_labels, standard_specs, synthetic_images

    spec = {s.name: s for s in standard_specs(quick, fmnist)}[name]
    if spec.source != "synthetic":
        from ..sources import open_source

        source = open_source(spec.source, format="idx", split="train")
        images, labels = np.array(source.images[:spec.count]), np.array(source.labels[:spec.count], np.int64)
    else:
        height, width = spec.size
        images = synthetic_images(spec.count, height, width, spec.channels, spec.seed)
        labels = balanced_labels(spec.count, spec.num_classes, spec.seed)
    if images.ndim == 3:                     # gray (N, H, W) -> (N, 1, H, W)
        images = images[:, None]
    elif images.shape[-1] in (1, 3):         # channels last -> CHW, timm's sample layout
        images = images.transpose(0, 3, 1, 2)
    return spec.title, np.ascontiguousarray(images), labels, spec.num_classes


def build_collates(num_classes: int, channels: int) -> Dict[str, Callable]:
    """Every path's collate_fn, with the same settings (timm's names); without timm installed its row is left
    out (``pip install timm``, or ffmix's ``bench`` extra)."""
    from ..collate import MixCollate
    from ..normalization import default_mean_std
    from .alternatives import MixingCollate

    mean, std = default_mean_std(channels)
    mixing = dict(mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA, prob=1.0, switch_prob=SWITCH_PROB,
                  mode="batch", label_smoothing=SMOOTHING, num_classes=num_classes)
    collates = {
        "default_collate": default_collate,
        "ceiling": ceiling_collate,
        "ffmix_uint8": MixCollate(**mixing),
        "timm": None,
        "ffmix_float": MixCollate(**mixing, output="float", mean=mean, std=std),
        "tutorial": MixingCollate(num_classes, MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB),
        "tutorial_uint8": TutorialCollate(num_classes, mean, std),
    }
    try:
        from timm.data.mixup import FastCollateMixup
        collates["timm"] = FastCollateMixup(**mixing)
    except ImportError:
        del collates["timm"]
    return collates


def datasets_for(images: np.ndarray, labels: np.ndarray) -> Dict[str, Dataset]:
    """What each path's DataLoader reads: the uint8 CHW samples, with their indices for ffmix, and float
    normalised samples for the tutorial recipe (``alternatives.ArrayImages``, the same pixels)."""
    from ..collate import WithIndex
    from .alternatives import ArrayImages, Uint8Samples

    samples = Uint8Samples(images, labels, channels_first=True)
    channels = images.shape[1]
    channels_last = images[:, 0] if channels == 1 else np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return {path: WithIndex(samples) if path.startswith("ffmix") else
            ArrayImages(channels_last, labels, channels) if path == "tutorial" else samples for path in PATHS}


def check_output(path: str, batch, *, batch_size: int, channels: int, image_shape, num_classes: int):
    """``alternatives.check_batch`` for the mixing paths; shapes and dtypes for ``default_collate``; the one
    byte per sample for ``ceiling``."""
    from .alternatives import check_batch

    if path == "ceiling":
        got = tuple(batch[0].shape) if isinstance(batch, tuple) else type(batch).__name__
        ok = got == (batch_size, 1)
        problems = [] if ok else [f"expected a ({batch_size}, 1) tensor in a 1-tuple, got {got}"]
        return {"ok": ok, "problems": problems, "bad_rows": 0}
    images, targets = batch[0], batch[1]
    if path == "default_collate":
        problems = []
        if tuple(images.shape) != (batch_size, channels, *image_shape) or images.dtype != torch.uint8:
            problems.append(f"images are {images.dtype} {tuple(images.shape)}")
        if tuple(targets.shape) != (batch_size,):
            problems.append(f"labels have shape {tuple(targets.shape)}")
        return {"ok": not problems, "problems": problems, "bad_rows": 0}
    dtype = torch.float32 if path in FLOAT_PATHS else torch.uint8
    return check_batch(images, targets, batch_size=batch_size, channels=channels, image_shape=image_shape,
                       num_classes=num_classes, mixed=True, dtype=dtype)


def check_ffmix_exact(collate, samples, images: np.ndarray) -> List[str]:
    """ffmix's batch against ``ops.reference``: the same parameters, the same pixels, targets of the same λ."""
    from ..ops.params import draw_mix_params
    from ..ops.reference import mix_images_reference, mix_normalize_reference, soft_targets_reference
    from ..ops.rng import batch_key

    indices = np.array([s[2] for s in samples], np.uint64)
    count, channels, height, width = images.shape
    key = np.uint64(batch_key(collate.seed, collate.epoch, indices))
    partner, weight, box, lam = draw_mix_params(key, count, collate.mixing.settings_record((height, width))[0])
    mixed, targets = collate(samples)
    channels_last = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    problems = []
    if collate.output == "uint8":
        expected = mix_images_reference(channels_last, partner, weight, box).transpose(0, 3, 1, 2)
        if not np.array_equal(mixed.numpy(), expected):
            problems.append("images differ from ops.reference.mix_images_reference")
    else:
        std, mean = np.asarray(collate.float_output.std), np.asarray(collate.float_output.mean)
        expected = mix_normalize_reference(channels_last, partner, weight, box, (1 / (255 * std)).astype(np.float32),
                                           (-mean / std).astype(np.float32), channels_last=False)
        if not np.allclose(mixed.numpy(), expected, rtol=1e-5, atol=1e-4):
            problems.append("images differ from ops.reference.mix_normalize_reference")
    labels = np.array([s[1] for s in samples])
    want = soft_targets_reference(labels, partner, lam, collate.num_classes, collate.label_smoothing)
    if not np.allclose(targets.numpy(), want, atol=1e-6):
        problems.append("targets differ from ops.reference.soft_targets_reference")
    return problems


def run_collate(*, quick: bool, fmnist: Path, batch_size: int, workers: int, runs: int, min_run_s: float,
                progress) -> List[Dict[str, object]]:
    """The rows of the section: for each dataset and path, collate ms/batch and DataLoader images/s."""
    import numba

    from .e2e import time_interleaved
    from .measure import time_calls

    rows: List[Dict[str, object]] = []
    for name in DATASETS:
        title, images, labels, num_classes = collate_arrays(name, quick, fmnist)
        count, channels, height, width = images.shape
        sources = datasets_for(images, labels)
        collates = build_collates(num_classes, channels)
        batches = {path: [sources[path][k] for k in range(batch_size)] for path in collates}
        checks = {}
        for path, collate in collates.items():
            samples = batches[path]
            checks[path] = check_output(path, collate(samples), batch_size=batch_size, channels=channels,
                                        image_shape=(height, width), num_classes=num_classes)
            if path.startswith("ffmix"):
                exact = check_ffmix_exact(collate, samples, images[:batch_size])
                checks[path] = {**checks[path], "ok": checks[path]["ok"] and not exact,
                                "problems": checks[path]["problems"] + exact}

        def call(path):
            collate = collates[path]
            samples = batches[path]
            if path.startswith("ffmix"):
                def timed(k):   # a new epoch each call: MixUp and CutMix batches in their usual shares
                    collate.set_epoch(k)
                    return collate(samples)
                return timed
            return lambda k: collate(samples)

        def on_start(path, name=name):
            progress.set_postfix_str(f"collate {name} {path}: alone")
            progress.update(1)

        # one thread for every path, as in a DataLoader worker (where the collate runs)
        numba_threads, torch_threads = numba.get_num_threads(), torch.get_num_threads()
        numba.set_num_threads(1)
        torch.set_num_threads(1)
        try:
            alone = time_calls({path: call(path) for path in collates}, items=batch_size, min_run_s=min_run_s,
                               runs={path: runs for path in collates}, on_start=on_start)
        finally:
            numba.set_num_threads(numba_threads)
            torch.set_num_threads(torch_threads)
        for collate in collates.values():
            if hasattr(collate, "set_epoch"):
                collate.set_epoch(0)

        def loader(path):
            return DataLoader(sources[path], batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                              collate_fn=collates[path], persistent_workers=workers > 0,
                              generator=torch.Generator().manual_seed(0))

        first_checks = {}

        def on_first_batch(path, batch):
            first_checks[path] = check_output(path, batch, batch_size=batch_size, channels=channels,
                                              image_shape=(height, width), num_classes=num_classes)

        delivered = time_interleaved({path: (lambda path=path: loader(path)) for path in collates}, runs=runs,
                                     min_run_s=min_run_s, device=torch.device("cpu"), on_first_batch=on_first_batch,
                                     progress=progress, label=f"collate {name}")
        base_ms = alone["default_collate"].ms_per_batch
        for path in collates:
            check = checks[path]
            if not first_checks[path]["ok"]:
                check = {**check, "ok": False, "problems": check["problems"] + first_checks[path]["problems"]}
            rows.append({"section": "collate", "dataset": name, "dataset_title": f"{title}, {count} samples "
                         f"{channels}x{height}x{width} uint8 CHW", "path": path, "label": PATHS[path],
                         "batch_size": batch_size, "workers": workers,
                         "collate_ms": alone[path].ms_per_batch, "collate_runs_s": alone[path].runs_s,
                         "collate_x_default": alone[path].ms_per_batch / base_ms,
                         **delivered[path].as_dict(), "check": check})
        ffmix_rate = {r["path"]: r["images_per_s"] for r in rows if r["dataset"] == name}
        for row in rows:
            if row["dataset"] == name:
                mine = "ffmix_float" if row["path"] in FLOAT_PATHS else "ffmix_uint8"
                row["vs_ffmix"] = row["images_per_s"] / ffmix_rate[mine]
    return rows


def collate_steps(runs: int) -> int:
    return len(DATASETS) * (2 * len(PATHS) + runs)
