"""A NumPy ``.npz`` with ``images`` ``(N, H, W[, 1|3])`` uint8 and ``labels`` ``(N,)`` integers.

An optional ``class_names`` array of strings names the classes. The file is read with ``allow_pickle=False``,
so an ``.npz`` cannot run code either.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import FfmixError
from .base import ArraySource


class NpzSource(ArraySource):
    """The arrays of one ``.npz`` file (see the module docstring)."""

    def __init__(self, path: Path, num_classes: Optional[int] = None):
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                missing = [k for k in ("images", "labels") if k not in keys]
                if missing:
                    raise FfmixError(f"{path} lacks the array(s) {', '.join(missing)}; an .npz source needs "
                                     f"'images' (N,H,W[,C]) uint8 and 'labels' (N,) (it has: {', '.join(keys)})")
                images = archive["images"]
                labels = archive["labels"]
                class_names: Optional[list] = archive["class_names"].tolist() if "class_names" in keys else None
        except FfmixError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise FfmixError(f"cannot read {path} as an .npz: {exc}") from None
        if images.ndim not in (3, 4):
            raise FfmixError(f"{path}: 'images' must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
        super().__init__(images, labels, class_names=class_names, source=str(path), name="npz",
                         num_classes=num_classes)
