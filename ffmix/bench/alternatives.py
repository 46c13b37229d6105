"""What people run today for MixUp/CutMix, written from the usual descriptions, for ``ffmix bench``.

Every path here produces the same thing as ffmix: mixed images and soft targets whose rows sum to one, so no
path is faster because it does less. ``check_batch`` verifies that for every path the benchmark times.

Mixing functions (one batch in, one batch out):

* ``numpy_mixup_per_sample``: the tutorial loop: per sample, λ ~ Beta(α, α), a partner from a random
  permutation, a float blend of images and of one-hot targets.
* ``torch_mixup``: the vectorised PyTorch version on float tensors (λ per sample, ``randperm`` partner).
* ``torch_cutmix``: the common CutMix snippet (one box per batch, pasted from ``randperm`` partners).
* ``ffcv_image_mixup``: FFCV's own ``ImageMixup`` closure, compiled the way FFCV's loader compiles it.

Loaders (iterables of ``(images (N, C, H, W) float32 normalised, soft targets (N, num_classes))``):

* ``dataloader``: PyTorch ``DataLoader`` over the source data (arrays, or JPEG files decoded by Pillow with
  torchvision's RandomResizedCrop), mixing in its ``collate_fn``: ``MixingCollate`` (the torch functions
  above) or ``TorchvisionCollate`` (``torchvision.transforms.v2`` MixUp/CutMix, the torchvision recipe).
* ``ffcv_loader``: FFCV's ``Loader`` with its built-in ``ImageMixup``/``LabelMixup`` + ``MixupToOneHot``,
  or with no mixing at all (FFCV's ceiling).
* ``timm_fast_collate``: timm's CPU path, a ``DataLoader`` of uint8 (C, H, W) samples whose ``collate_fn``
  is ``timm.data.FastCollateMixup`` (uint8 batches; on a GPU wrapped in timm's ``PrefetchLoader``, which
  normalises there); ``timm_mixup``: ``timm.data.Mixup`` applied in the loop to the normalised float batch
  (timm's usual GPU path, run where the batches are).

``kornia_loader``-style rows: kornia's ``RandomMixUpV2``/``RandomCutMixV2`` in the loop (``KorniaMixLoader``),
when kornia is installed (the ``bench`` extra).

``check_values`` checks numbers, not only shapes: on a probe dataset whose every image of class ``c`` is one
constant colour, an image's mean pixel must be what its target row says (CutMix and MixUp alike).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import FfmixError
from ..normalization import RGB_MEAN, RGB_STD, default_mean_std


# --------------------------------------------------------------------------------------- mixing alone

def numpy_mixup_per_sample(images: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float,
                           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The tutorial loop. images: float32 (N, C, H, W); labels: int (N,).

    Returns new arrays: mixed float32 (N, C, H, W) and soft targets float32 (N, num_classes).
    """
    count = len(images)
    partner = rng.permutation(count)
    mixed = np.empty_like(images)
    targets = np.zeros((count, num_classes), np.float32)
    for i in range(count):
        lam = float(rng.beta(alpha, alpha))
        j = partner[i]
        mixed[i] = lam * images[i] + (1.0 - lam) * images[j]
        targets[i, labels[i]] += lam          # += : partners of the same class still sum to one
        targets[i, labels[j]] += 1.0 - lam
    return mixed, targets


def torch_mixup(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Vectorised MixUp on a float (N, C, H, W) tensor: λ per sample ~ Beta(α, α), ``randperm`` partners.

    Returns new tensors: mixed images (same dtype) and float32 soft targets (N, num_classes).
    """
    count = images.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((count,)).to(images.device)
    partner = torch.randperm(count, device=images.device)
    lam_images = lam.view(count, 1, 1, 1).to(images.dtype)
    mixed = images * lam_images + images[partner] * (1.0 - lam_images)
    one_hot = F.one_hot(labels, num_classes).to(torch.float32)
    targets = lam[:, None] * one_hot + (1.0 - lam[:, None]) * one_hot[partner]
    return mixed, targets


def cutmix_box(lam: float, height: int, width: int, generator: Optional[torch.Generator] = None):
    """(y0, y1, x0, x1) of area about (1 - lam) H W, centre uniform, clipped to the image (the CutMix paper's)."""
    side = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * side), int(width * side)
    centre_y = int(torch.randint(height, (1,), generator=generator))
    centre_x = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(centre_y - box_h // 2, 0), min(centre_y + box_h // 2, height)
    x0, x1 = max(centre_x - box_w // 2, 0), min(centre_x + box_w // 2, width)
    return y0, y1, x0, x1


def torch_cutmix(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The common CutMix snippet, in place on a float (N, C, H, W) batch: one box per batch, λ ~ Beta(α, α)
    corrected to the clipped box's area, ``randperm`` partners. Returns (images, float32 soft targets)."""
    count, _, height, width = images.shape
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(count, device=images.device)
    y0, y1, x0, x1 = cutmix_box(lam, height, width)
    images[:, :, y0:y1, x0:x1] = images[partner, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    one_hot = F.one_hot(labels, num_classes).to(torch.float32)
    targets = lam * one_hot + (1.0 - lam) * one_hot[partner]
    return images, targets


def ffcv_image_mixup(alpha: float, threads: int):
    """FFCV's ``ImageMixup(alpha, same_lambda=True)`` closure, compiled as FFCV's loader compiles it
    (parallel over the batch with ``threads`` threads). Call as ``mixer(images, out, indices)`` on uint8
    (N, H, W, C) arrays; ``indices`` (N,) uint64 seed its NumPy stream."""
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms.mixup import ImageMixup

    Compiler.set_num_threads(threads)
    return Compiler.compile(ImageMixup(alpha, same_lambda=True).generate_code())


# ---------------------------------------------------------------------------------- DataLoader recipes

class ArrayImages(Dataset):
    """Samples of an in-memory uint8 array (N, H, W[, 3]) as (float32 (C, H, W) normalised, int label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, channels: int):
        self.images = images
        self.labels = labels
        mean, std = default_mean_std(channels)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        pixels = torch.from_numpy(self.images[index])
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        image = pixels.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        return image, int(self.labels[index])


class JpegFiles(Dataset):
    """Samples of image files: Pillow decode, torchvision RandomResizedCrop to ``size``, float32 normalised
    (torchvision's ImageNet training preset; its flip, ``RandomHorizontalFlip``, with ``flip``)."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, size: int, flip: bool = False):
        from torchvision.transforms import v2

        self.files = [str(f) for f in files]
        self.labels = labels
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), *([v2.RandomHorizontalFlip()] if flip else []),
            v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(RGB_MEAN, RGB_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
        return self.transform(image), int(self.labels[index])


class MixingCollate:
    """``collate_fn`` that stacks the samples then mixes the batch: CutMix with probability ``switch_prob``
    (when both alphas are on), else MixUp, with the torch functions above. Picklable for worker processes."""

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.switch_prob = switch_prob

    def __call__(self, samples):
        images, labels = default_collate(samples)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < self.switch_prob)
        if use_cutmix:
            return torch_cutmix(images, labels, self.num_classes, self.cutmix_alpha)
        return torch_mixup(images, labels, self.num_classes, self.mixup_alpha)


class TorchvisionCollate:
    """The torchvision recipe: ``RandomChoice([CutMix, MixUp])`` applied to the default-collated batch."""

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
        from torchvision.transforms import v2

        self.mix = v2.RandomChoice([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes),
                                    v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)])

    def __call__(self, samples):
        return self.mix(*default_collate(samples))


class DeviceLoader:
    """Iterates a loader and hands its batches to ``device`` (non-blocking from pinned memory)."""

    def __init__(self, loader, device: torch.device, finish=None):
        self.loader = loader
        self.device = device
        self.finish = finish

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        on_gpu = self.device.type == "cuda"
        for images, targets in self.loader:
            if on_gpu:
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
            if self.finish is not None:
                images, targets = self.finish(images, targets)
            yield images, targets


def dataloader(dataset: Dataset, *, batch_size: int, workers: int, collate, device: torch.device,
               seed: int = 0) -> DeviceLoader:
    """The usual DataLoader: shuffled, ``workers`` persistent worker processes, mixing in ``collate``."""
    import multiprocessing

    # what every worker imports, loaded once in the forkserver instead of once per worker (no effect once
    # the server runs; a module that is missing is skipped)
    multiprocessing.set_forkserver_preload(["ffmix.bench.alternatives", "torchvision.transforms.v2", "timm.data"])
    generator = torch.Generator()
    generator.manual_seed(seed)
    # Workers start from a clean forkserver (Python 3.14's default on Linux), not by forking this process: the
    # bench runs FFCV and ffmix loaders whose threads have run Numba's TBB pool, and a fork() then cannot
    # shut that pool down ("Unable to join threads to shut down before fork()" on stderr, and an unsafe
    # child). Start-up is outside the timed runs; the workers' work per batch is the same.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        drop_last=True, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        generator=generator, multiprocessing_context="forkserver" if workers > 0 else None)
    return DeviceLoader(loader, device)


# ---------------------------------------------------------------------------------------------- timm

class Uint8Samples(Dataset):
    """Samples of an in-memory uint8 array as (uint8 (C, H, W) NumPy array, int label): what timm's ``ToNumpy``
    gives ``FastCollateMixup``, and what every collate of ``ffmix bench collate`` stacks.

    ``images``: (N, C, H, W) with ``channels_first``, handed out as they are (views, no work per sample); else
    (N, H, W[, 3]), laid out as (C, H, W) per sample (a copy, as a transform in a dataset would make).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, channels_first: bool = False):
        if channels_first and images.ndim != 4:
            raise FfmixError(f"channels_first samples need (N, C, H, W) images, got shape {images.shape}")
        self.images = images
        self.labels = labels
        self.channels_first = channels_first

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        pixels = self.images[index]
        if not self.channels_first:
            pixels = pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))
        return pixels, int(self.labels[index])


class JpegFilesUint8(JpegFiles):
    """``JpegFiles`` without the float conversion: uint8 (3, size, size) tensors for ``FastCollateMixup``."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, size: int):
        from torchvision.transforms import v2

        super().__init__(files, labels, size)
        self.transform = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.PILToTensor()])


def timm_mixup_args(num_classes: int, mixup_alpha: float, cutmix_alpha: float, switch_prob: float,
                    label_smoothing: float) -> Dict[str, object]:
    """timm's Mixup arguments for the bench's recipe: one decision per batch (ffmix's mode="batch")."""
    return dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=1.0, switch_prob=switch_prob,
                mode="batch", label_smoothing=label_smoothing, num_classes=num_classes)


class TimmMixupLoader:
    """A plain ``DataLoader`` of normalised float batches with ``timm.data.Mixup`` applied in the loop, as
    timm's train script does (there on the GPU; here wherever the batches are)."""

    def __init__(self, loader, mixup):
        self.loader = loader
        self.mixup = mixup

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for images, labels in self.loader:
            yield self.mixup(images, labels)


def timm_loader(dataset: Dataset, *, kind: str, batch_size: int, workers: int, device: torch.device,
                channels: int, mix_args: Dict[str, object], seed: int = 0):
    """timm's two MixUp/CutMix paths over ``dataset``.

    kind="fast_collate": ``dataset`` yields uint8 (C, H, W); ``FastCollateMixup`` mixes while collating and
    the batches stay uint8 on the CPU, or go through ``PrefetchLoader`` (normalised float32 on the GPU).
    kind="mixup": ``dataset`` yields normalised float32; ``Mixup`` mixes each batch after the transfer.
    Batch size must be even (timm asserts it).
    """
    from timm.data import FastCollateMixup, Mixup
    from timm.data.loader import PrefetchLoader

    if batch_size % 2:
        raise FfmixError(f"timm's mixup needs an even batch size, got {batch_size}")
    if kind == "fast_collate":
        collate = FastCollateMixup(**mix_args)
        loader = dataloader(dataset, batch_size=batch_size, workers=workers, collate=collate, device=device,
                            seed=seed).loader
        if device.type == "cuda":
            mean, std = default_mean_std(channels)
            return PrefetchLoader(loader, mean=mean, std=std, channels=channels, device=device)
        return loader
    if kind == "mixup":
        return TimmMixupLoader(dataloader(dataset, batch_size=batch_size, workers=workers, collate=default_collate,
                                          device=device, seed=seed), Mixup(**mix_args))
    raise ValueError(f"kind must be 'fast_collate' or 'mixup', got {kind!r}")


# -------------------------------------------------------------------------------------------- kornia

class KorniaMixLoader:
    """A plain ``DataLoader`` of normalised float batches, then per batch kornia's ``RandomCutMixV2``
    (probability ``switch_prob``, Beta(1, 1) cut, the paper's λ) or ``RandomMixUpV2`` (λ uniform in [0, 1]:
    kornia draws no Beta), applied in the loop; kornia's (label, partner label, λ) rows become soft targets."""

    def __init__(self, loader, num_classes: int, switch_prob: float = 0.5):
        from kornia.augmentation import RandomCutMixV2, RandomMixUpV2

        self.loader = loader
        self.num_classes = num_classes
        self.switch_prob = switch_prob
        self.mixup = RandomMixUpV2(data_keys=["input", "class"])
        self.cutmix = RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for images, labels in self.loader:
            if float(torch.rand(())) < self.switch_prob:
                images, rows = self.cutmix(images, labels)
                rows = rows[0]
                own = rows[:, 2]                      # use_correct_lambda: 1 - cut area, the own weight
            else:
                images, rows = self.mixup(images, labels)
                own = 1.0 - rows[:, 2]                # kornia's MixUp λ is the partner's weight
            targets = torch.zeros(len(rows), self.num_classes, dtype=torch.float32, device=rows.device)
            own = own.to(torch.float32)
            targets.scatter_add_(1, rows[:, 0].long().view(-1, 1), own.view(-1, 1))
            targets.scatter_add_(1, rows[:, 1].long().view(-1, 1), (1.0 - own).view(-1, 1))
            yield images, targets


# ------------------------------------------------------------------------------------------ FFCV paths

def ffcv_loader(beton: Path, *, batch_size: int, workers: int, num_classes: int, channels: int,
                crop: Optional[int], mixup_alpha: float, device: torch.device, seed: int = 0,
                indices: Optional[Sequence[int]] = None):
    """FFCV's Loader as its docs assemble it: decode (random-resized-crop for ``crop``), FFCV's
    ``ImageMixup``/``LabelMixup`` (same λ per batch) + ``MixupToOneHot`` when ``mixup_alpha > 0``, and
    FFCV's ``NormalizeImage`` (a parallel lookup table, uint8 -> float32). Without mixing the labels become
    one-hot rows in the loop. Yields (float32 (N, C, H, W), float32 (N, num_classes))."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import (ImageMixup, LabelMixup, MixupToOneHot, NormalizeImage, ToDevice, ToTensor,
                                 ToTorchImage)

    mean, std = default_mean_std(channels)
    if channels == 1:  # FFCV stores gray as three equal channels; its table normalises all three
        mean, std = mean * 3, std * 3
    on_gpu = device.type == "cuda"
    decoder = RandomResizedCropRGBImageDecoder((crop, crop)) if crop else SimpleRGBImageDecoder()
    image_pipeline: List = [decoder]
    label_pipeline: List = [IntDecoder()]
    if mixup_alpha > 0:
        image_pipeline.append(ImageMixup(mixup_alpha, same_lambda=True))
        label_pipeline.append(LabelMixup(mixup_alpha, same_lambda=True))
    if on_gpu:  # FFCV's GPU NormalizeImage needs CuPy: normalise with torch on the device instead
        image_pipeline += [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage()]
    else:
        image_pipeline += [NormalizeImage(np.array(mean) * 255, np.array(std) * 255, np.float32), ToTensor(),
                           ToTorchImage()]
    label_pipeline.append(ToTensor())
    if on_gpu:
        label_pipeline.append(ToDevice(device, non_blocking=True))
    if mixup_alpha > 0:
        label_pipeline.append(MixupToOneHot(num_classes))  # takes the (N, 3) float rows LabelMixup writes
    loader = Loader(str(beton), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM, seed=seed,
                    indices=indices, drop_last=True, pipelines={"image": image_pipeline, "label": label_pipeline})
    mean_t = torch.tensor(mean[:channels], device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std[:channels], device=device).view(1, -1, 1, 1)

    def finish(images, labels):
        if channels == 1:
            images = images[:, :1]
        if on_gpu:
            images = images.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)
        if mixup_alpha <= 0:
            labels = F.one_hot(labels.view(-1).long(), num_classes).to(torch.float32)
        return images, labels

    return DeviceLoader(loader, torch.device("cpu"), finish)


# ------------------------------------------------------------------------------------------- checking

def check_batch(images, targets, *, batch_size: int, channels: int, image_shape: Tuple[int, int],
                num_classes: int, mixed: bool, dtype=torch.float32) -> Dict[str, object]:
    """Whether one delivered batch keeps the contract: images ``dtype`` (N, C, H, W) finite; targets
    float32 (N, num_classes) in [0, 1] with rows summing to one; with ``mixed``, some rows hold two classes.

    Returns ``{"ok": bool, "problems": [str], "bad_rows": int}``; never raises.
    """
    problems: List[str] = []
    bad_rows = 0
    images = torch.as_tensor(images)
    targets = torch.as_tensor(targets)
    expected = (batch_size, channels, *image_shape)
    if tuple(images.shape) != expected:
        problems.append(f"images have shape {tuple(images.shape)}, expected {expected}")
    if images.dtype != dtype:
        problems.append(f"images are {images.dtype}, expected {dtype}")
    elif images.dtype.is_floating_point and not bool(torch.isfinite(images).all()):
        problems.append("images hold NaN or inf")
    if tuple(targets.shape) != (batch_size, num_classes):
        problems.append(f"targets have shape {tuple(targets.shape)}, expected {(batch_size, num_classes)}")
    elif not targets.dtype.is_floating_point:
        problems.append(f"targets are {targets.dtype}, expected soft float rows")
    else:
        rows = targets.detach().to("cpu", torch.float64)
        sums = rows.sum(dim=1)
        bad_rows = int(((sums - 1.0).abs() > 1e-4).sum()) + int(((rows < -1e-6) | (rows > 1 + 1e-6)).any(1).sum())
        if bad_rows:
            problems.append(f"{bad_rows} of {batch_size} target rows do not sum to one or leave [0, 1]")
        two_classes = int(((rows > 1e-6).sum(dim=1) >= 2).sum())
        if mixed and two_classes == 0:
            problems.append("no target row mixes two classes: the batch was not mixed")
        if not mixed and two_classes:
            problems.append(f"{two_classes} target rows mix classes in an unmixed loader")
    return {"ok": not problems, "problems": problems, "bad_rows": bad_rows}


def class_levels(num_classes: int, channels: int) -> np.ndarray:
    """The constant colour (0..255, float64 (num_classes, channels)) of every image of each class in the
    probe datasets: distinct per class and channel, away from 0 and 255 so no blend clips."""
    return (16.0 + 22.0 * np.arange(num_classes)[:, None] + 7.0 * np.arange(channels)[None, :])


def check_values(images, targets, *, levels: np.ndarray, mean=None, std=None,
                 tolerance: float = 1.5) -> Dict[str, object]:
    """On a probe batch (image of class c: the constant colour ``levels[c]``), whether the pixels carry the
    weights the targets give: per image and channel, the mean pixel (0..255; un-normalised with ``mean``,
    ``std`` when given) equals ``targets @ levels`` within ``tolerance``, and no pixel leaves the range of
    the colours its row names. This holds for MixUp (every pixel blended) and CutMix (a box of the partner's
    colour over area 1 - λ) alike. Rows not summing to one are left out (``check_batch`` reports them).

    Returns ``{"ok", "problems", "worst"}`` (worst: the largest mean error, in 0..255 units); never raises.
    """
    problems: List[str] = []
    pixels = torch.as_tensor(images).detach().to("cpu", torch.float64)
    rows = torch.as_tensor(targets).detach().to("cpu", torch.float64).numpy()
    if pixels.ndim != 4 or rows.ndim != 2 or len(pixels) != len(rows) or rows.shape[1] != len(levels) \
            or pixels.shape[1] != levels.shape[1]:
        return {"ok": False, "problems": [f"cannot check values: images {tuple(pixels.shape)}, targets "
                                          f"{tuple(rows.shape)}"], "worst": float("nan")}
    if mean is not None:
        scale = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1) * 255.0
        shift = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1) * 255.0
        pixels = pixels * scale + shift
    pixels = pixels.numpy()
    keep = np.abs(rows.sum(axis=1) - 1.0) <= 1e-4
    expected = rows @ levels                                     # (N, C)
    measured = pixels.mean(axis=(2, 3))
    error = np.abs(measured - expected)[keep]
    worst = float(error.max()) if error.size else 0.0
    bad = int((error > tolerance).any(axis=1).sum()) if error.size else 0
    if bad:
        problems.append(f"{bad} of {int(keep.sum())} images: mean pixel differs from what the target row says "
                        f"by up to {worst:.1f}/255 (tolerance {tolerance})")
    named = rows > 1e-6
    low = np.where(named[:, :, None], levels[None], np.inf).min(axis=1)     # (N, C)
    high = np.where(named[:, :, None], levels[None], -np.inf).max(axis=1)
    outside = ((pixels.min(axis=(2, 3)) < low - tolerance) | (pixels.max(axis=(2, 3)) > high + tolerance))[keep]
    if outside.any():
        problems.append(f"{int(outside.any(axis=1).sum())} images hold colours of classes their target row "
                        "does not name")
    return {"ok": not problems, "problems": problems, "worst": worst}
