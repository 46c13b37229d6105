"""Every end-to-end pipeline of ``ffmix bench``, one record each, in one table (``PIPELINES``).

A record holds all the bench knows about a pipeline: its key (the JSON's ``pipeline`` field), the label the
tables show, how to build its loader, the dtype it hands over, whether it mixes, the datasets it runs on, the
package it needs and a note for the table. The end-to-end and scaling sections, the value checks, the
``--pipelines`` option and the plot read only this table, so adding a peer is adding one record here (and its
builder, when no builder below fits).

Every pipeline gets the same recipe (``MIXUP_ALPHA`` ... ``LABEL_SMOOTHING``) and delivers ``(images (N, C, H,
W), float32 soft targets (N, num_classes))``; the images are float32 normalised with
``ffmix.normalization``'s statistics, or raw uint8 for the records whose ``output`` says so. The one exception
is a limit (``limit=True``: the photo sets' full-size decode-only bound), timed beside the loaders but delivering
only what it decoded.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Dict, FrozenSet, Optional, Sequence

import numpy as np
import torch

if TYPE_CHECKING:   # only for the annotations: building a loader imports what it needs when it runs
    from .data import BenchDataset

MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB, LABEL_SMOOTHING = 0.8, 1.0, 0.5, 0.0  # every path gets the same
OUTPUTS = ("float32", "uint8")
FAMILIES = ("ffmix", "ffcv", "timm", "other", "limit")   # the plot's colour families

# Builders take (dataset, batch_size=, workers=, device=, indices=, seed=) and return an iterable with len()
# (one epoch per iter()) of (images, targets) batches.
Builder = Callable[..., object]


@dataclass(frozen=True)
class Pipeline:
    """One end-to-end pipeline of the bench.

    ``output``: the dtype of the delivered images, ``gpu_output`` where it differs when batches are delivered
    to a GPU (timm's PrefetchLoader normalises there). ``datasets``: the dataset names it runs on, ``None`` for
    all of them (the extra rows tell something on some datasets only; elsewhere they would only add
    minutes). ``requires``: a package without which the row is skipped and said so. ``limit``: not a loader but
    a bound the loaders are measured against: it delivers no images, so its batches are checked by its own rule
    (``decode_limit.check_sizes``) and it has no probe check.
    """

    key: str
    label: str
    build: Builder
    output: str = "float32"
    mixed: bool = True
    datasets: Optional[FrozenSet[str]] = None
    note: str = ""
    requires: Optional[str] = None
    gpu_output: Optional[str] = None
    family: str = "other"        # the plot's colour family: ffmix, ffcv, timm, other or limit
    limit: bool = False
    install: Optional[str] = None   # how to get ``requires`` where the bench extra does not bring it

    def __post_init__(self):
        for dtype in (self.output, self.gpu_output or self.output):
            if dtype not in OUTPUTS:
                raise ValueError(f"pipeline {self.key}: output must be one of {OUTPUTS}, got {dtype!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"pipeline {self.key}: family must be one of {FAMILIES}, got {self.family!r}")

    def output_on(self, device: torch.device) -> str:
        """The dtype name of the images this pipeline delivers on ``device``."""
        return self.gpu_output if (self.gpu_output and device.type == "cuda") else self.output

    def runs_on(self, dataset_name: str) -> bool:
        """Whether this pipeline has a row on ``dataset_name`` (a probe twin counts as its dataset)."""
        return self.datasets is None or dataset_name.replace("-probe", "") in self.datasets

    @property
    def install_hint(self) -> str:
        return self.install or f"pip install {self.requires}, or ffmix's bench extra"

    def available(self) -> bool:
        if self.requires is None:
            return True
        try:   # a dotted name (nvidia.dali) whose parent package is missing raises instead of giving None
            return importlib.util.find_spec(self.requires) is not None
        except ImportError:
            return False


# --------------------------------------------------------------------------------------------- builders

def _subset(source, indices: Optional[Sequence[int]]):
    from torch.utils.data import Subset

    return source if indices is None else Subset(source, list(indices))


def _float_samples(dataset: "BenchDataset", indices, flip: bool = False):
    """Normalised float32 (C, H, W) samples: the arrays, or the JPEG files decoded by Pillow and cropped
    (and flipped with chance 1/2 with ``flip``)."""
    from .alternatives import ArrayImages, JpegFiles

    if dataset.images is not None:
        return _subset(ArrayImages(dataset.images, dataset.labels, dataset.channels), indices)
    return _subset(JpegFiles(dataset.files, dataset.labels, dataset.spec.crop, flip=flip), indices)


def _uint8_samples(dataset: "BenchDataset", indices):
    """uint8 (C, H, W) samples, as timm's ``ToNumpy`` gives them."""
    from .alternatives import JpegFilesUint8, Uint8Samples

    if dataset.images is not None:
        return _subset(Uint8Samples(dataset.images, dataset.labels), indices)
    return _subset(JpegFilesUint8(dataset.files, dataset.labels, dataset.spec.crop), indices)


def build_dataloader(dataset: "BenchDataset", *, collate: str, batch_size: int, workers: int,
                     device: torch.device, indices=None, seed: int = 0, flip: bool = False):
    """PyTorch DataLoader over float samples, mixing in the collate_fn: ``collate`` "torch" (the tutorial's
    torch functions) or "torchvision" (torchvision v2's MixUp/CutMix); ``flip``: JPEG samples flipped too."""
    from .alternatives import MixingCollate, TorchvisionCollate, dataloader

    mixer = {"torch": MixingCollate, "torchvision": TorchvisionCollate}[collate]
    return dataloader(_float_samples(dataset, indices, flip), batch_size=batch_size, workers=workers,
                      collate=mixer(dataset.num_classes, MIXUP_ALPHA, CUTMIX_ALPHA), device=device, seed=seed)


def build_timm(dataset: "BenchDataset", *, kind: str, batch_size: int, workers: int, device: torch.device,
               indices=None, seed: int = 0):
    """timm's two paths: ``kind`` "fast_collate" (uint8 samples, FastCollateMixup) or "mixup" (float
    samples, Mixup in the loop)."""
    from .alternatives import timm_loader, timm_mixup_args

    source = (_uint8_samples if kind == "fast_collate" else _float_samples)(dataset, indices)
    mix_args = timm_mixup_args(dataset.num_classes, MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB, LABEL_SMOOTHING)
    return timm_loader(source, kind=kind, batch_size=batch_size, workers=workers, device=device,
                       channels=dataset.channels, mix_args=mix_args, seed=seed)


def build_kornia(dataset: "BenchDataset", *, batch_size: int, workers: int, device: torch.device, indices=None,
                 seed: int = 0):
    """kornia's MixUp/CutMix in the loop on a plain DataLoader's float batches."""
    from torch.utils.data import default_collate

    from .alternatives import KorniaMixLoader, dataloader

    loader = dataloader(_float_samples(dataset, indices), batch_size=batch_size, workers=workers,
                        collate=default_collate, device=device, seed=seed)
    return KorniaMixLoader(loader, dataset.num_classes, SWITCH_PROB)


def build_ffcv(dataset: "BenchDataset", *, mixup_alpha: float, batch_size: int, workers: int,
               device: torch.device, indices=None, seed: int = 0):
    """FFCV's Loader, with its ImageMixup/LabelMixup when ``mixup_alpha > 0``."""
    from .alternatives import ffcv_loader

    return ffcv_loader(dataset.beton, batch_size=batch_size, workers=workers, num_classes=dataset.num_classes,
                       channels=dataset.channels, crop=dataset.spec.crop, mixup_alpha=mixup_alpha, device=device,
                       seed=seed, indices=indices)


def build_ffmix(dataset: "BenchDataset", *, mixup_alpha: float, cutmix_alpha: float, raw: bool, batch_size: int,
                workers: int, device: torch.device, indices=None, seed: int = 0):
    """``make_loader`` with the bench's recipe; ``raw``: uint8 pixels, not normalised."""
    from ..loader import make_loader

    return make_loader(dataset.beton, batch_size=batch_size, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                       switch_prob=SWITCH_PROB, label_smoothing=LABEL_SMOOTHING, image_size=dataset.spec.crop,
                       crop="random", device=device, num_workers=workers, seed=seed, indices=indices,
                       normalize=not raw, dtype=torch.uint8 if raw else torch.float32)


def build_decoder(dataset: "BenchDataset", *, decoder: str, batch_size: int, workers: int, device: torch.device,
                  indices=None, seed: int = 0):
    """One random-resized-crop ``decoder`` ("ffcv" or "ffmix") alone in an FFCV pipeline (``decoders.py``)."""
    from .decoders import decoder_loader

    return decoder_loader(decoder, dataset.beton, crop=dataset.spec.crop, batch_size=batch_size, workers=workers,
                          num_classes=dataset.num_classes, device=device, seed=seed, indices=indices)


def build_decode_limit(dataset: "BenchDataset", *, batch_size: int, workers: int, device: torch.device,
                       indices=None, seed: int = 0):
    """The decode-only limit over the dataset's JPEG files (``decode_limit.py``): full-size decodes, nothing else."""
    from .decode_limit import DecodeLimit

    files, labels = dataset.files, dataset.labels
    if indices is not None:
        files, labels = [files[i] for i in indices], labels[np.asarray(indices)]
    return DecodeLimit(files, labels, batch_size=batch_size, workers=workers, seed=seed)


def build_dali(dataset: "BenchDataset", *, batch_size: int, workers: int, device: torch.device, indices=None,
               seed: int = 0):
    """NVIDIA DALI's CPU decode + random crop + resize pipeline over the dataset's JPEG files (``dali_peer.py``)."""
    from .dali_peer import DaliLoader

    files, labels = dataset.files, dataset.labels
    if indices is not None:
        files, labels = [files[i] for i in indices], labels[np.asarray(indices)]
    return DaliLoader(files, labels, num_classes=dataset.num_classes, crop=dataset.spec.crop,
                      batch_size=batch_size, workers=workers, seed=seed)


# ---------------------------------------------------------------------------------------------- the table

SMALL_RAW = frozenset({"rgb32", "fmnist"})   # the raw sets where the extra uint8 rows tell something
JPEG = frozenset({"jpeg224", "photos", "photos160"})   # where decoding is the work
PHOTOS = frozenset({"photos", "photos160"})            # issue 19's set: the uint8 rows, the limit, the peers

_ENTRIES = (
    Pipeline("dl_collate", "PyTorch DataLoader + collate_fn (torch MixUp/CutMix)",
             partial(build_dataloader, collate="torch")),
    Pipeline("dl_torchvision", "PyTorch DataLoader + torchvision v2 MixUp/CutMix",
             partial(build_dataloader, collate="torchvision")),
    Pipeline("ffcv_mixup", "FFCV Loader + ImageMixup/LabelMixup (MixUp only)",
             partial(build_ffcv, mixup_alpha=MIXUP_ALPHA), family="ffcv",
             note="FFCV's MixupToOneHot writes the partner's weight over the own one when both share a class, "
                  "so those rows sum to 1 - λ (FFCV 1.0.2); MixUp only (no CutMix); pixels truncated, not rounded"),
    Pipeline("ffcv_plain", "FFCV Loader, no mixing (FFCV's ceiling)", partial(build_ffcv, mixup_alpha=0.0),
             mixed=False, family="ffcv"),
    Pipeline("ffmix", "ffmix make_loader, MixUp+CutMix",
             partial(build_ffmix, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA, raw=False), family="ffmix"),
    Pipeline("ffmix_mixup", "ffmix make_loader, MixUp only",
             partial(build_ffmix, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=0.0, raw=False),
             datasets=frozenset({"rgb32"}), family="ffmix"),
    Pipeline("ffmix_off", "ffmix make_loader, mixing off (ffmix's ceiling)",
             partial(build_ffmix, mixup_alpha=0.0, cutmix_alpha=0.0, raw=False), mixed=False, family="ffmix"),
    Pipeline("ffmix_uint8", "ffmix make_loader, MixUp+CutMix, uint8 not normalised",
             partial(build_ffmix, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA, raw=True), output="uint8",
             datasets=SMALL_RAW | PHOTOS, family="ffmix"),
    Pipeline("ffmix_uint8_off", "ffmix make_loader, mixing off, uint8 not normalised",
             partial(build_ffmix, mixup_alpha=0.0, cutmix_alpha=0.0, raw=True), output="uint8", mixed=False,
             datasets=SMALL_RAW | PHOTOS, family="ffmix"),
    Pipeline("timm_fast_collate", "timm FastCollateMixup in a DataLoader (uint8; on a GPU + PrefetchLoader)",
             partial(build_timm, kind="fast_collate"), output="uint8", gpu_output="float32", requires="timm",
             family="timm"),
    Pipeline("timm_mixup", "timm Mixup in the loop on the normalised float batch", partial(build_timm, kind="mixup"),
             requires="timm", family="timm"),
    Pipeline("kornia_mix", "kornia RandomMixUpV2/RandomCutMixV2 in the loop on the float batch", build_kornia,
             requires="kornia",
             note="kornia's MixUp draws λ uniformly in [0, 1] (no Beta(α, α)); CutMix Beta(1, 1), one box per "
                  "sample"),
    Pipeline("ffcv_decode", "FFCV RandomResizedCropRGBImageDecoder alone, uint8 (unseeded crops)",
             partial(build_decoder, decoder="ffcv"), output="uint8", mixed=False, datasets=JPEG, family="ffcv"),
    Pipeline("ffmix_decode", "ffmix RandomResizedCropDecoder alone, uint8 (seeded crops)",
             partial(build_decoder, decoder="ffmix"), output="uint8", mixed=False, datasets=JPEG, family="ffmix"),
    Pipeline("ffmix_decode_exact", "ffmix RandomResizedCropDecoder alone, exact_decode=True (FFCV's pixels), uint8",
             partial(build_decoder, decoder="ffmix_exact"), output="uint8", mixed=False, datasets=JPEG,
             family="ffmix"),
    Pipeline("dl_recipe", "PyTorch DataLoader: PIL + torchvision v2 RandomResizedCrop + flip, v2 MixUp/CutMix "
             "in the collate_fn (float)", partial(build_dataloader, collate="torchvision", flip=True),
             datasets=PHOTOS,
             note="torchvision's ImageNet training recipe; the flip is the one step ffmix's rows here do not take"),
    Pipeline("dali_decode", "NVIDIA DALI CPU: decoders.image_random_crop + resize, uint8 (no mixing)", build_dali,
             output="uint8", mixed=False, datasets=PHOTOS, requires="nvidia.dali",
             install="pip install nvidia-dali-cuda130, or ffmix's dali extra; runs on the CPU without a GPU",
             note="DALI has no MixUp/CutMix operator: decode (of the crop's region only), crop and resize, "
                  "unmixed; device_id=None (CPU only)"),
    Pipeline("decode_limit", "limit: full-size JPEG decode only, same files and threads (libjpeg-turbo via "
             "OpenCV; no crop, resize or mixing; not a loader)", build_decode_limit, output="uint8", mixed=False,
             datasets=PHOTOS, family="limit", limit=True,
             note="a bound, not a loader: a row above it decodes less than every pixel of every file"),
)
PIPELINES: Dict[str, Pipeline] = {entry.key: entry for entry in _ENTRIES}
assert len(PIPELINES) == len(_ENTRIES), "pipeline keys must be unique"


def pipelines_for(dataset_name: str, keys: Sequence[str]) -> list:
    """The keys of ``keys`` that have a row on ``dataset_name`` and whose package is installed, in order."""
    return [key for key in keys if PIPELINES[key].runs_on(dataset_name) and PIPELINES[key].available()]


def build_loader(key: str, dataset: "BenchDataset", *, batch_size: int, workers: int, device: torch.device,
                 indices: Optional[Sequence[int]] = None, seed: int = 0):
    """The loader of pipeline ``key`` over ``dataset`` (or its subset ``indices``)."""
    return PIPELINES[key].build(dataset, batch_size=batch_size, workers=workers, device=device, indices=indices,
                                seed=seed)
