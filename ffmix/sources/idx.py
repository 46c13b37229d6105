"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...), gzip-compressed or not.

An IDX file is: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, each dimension
as a big-endian uint32, then the values, big-endian, row-major. Images are ``(N, H, W)`` uint8; labels
``(N,)`` integers.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import FfmixError
from .base import SourceDataset, as_image, check_labels, index_class_names

# IDX type code -> NumPy dtype (big-endian, as the format stores them)
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"
# Which file-name token each split uses: MNIST calls its test split "t10k".
SPLIT_TOKENS = {"train": ("train",), "test": ("t10k", "test")}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


def _name_pattern(kind: str, tokens) -> "re.Pattern[str]":
    # e.g. train-images-idx3-ubyte, t10k-labels.idx1-ubyte.gz, emnist-digits-train-images-idx3-ubyte
    rank = "3" if kind == "images" else "1"
    return re.compile(rf"^(?:.*[-_])?(?:{'|'.join(tokens)})[-_]{kind}[-_.]idx{rank}[-_.]ubyte(?:\.gz)?$",
                      re.IGNORECASE)


def looks_like_idx_file(path: Path) -> bool:
    """True when ``path`` is named like an IDX images file (any split)."""
    return bool(re.search(r"images[-_.]idx3[-_.]ubyte(\.gz)?$", path.name, re.IGNORECASE))


def find_idx_files(folder: Path) -> Dict[str, List[Path]]:
    """``{split: [images files]}`` for the IDX image files directly in ``folder``."""
    found: Dict[str, List[Path]] = {}
    if not folder.is_dir():
        return found
    names = sorted(p for p in folder.iterdir() if p.is_file())
    for split, tokens in SPLIT_TOKENS.items():
        pattern = _name_pattern("images", tokens)
        matches = [p for p in names if pattern.match(p.name)]
        if matches:
            found[split] = matches
    return found


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or not) into an array of its dtype and shape.

    Raises ``FfmixError`` naming the file if it is not valid IDX or its size does not match its header."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise FfmixError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise FfmixError(f"{path} is not an IDX file (its first bytes are {raw[:4].hex()}, expected 0000 + "
                         "a type code + the number of dimensions)")
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise FfmixError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_bytes != expected:
        raise FfmixError(f"IDX file {path} holds {len(raw) - header_bytes} bytes of data but its header "
                         f"{shape} says {expected}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)


def labels_path_for(images_path: Path) -> Path:
    """The labels file that goes with an images file: ``images`` -> ``labels`` and ``idx3`` -> ``idx1``."""
    name = re.sub(r"images([-_.])idx3", r"labels\1idx1", images_path.name, flags=re.IGNORECASE)
    candidates = [images_path.with_name(name)]
    # the pair may differ in compression: train-images-idx3-ubyte.gz + train-labels-idx1-ubyte
    candidates.append(images_path.with_name(name[:-3] if name.endswith(".gz") else name + ".gz"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FfmixError(f"found the IDX images file {images_path} but not its labels file {candidates[0]}")


class IdxSource(SourceDataset):
    """An IDX images + labels pair: a folder (the split picks ``train-*`` or ``t10k-*``) or an images file.

    Class names: Fashion-MNIST's when the path mentions "fashion", else ``'0'..'9'``-style indices.
    """

    name = "idx"

    def __init__(self, path: Path, split: str = "train", num_classes: Optional[int] = None):
        path = Path(path)
        if split not in SPLIT_TOKENS:
            raise FfmixError(f"unknown split {split!r} for IDX files; choose train or test")
        if path.is_dir():
            images_path = self._images_file(path, split)
        else:
            images_path = path
        labels_path = labels_path_for(images_path)
        images = read_idx(images_path)
        if images.dtype != np.uint8:
            raise FfmixError(f"IDX images file {images_path} holds {images.dtype} values; ffmix needs uint8 images")
        if images.ndim == 4 and images.shape[3] in (1, 3):
            images = images[:, :, :, 0] if images.shape[3] == 1 else images
        elif images.ndim != 3:
            raise FfmixError(f"IDX images file {images_path} has shape {images.shape}; expected (N, H, W)")
        labels = read_idx(labels_path)
        if labels.ndim != 1:
            raise FfmixError(f"IDX labels file {labels_path} has shape {labels.shape}; expected (N,)")
        if len(images) != len(labels):
            raise FfmixError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                             "labels; they must match one to one")
        if len(images) == 0:
            raise FfmixError(f"{images_path} holds no images")
        as_image(images[0], str(images_path))
        self.labels = check_labels(labels, str(labels_path))
        self.images = images
        self.source = str(path)
        self.split = split if path.is_dir() else None
        self.channels = 1 if images.ndim == 3 else 3
        self.images_path = images_path
        self.labels_path = labels_path
        fashion = "fashion" in str(path.resolve()).lower()
        if fashion and num_classes in (None, len(FASHION_MNIST_CLASSES)) \
                and int(self.labels.max()) < len(FASHION_MNIST_CLASSES):
            self.class_names = list(FASHION_MNIST_CLASSES)
        else:
            self.class_names = index_class_names(self.labels, str(labels_path), num_classes)

    @staticmethod
    def _images_file(folder: Path, split: str) -> Path:
        matches = find_idx_files(folder).get(split, [])
        if not matches:
            raise FfmixError(f"{folder} has no IDX images file for the {split} split (looked for names like "
                             f"{SPLIT_TOKENS[split][0]}-images-idx3-ubyte[.gz])")
        # the same file may be there twice, compressed and not: read the uncompressed one (faster)
        stems = {m.name[:-3] if m.name.lower().endswith(".gz") else m.name for m in matches}
        if len(stems) > 1:
            raise FfmixError(f"{folder} has several IDX images files for the {split} split "
                             f"({', '.join(sorted(stems))}); pass one of them as SOURCE")
        return min(matches, key=lambda m: m.name.lower().endswith(".gz"))

    def read(self, index: int) -> np.ndarray:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"image {index} of {self.images_path}"

    def max_image_bytes(self) -> Optional[int]:
        return int(self.images.shape[1] * self.images.shape[2] * 3)
