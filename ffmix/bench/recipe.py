"""``ffmix bench recipe``: the whole modern training recipe on the photo set (224 px), and what it costs.

The recipe (DeiT's and timm's, with torchvision's op tables): random-resized-crop, flip, RandAugment(2, 9),
MixUp + CutMix, RandomErasing(0.25). Three rows, float32 normalised on the CPU (where ffmix erases):

* ``ffmix_full``: ``make_loader`` with all of it (``auto_augment`` = ``AUTO_AUGMENT``, torchvision's
  ``RandAugment(num_ops=2, magnitude=9)`` in timm's string; ``re_prob`` = 0.25, erasing after mixing as timm does);
* ``ffmix_crop_flip_mix``: the same loader without RandAugment and erasing (what they cost);
* ``dl_full``: what people run without ffmix: a PyTorch ``DataLoader`` whose samples are PIL decode +
  torchvision v2 ``RandomResizedCrop``, ``RandomHorizontalFlip``, ``RandAugment(2, 9)``, to float, ``Normalize``,
  ``RandomErasing(0.25)`` (torchvision's reference recipe erases per sample, before mixing), then timm's ``Mixup``
  on the batch in the loop, same α's and switch probability (needs timm).

Every first batch is checked for its contract (``alternatives.check_batch``: shape, dtype, finite, soft rows
summing to one, mixed). Not for values on the one-colour probe set, as the e2e rows are: RandAugment's
geometric ops fill with 0 and erasing writes boxes, so a flat image's mean no longer says its target.
Timing as ``e2e.time_interleaved``: all built and warmed up, then timed in turns.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

import numpy as np
import torch

from ..normalization import RGB_MEAN, RGB_STD
from .alternatives import JpegFiles
from .registry import CUTMIX_ALPHA, LABEL_SMOOTHING, MIXUP_ALPHA, SWITCH_PROB, Pipeline

if TYPE_CHECKING:
    from .data import BenchDataset

DATASET = "photos"                   # the photo set at 224 px
AUTO_AUGMENT = "rand-m3-n2-p1-inc1"  # timm's string for torchvision's RandAugment(2, 9): bin 9 of 31, ops always on
RAND_AUGMENT = dict(num_ops=2, magnitude=9)
RE_PROB = 0.25


def build_ffmix_recipe(dataset: "BenchDataset", *, full: bool, batch_size: int, workers: int,
                       device: torch.device, indices=None, seed: int = 0):
    """``make_loader`` with crop, flip and MixUp + CutMix, and with ``full`` RandAugment and RandomErasing."""
    from ..loader import make_loader

    return make_loader(dataset.beton, batch_size=batch_size, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA,
                       switch_prob=SWITCH_PROB, label_smoothing=LABEL_SMOOTHING, image_size=dataset.spec.crop,
                       crop="random", hflip=True, auto_augment=AUTO_AUGMENT if full else None,
                       re_prob=RE_PROB if full else 0.0, device=device, num_workers=workers, seed=seed,
                       indices=indices)


class RecipeJpegFiles(JpegFiles):
    """``JpegFiles`` through torchvision's whole training recipe: PIL decode, v2 RandomResizedCrop,
    RandomHorizontalFlip, RandAugment(2, 9), float32 normalised, RandomErasing(0.25) (value 0, after the
    normalisation, as torchvision's reference puts it)."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, size: int):
        from torchvision.transforms import v2

        super().__init__(files, labels, size)
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.RandAugment(**RAND_AUGMENT),
            v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(RGB_MEAN, RGB_STD),
            v2.RandomErasing(p=RE_PROB, value=0)])


def build_dataloader_recipe(dataset: "BenchDataset", *, batch_size: int, workers: int, device: torch.device,
                            indices=None, seed: int = 0):
    """The DataLoader recipe (``RecipeJpegFiles``) with timm's ``Mixup`` on each batch in the loop."""
    from .alternatives import timm_loader, timm_mixup_args
    from .registry import _subset

    samples = _subset(RecipeJpegFiles(dataset.files, dataset.labels, dataset.spec.crop), indices)
    mix_args = timm_mixup_args(dataset.num_classes, MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB, LABEL_SMOOTHING)
    return timm_loader(samples, kind="mixup", batch_size=batch_size, workers=workers, device=device,
                       channels=dataset.channels, mix_args=mix_args, seed=seed)


_ENTRIES = (
    Pipeline("ffmix_full", "ffmix make_loader: crop, flip, RandAugment(2, 9), MixUp+CutMix, RandomErasing 0.25",
             partial(build_ffmix_recipe, full=True), family="ffmix",
             note=f"auto_augment={AUTO_AUGMENT!r} (torchvision's RandAugment(2, 9)), re_prob={RE_PROB}, "
                  "re_mode='const'; seeded per sample"),
    Pipeline("ffmix_crop_flip_mix", "ffmix make_loader: crop, flip, MixUp+CutMix (no RandAugment, no erasing)",
             partial(build_ffmix_recipe, full=False), family="ffmix"),
    Pipeline("dl_full", "PyTorch DataLoader: PIL + torchvision v2 RRC, flip, RandAugment(2, 9), RandomErasing "
             "0.25; timm Mixup in the loop", build_dataloader_recipe, requires="timm", family="timm",
             note="torchvision's reference recipe erases each sample before mixing; timm erases after (ffmix does)"),
)
PIPELINES: Dict[str, Pipeline] = {entry.key: entry for entry in _ENTRIES}


def available() -> List[str]:
    """The recipe rows whose packages are installed, in table order."""
    return [key for key, pipeline in PIPELINES.items() if pipeline.available()]


def recipe_steps(runs: int) -> int:
    return len(available()) + runs


def run_recipe(dataset: "BenchDataset", *, batch_size: int, workers: int, runs: int, min_run_s: float,
               device: torch.device, progress) -> List[dict]:
    """Rows of the recipe section: every available recipe row on ``dataset``, timed in turns."""
    from .alternatives import check_batch
    from .e2e import time_interleaved

    keys = available()
    checks: Dict[str, Dict[str, object]] = {}

    def on_first_batch(key: str, batch) -> None:
        images, targets = batch
        checks[key] = check_batch(images, targets, batch_size=batch_size, channels=dataset.channels,
                                  image_shape=dataset.image_shape, num_classes=dataset.num_classes, mixed=True)

    builders = {key: (lambda key=key: PIPELINES[key].build(dataset, batch_size=batch_size, workers=workers,
                                                           device=device))
                for key in keys}
    timings = time_interleaved(builders, runs=runs, min_run_s=min_run_s, device=device,
                               on_first_batch=on_first_batch, progress=progress, label=f"recipe {dataset.name}")
    full_rate = timings["ffmix_full"].items_per_s
    base = {"section": "recipe", "dataset": dataset.name, "dataset_title": dataset.describe(),
            "batch_size": batch_size, "workers": workers, "device": str(device), "output": "float32"}
    return [{**base, "pipeline": key, "label": PIPELINES[key].label, **timing.as_dict(),
             "vs_ffmix": timing.items_per_s / full_rate, "check": checks.get(key, {"ok": False,
                                                                                  "problems": ["not checked"]}),
             "note": PIPELINES[key].note}
            for key, timing in timings.items()]


def recipe_text(rows: List[dict]) -> str:
    from .report import check_text, fmt_ms, fmt_rate, fmt_ratio, table

    first = rows[0]
    body = [[r["label"], fmt_rate(r["images_per_s"]), fmt_ms(r["ms_per_batch"]), fmt_ratio(r["vs_ffmix"]),
             f"{r['warmup_s']:.2f}", check_text(r)] for r in rows]
    notes = [f"  note ({r['pipeline']}): {r['note']}" for r in rows if r.get("note")]
    notes.append("  float32 normalised on the CPU; check: the batch's contract (no probe values: RandAugment's "
                 "fills and erasing change a flat image's mean)")
    return (f"Full training recipe: {first['dataset_title']}; batch {first['batch_size']}, {first['workers']} "
            f"workers, device {first['device']}\n"
            + table(["pipeline", "images/s", "ms/batch", "rate ÷ ffmix full", "first epoch s", "check"], body,
                    "lrrrrl") + "\n" + "\n".join(notes))
