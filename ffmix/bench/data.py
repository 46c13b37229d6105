"""The three datasets ``ffmix bench`` measures on, each in two forms: the source a PyTorch ``DataLoader`` reads
(arrays in memory, or JPEG files) and the ``.beton`` FFCV and ffmix read, holding the same images.

* ``fmnist``: Fashion-MNIST's training split (real, 28x28 gray) from the Debian package; a synthetic 28x28
  gray stand-in, labelled as such, where the package is missing.
* ``rgb32``: CIFAR-sized 32x32 RGB, stored raw (synthetic: smooth gradients, waves and noise).
* ``jpeg224``: an ImageFolder of JPEG files of 224-256 px per side (synthetic, photo-like), written to the
  ``.beton`` as JPEG and decoded with random-resized-crop to 224 (the ImageNet case).
* ``photos`` / ``photos160``: JPEGs (quality 90, longer side 300-500 px, as FFCV's ImageNet recipe stores them)
  made from real photographs (``photos.py``: scikit-image's, a bench extra), random-resized-crop to 224 / 160.

Datasets are generated into a work folder and reused when the same specification is asked for again.
Each has a small *probe* twin (``probe_spec``): the same kind and sizes, every image of class ``c`` one
constant colour (``alternatives.class_levels``), on which the end-to-end section checks every path's values.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..system import atomic_write

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATA_VERSION = 1  # bump when the generators change, so stale work folders are regenerated


@dataclass
class DatasetSpec:
    """What to generate: ``count`` images; fixed ``size`` (H, W), or sides drawn in ``side_range``."""

    name: str
    title: str
    count: int
    num_classes: int = 10
    channels: int = 3
    size: Optional[Tuple[int, int]] = None
    side_range: Optional[Tuple[int, int]] = None
    crop: Optional[int] = None          # the square size loaders crop to (varying-size datasets)
    jpeg: bool = False
    source: str = "synthetic"           # "synthetic", "photos" or a path to Fashion-MNIST
    probe: bool = False                 # images of one constant colour per class (value checks)
    seed: int = 0
    version: int = DATA_VERSION


@dataclass
class BenchDataset:
    """A generated dataset: the ``.beton`` and the source a DataLoader reads.

    ``images``: uint8 (N, H, W[, 3]) in memory for array datasets, else ``None``; ``files``: JPEG paths for
    file datasets. ``image_shape``: the (H, W) every loader delivers.
    """

    spec: DatasetSpec
    beton: Path
    labels: np.ndarray
    class_names: List[str]
    image_shape: Tuple[int, int]
    images: Optional[np.ndarray] = None
    files: List[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def count(self) -> int:
        return len(self.labels)

    def describe(self) -> str:
        h, w = self.image_shape
        kind = "JPEG files" if self.spec.jpeg else "raw"
        sides = (f", stored {self.spec.side_range[0]}-{self.spec.side_range[1]} px"
                 if self.spec.side_range else "")
        return (f"{self.spec.title}: {self.count} images, {h}x{w}x{self.channels}{sides}, {kind}, "
                f"{self.num_classes} classes")


def has_fmnist(folder: Path) -> bool:
    """Whether ``folder`` holds Fashion-MNIST's training images as IDX files."""
    return folder.is_dir() and any(folder.glob("train-images-idx3-ubyte*"))


def standard_specs(quick: bool, fmnist_path: Path = FASHION_MNIST) -> List[DatasetSpec]:
    """The three benchmark datasets at full or ``--quick`` size."""
    have_fmnist = has_fmnist(fmnist_path)
    fmnist = DatasetSpec(
        name="fmnist", title="Fashion-MNIST train" if have_fmnist else "28x28 gray (synthetic; no Fashion-MNIST)",
        count=2048 if quick else 60000, channels=1, size=(28, 28),
        source=str(fmnist_path) if have_fmnist else "synthetic")
    rgb32 = DatasetSpec(name="rgb32", title="32x32 RGB raw (CIFAR-sized)", count=2048 if quick else 50000,
                        size=(32, 32))
    if quick:
        jpeg = DatasetSpec(name="jpeg224", title="JPEG ImageFolder, random-resized-crop (tiny for --quick)",
                           count=96, side_range=(64, 80), crop=64, jpeg=True)
    else:
        jpeg = DatasetSpec(name="jpeg224", title="JPEG ImageFolder 224-256 px, random-resized-crop 224",
                           count=1536, side_range=(224, 256), crop=224, jpeg=True)
    return [fmnist, rgb32, jpeg, *photo_specs(quick)]


PHOTO_DATASETS = ("photos", "photos160")


def photo_specs(quick: bool) -> List[DatasetSpec]:
    """The real-photograph JPEG datasets at 224 and 160 px (the same images: same seed and count)."""
    from .photos import PHOTO_FILES

    count = 64 if quick else 2000
    return [DatasetSpec(name=name, title=f"photographs (scikit-image) 300-500 px, random-resized-crop {crop}",
                        count=count, num_classes=len(PHOTO_FILES), side_range=(300, 500), crop=crop, jpeg=True,
                        source="photos")
            for name, crop in zip(PHOTO_DATASETS, (224, 160))]


def probe_spec(spec: DatasetSpec, batch_size: int) -> DatasetSpec:
    """The probe twin of ``spec``: two batches of constant-colour images of the same size and kind."""
    from dataclasses import replace

    return replace(spec, name=f"{spec.name}-probe", title=f"{spec.title} (probe: one colour per class)",
                   count=2 * batch_size, source="synthetic", probe=True)


def class_constant_images(labels: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W, channels), or (N, H, W) for one channel: image i filled with its class's colour."""
    from .alternatives import class_levels

    levels = class_levels(int(labels.max()) + 1, channels).astype(np.uint8)
    images = np.broadcast_to(levels[labels][:, None, None, :], (len(labels), height, width, channels)).copy()
    return images[..., 0] if channels == 1 else images


def prepare(spec: DatasetSpec, folder: Path, workers: int) -> BenchDataset:
    """Generate (or reuse) ``spec`` under ``folder``; returns the dataset ready to load."""
    folder = Path(folder) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    beton = folder / f"{spec.name}.beton"
    stamp = folder / "spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    fresh = stamp.is_file() and stamp.read_text() == wanted and beton.is_file()
    if spec.jpeg:
        dataset = _jpeg_dataset(spec, folder, beton, fresh, workers)
    else:
        dataset = _array_dataset(spec, folder, beton, fresh, workers)
    if not fresh:
        atomic_write(stamp, wanted)
    return dataset


# ----------------------------------------------------------------------------------------- generation

def synthetic_images(count: int, height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """uint8 (count, H, W, channels): smooth gradients, a wave and noise, so they compress like photos.

    (count, H, W) when channels == 1."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[None, :, None, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, None, :, None]
    images = np.empty((count, height, width, channels), np.uint8)
    chunk = max(1, (1 << 22) // (height * width * channels))  # ~16 MB of float32 at a time
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        base = rng.uniform(0, 255, (n, 1, 1, channels)).astype(np.float32)
        slope_r = rng.uniform(-120, 120, (n, 1, 1, channels)).astype(np.float32)
        slope_c = rng.uniform(-120, 120, (n, 1, 1, channels)).astype(np.float32)
        freq_r = rng.uniform(2, 12, (n, 1, 1, 1)).astype(np.float32)
        freq_c = rng.uniform(2, 12, (n, 1, 1, 1)).astype(np.float32)
        values = base + slope_r * rows + slope_c * cols + 30 * np.sin(freq_r * rows + freq_c * cols)
        values += rng.normal(0, 6, values.shape).astype(np.float32)
        images[start:start + n] = np.clip(np.rint(values), 0, 255)
    return images[..., 0] if channels == 1 else images


def balanced_labels(count: int, num_classes: int, seed: int) -> np.ndarray:
    labels = np.arange(count) % num_classes
    np.random.default_rng(seed).shuffle(labels)
    return labels.astype(np.int64)


def _array_dataset(spec: DatasetSpec, folder: Path, beton: Path, fresh: bool, workers: int) -> BenchDataset:
    from ..convert import convert_arrays
    from ..metadata import read_meta

    if spec.source != "synthetic":
        from ..sources import open_source
        source = open_source(spec.source, format="idx", split="train")
        images, labels = source.images[:spec.count], source.labels[:spec.count]
        class_names = list(source.class_names)
    else:
        cache = folder / "arrays.npz"
        if fresh and cache.is_file():
            with np.load(cache) as arrays:
                images, labels = arrays["images"], arrays["labels"]
        else:
            height, width = spec.size
            labels = balanced_labels(spec.count, spec.num_classes, spec.seed)
            images = (class_constant_images(labels, height, width, spec.channels) if spec.probe
                      else synthetic_images(spec.count, height, width, spec.channels, spec.seed))
            np.savez(cache, images=images, labels=labels)
        class_names = [f"class {k}" for k in range(spec.num_classes)]
    if not fresh:
        convert_arrays(images, labels, beton, class_names=class_names, write_mode="raw", num_workers=workers,
                       force=True, source=spec.title)
    meta = read_meta(beton)
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:   # a read-only source map: torch.from_numpy would warn in every worker
        images = images.copy()
    return BenchDataset(spec=spec, beton=beton, labels=np.asarray(labels, np.int64),
                        class_names=list(meta.class_names), image_shape=tuple(meta.image_shape),
                        images=images)


def _jpeg_dataset(spec: DatasetSpec, folder: Path, beton: Path, fresh: bool, workers: int) -> BenchDataset:
    from PIL import Image

    from ..convert import convert
    from ..sources import open_source

    root = folder / "images"
    if not fresh:
        shutil.rmtree(root, ignore_errors=True)   # a folder of an earlier specification would add its files
        rng = np.random.default_rng(spec.seed)
        labels = balanced_labels(spec.count, spec.num_classes, spec.seed)
        low, high = spec.side_range
        for k in range(spec.num_classes):
            (root / f"class_{k:02d}").mkdir(parents=True, exist_ok=True)
        for index in range(spec.count):
            height, width = (int(v) for v in rng.integers(low, high + 1, 2))
            if spec.probe:
                pixels = class_constant_images(labels[index:index + 1], height, width, 3)[0]
            elif spec.source == "photos":
                from .photos import photo_image

                pixels = photo_image(int(labels[index]), spec.seed * 1_000_003 + index, spec.side_range)
            else:
                pixels = synthetic_images(1, height, width, 3, seed=spec.seed * 1_000_003 + index)[0]
            path = root / f"class_{labels[index]:02d}" / f"img_{index:06d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
    source = open_source(root, format="imagefolder")
    if not fresh:
        convert(source, beton, write_mode="jpg", jpeg_quality=90, num_workers=workers, force=True)
    return BenchDataset(spec=spec, beton=beton, labels=source.labels.copy(), class_names=list(source.class_names),
                        image_shape=(spec.crop, spec.crop), files=list(source.files))
