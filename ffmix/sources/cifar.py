"""CIFAR-10 and CIFAR-100 in their official "python version" layout, read without trusting the pickles.

CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` (test), ``batches.meta``.
CIFAR-100: ``train``, ``test``, ``meta``. Each batch is a dict pickled by Python 2 (protocol 2) with bytes keys:
``b'data'`` an ``(N, 3072)`` uint8 array (32x32 R plane, then G, then B, row-major), ``b'labels'`` (CIFAR-10) or
``b'fine_labels'`` / ``b'coarse_labels'`` (CIFAR-100) as Python lists, ``b'filenames'``, ``b'batch_label'``.

A plain ``pickle.load`` runs whatever a crafted file asks for, so batches are read by ``SafeUnpickler``,
which builds only dicts, lists, str/bytes/numbers and the NumPy pieces those files reference.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import FfmixError
from .base import SourceDataset, check_labels

CIFAR10_TRAIN = [f"data_batch_{k}" for k in range(1, 6)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LAYOUT = {
    # variant: (train batches, test batches, meta file, archive folder name)
    "cifar10": (CIFAR10_TRAIN, ["test_batch"], "batches.meta", "cifar-10-batches-py"),
    "cifar100": (["train"], ["test"], "meta", "cifar-100-python"),
}
CIFAR100_CLASS_COUNTS = {"fine": 100, "coarse": 20}


_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own, wherever this version keeps it


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for something a real CIFAR file never contains."""


def _reconstruct_ndarray(subtype, shape, dtype_code):
    # ndarray pickles (protocol < 5) start with numpy's _reconstruct(ndarray, (0,), b'b'), then BUILD fills it
    if subtype is not np.ndarray:
        raise RefusedGlobal(f"array reconstruction of {subtype!r} refused")
    return _NUMPY_RECONSTRUCT(subtype, shape, dtype_code)


def _plain_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedGlobal("it asks for an object array")
    return dtype


def _latin1_bytes(text, encoding="latin1"):
    # Python 3's protocol-2 pickles store bytes as _codecs.encode(text, 'latin1'); allow exactly that
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"it calls _codecs.encode with {encoding!r}")
    return text.encode("latin1")


# (module, name) a real batch references -> the harmless callable to use for it. Python 2 era files name
# numpy.core; NumPy 2 writes numpy._core.
ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``ALLOWED_GLOBALS``; any other global raises ``RefusedGlobal``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"it asks for {module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedGlobal("it uses persistent ids")


def load_batch(path: Path) -> Dict[bytes, Any]:
    """Unpickle one CIFAR batch or meta file safely; returns its dict (bytes keys).

    Raises ``FfmixError`` naming the file when it is unreadable, not a pickle, or references anything a real
    CIFAR file does not (a malicious or foreign pickle); no code from the file runs."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise FfmixError(f"cannot read CIFAR file {path}: {exc.strerror or exc}") from None
    try:
        content = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise FfmixError(f"refusing to load {path}: {exc}, which a real CIFAR batch never does; the file "
                         "may be malicious or not a CIFAR python batch") from None
    except Exception as exc:  # truncated or not a pickle at all: EOFError, ValueError, ...
        raise FfmixError(f"{path} is not a readable CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise FfmixError(f"{path} is not a CIFAR python batch: it holds a {type(content).__name__}, not a dict")
    return {(k.encode() if isinstance(k, str) else k): v for k, v in content.items()}


def detect_variant(folder: Path) -> Optional[str]:
    """``cifar10`` / ``cifar100`` when ``folder`` (or its official archive subfolder) holds those batches."""
    folder = _batches_folder(folder)
    if folder is None:
        return None
    if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
        return "cifar10"
    return "cifar100"


def _batches_folder(folder: Path) -> Optional[Path]:
    for variant, (train, test, meta, archive) in LAYOUT.items():
        for candidate in (folder, folder / archive):
            if variant == "cifar10" and any((candidate / n).is_file() for n in train + test):
                return candidate
            if variant == "cifar100" and (candidate / "meta").is_file() and \
                    any((candidate / n).is_file() for n in train + test):
                return candidate
    return None


class CifarSource(SourceDataset):
    """One split of CIFAR-10 or CIFAR-100 (``label_kind`` ``fine`` or ``coarse`` for CIFAR-100)."""

    channels = 3

    def __init__(self, folder: Path, variant: str = "cifar10", split: str = "train", label_kind: str = "fine"):
        folder = Path(folder)
        if variant not in LAYOUT:
            raise FfmixError(f"unknown CIFAR variant {variant!r}; choose cifar10 or cifar100")
        if split not in ("train", "test"):
            raise FfmixError(f"unknown split {split!r} for CIFAR; choose train or test")
        if label_kind not in CIFAR100_CLASS_COUNTS:
            raise FfmixError(f"unknown label kind {label_kind!r}; choose fine or coarse")
        root = _batches_folder(folder) if folder.is_dir() else None
        if root is None:
            raise FfmixError(f"{folder} does not look like a {variant} python batches folder "
                             f"(expected {', '.join(LAYOUT[variant][0] + LAYOUT[variant][1])})")
        train, test, meta_name, _ = LAYOUT[variant]
        names = train if split == "train" else test
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise FfmixError(f"{root} lacks the {variant} {split} batch file(s) {', '.join(missing)}")
        label_key = b"labels" if variant == "cifar10" else f"{label_kind}_labels".encode()
        images, labels = [], []
        for name in names:
            batch = load_batch(root / name)
            data, batch_labels = self._check_batch(root / name, batch, label_key)
            images.append(data)
            labels.append(batch_labels)
        data = np.concatenate(images)
        # (N, 3072) = (N, 3 planes, 32 rows, 32 columns) -> (N, 32, 32, 3)
        self.images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        self.labels = np.concatenate(labels)
        if len(self.labels) == 0:
            raise FfmixError(f"the {variant} {split} batches in {root} hold no images")
        self.class_names = self._class_names(root / meta_name, variant, label_kind)
        self.labels = check_labels(self.labels, f"{root} ({variant} {split})", num_classes=len(self.class_names))
        self.name = variant
        self.source = str(root)
        self.split = split
        self.label_kind = label_kind if variant == "cifar100" else None

    @staticmethod
    def _check_batch(path: Path, batch: Dict[bytes, Any], label_key: bytes) -> Tuple[np.ndarray, np.ndarray]:
        if b"data" not in batch or label_key not in batch:
            keys = ", ".join(sorted(k.decode(errors="replace") for k in batch if isinstance(k, bytes)))
            raise FfmixError(f"{path} lacks the keys 'data' and '{label_key.decode()}' (it has: {keys})")
        data = batch[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            dtype = getattr(data, "dtype", type(data).__name__)
            raise FfmixError(f"{path}: 'data' must be an (N, 3072) uint8 array, got {dtype} {shape}")
        labels = check_labels(batch[label_key], str(path))
        if len(labels) != len(data):
            raise FfmixError(f"{path} holds {len(data)} images but {len(labels)} labels; "
                             "they must match one to one")
        return data, labels

    def _class_names(self, meta_file: Path, variant: str, label_kind: str) -> List[str]:
        key = b"label_names" if variant == "cifar10" else f"{label_kind}_label_names".encode()
        if meta_file.is_file():
            names = load_batch(meta_file).get(key)
            if isinstance(names, list) and names:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if variant == "cifar10":
            return list(CIFAR10_CLASSES)
        return [str(k) for k in range(CIFAR100_CLASS_COUNTS[label_kind])]

    def read(self, index: int) -> np.ndarray:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"image {index} of the {self.name} {self.split} split in {self.source}"

    def max_image_bytes(self) -> Optional[int]:
        return 32 * 32 * 3
