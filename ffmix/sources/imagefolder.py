"""A ``root/class_name/.../image.ext`` tree, as torchvision's ``ImageFolder`` reads it.

Class index = position of the class folder in the sorted list of folder names (torchvision's rule); hidden
folders such as ``.ipynb_checkpoints`` are not classes. Files are taken recursively, in sorted order, by
extension (case-insensitive); other files are ignored. Images are decoded with Pillow when written, in
FFCV's writer processes: grayscale stays one channel (the converter records it), everything else becomes RGB
(alpha dropped, as torchvision's loader does).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import FfmixError
from .base import BadSampleError, SourceDataset, as_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


def decode_image(path: Path) -> np.ndarray:
    """Decode one image file: ``(H, W)`` uint8 for grayscale modes, else ``(H, W, 3)`` uint8.

    16-bit and float grayscale is brought to 0-255. Raises ``BadSampleError`` naming the file on failure."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-transparency notes; not the user's concern here
            with Image.open(path) as image:
                image.load()
                if image.mode in ("1", "L", "LA"):
                    return np.asarray(image.convert("L"))
                if image.mode in GRAY_MODES:  # 16-bit or 32-bit integer / float grayscale
                    values = np.asarray(image)
                    if values.dtype.kind == "f":
                        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
                    # 16-bit modes -> 0-255; mode I (32-bit) is scaled only if it uses more than 8 bits
                    sixteen = image.mode.startswith("I;16") or values.max(initial=0) > 255
                    scale = 257.0 if sixteen else 1.0
                    return np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
                return np.asarray(image.convert("RGB"))
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = str(exc) or type(exc).__name__
        raise BadSampleError(str(path), reason) from None


def _sorted_walk(folder: Path) -> List[Path]:
    files = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(directory) / name)
    return files


class ImageFolderSource(SourceDataset):
    """The images of ``root`` (or of ``root/train``, ``root/test`` / ``root/val`` with ``split``).

    Raises ``FfmixError`` when there are no class folders or a class folder holds no images."""

    name = "imagefolder"
    channels = None  # known only after decoding every image

    def __init__(self, root: Path, split: Optional[str] = None):
        root = Path(root)
        if split is not None:
            root = self._split_folder(root, split)
        try:
            class_names = sorted(entry.name for entry in os.scandir(root)
                                 if entry.is_dir() and not entry.name.startswith("."))
        except OSError as exc:
            raise FfmixError(f"cannot list {root}: {exc.strerror or exc}") from None
        if not class_names:
            raise FfmixError(f"{root} has no class folders; an image folder source is root/class_name/image.jpg")
        if split is None and set(class_names) <= SPLIT_NAMES:  # train/ and val/ are splits, not 2 classes
            raise FfmixError(f"{root} holds split folders ({', '.join(class_names)}), not class folders; "
                             "pass --split train or --split test")
        files: List[Path] = []
        labels: List[int] = []
        for class_index, class_name in enumerate(class_names):
            class_files = _sorted_walk(root / class_name)
            if not class_files:
                raise FfmixError(f"class folder {root / class_name} holds no images (looked for "
                                 f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
            files.extend(class_files)
            labels.extend([class_index] * len(class_files))
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.source = str(root)
        self.split = split

    @staticmethod
    def _split_folder(root: Path, split: str) -> Path:
        for name in SPLIT_FOLDERS.get(split, ()):
            if (root / name).is_dir():
                return root / name
        wanted = " or ".join(f"{name}/" for name in SPLIT_FOLDERS.get(split, (split,)))
        raise FfmixError(f"--split {split}: {root} has no {wanted} subfolder; drop --split to use {root} "
                         "itself as the class folder root")

    def read(self, index: int) -> np.ndarray:
        path = self.files[index]
        image = decode_image(path)
        try:
            return as_image(image, str(path))
        except FfmixError as exc:
            raise BadSampleError(str(path), str(exc)) from None

    def describe(self, index: int) -> str:
        return str(self.files[index])
