"""Small datasets on disk in the real formats ffmix reads, for the tests.

* CIFAR batches byte-for-byte in the official layout: Python 2 protocol-2 pickles (``str`` keys, which
  Python 3 reads as bytes), ``data`` an ``(N, 3072)`` uint8 array referencing ``numpy.core.multiarray``,
  labels as lists. Python 3 cannot write that, so ``py2_pickle`` emits the opcodes itself.
* IDX files, gzip or not; JPEG / PNG / WebP image-folder trees; ``.npz`` files.

Images are smooth gradients plus mild noise: compressible like photos, so JPEG errors are photo-like.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


# ----------------------------------------------------------------------------------------------- pixels

def smooth_images(count: int, height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``(count, H, W, channels)`` uint8 (``(count, H, W)`` when ``channels == 1``): gradients + noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    cols = np.linspace(0.0, 1.0, width)[None, :, None]
    images = np.empty((count, height, width, channels), dtype=np.uint8)
    for i in range(count):
        start = rng.uniform(0, 255, channels)
        slope_r = rng.uniform(-120, 120, channels)
        slope_c = rng.uniform(-120, 120, channels)
        wave = 30 * np.sin(rows * rng.uniform(2, 8) + cols * rng.uniform(2, 8))
        noise = rng.normal(0, 4, (height, width, channels))
        values = start + slope_r * rows + slope_c * cols + wave + noise
        images[i] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return images[..., 0] if channels == 1 else images


def labels_for(count: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """``(count,)`` int64 labels covering every class when ``count >= num_classes``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------------------------- CIFAR

def _py2_str(data: bytes) -> bytes:
    # Python 2 pickled str as SHORT_BINSTRING / BINSTRING; Python 3 reads them as bytes with encoding='bytes'
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<I", len(data)) + data


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_ndarray(array: np.ndarray) -> bytes:
    """The opcodes Python 2 + NumPy 1.x wrote for a C-contiguous uint8 array (as in the CIFAR files)."""
    assert array.dtype == np.uint8
    out = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
    out += _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"              # _reconstruct(ndarray, (0,), 'b')
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _py2_int(0) + b"tb")
    state = b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(np.ascontiguousarray(array).tobytes()) + b"t"
    return out + state + b"b"


def _py2_value(value) -> bytes:
    if isinstance(value, np.ndarray):
        return _py2_ndarray(value)
    if isinstance(value, bytes):
        return _py2_str(value)
    if isinstance(value, (int, np.integer)):
        return _py2_int(int(value))
    if isinstance(value, list):
        return b"](" + b"".join(_py2_value(v) for v in value) + b"e"
    raise TypeError(f"no Python 2 pickle for {type(value)}")


def py2_pickle(content: Dict[bytes, object]) -> bytes:
    """A protocol-2 pickle of a dict with bytes (Python 2 str) keys, as Python 2's cPickle wrote it."""
    items = b"".join(_py2_str(key) + _py2_value(value) for key, value in content.items())
    return b"\x80\x02}(" + items + b"u."


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """``(N, 32, 32, 3)`` -> CIFAR's ``(N, 3072)`` rows: the R plane, then G, then B, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def write_cifar(folder: Path, variant: str = "cifar10", per_batch: int = 6, seed: int = 0,
                with_meta: bool = True) -> Dict[str, dict]:
    """Write a small CIFAR-10 (5 train batches + test) or CIFAR-100 (train + test) folder.

    Returns ``{split: {"images": (N,32,32,3), "labels": ..., "coarse_labels": ...}}`` plus
    ``"class_names"`` (fine for CIFAR-100) and ``"coarse_names"``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected: Dict[str, dict] = {}
    if variant == "cifar10":
        names = [f"class{k}" for k in range(10)]
        batches = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
        offset = 0
        for split, files in batches.items():
            all_images, all_labels = [], []
            for name in files:
                images = smooth_images(per_batch, 32, 32, 3, seed=seed + offset)
                labels = labels_for(per_batch, 10, seed=seed + offset)
                offset += 1
                batch = {b"batch_label": f"{name} of 5".encode(), b"labels": [int(v) for v in labels],
                         b"data": cifar_rows(images),
                         b"filenames": [f"img_{offset}_{i}.png".encode() for i in range(per_batch)]}
                (folder / name).write_bytes(py2_pickle(batch))
                all_images.append(images)
                all_labels.append(labels)
            expected[split] = {"images": np.concatenate(all_images), "labels": np.concatenate(all_labels)}
        if with_meta:
            meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names],
                    b"num_vis": 3072}
            (folder / "batches.meta").write_bytes(py2_pickle(meta))
        expected["class_names"] = names
        return expected
    fine_names = [f"fine{k}" for k in range(100)]
    coarse_names = [f"coarse{k}" for k in range(20)]
    for offset, split in enumerate(("train", "test")):
        images = smooth_images(per_batch, 32, 32, 3, seed=seed + 10 + offset)
        fine = labels_for(per_batch, 100, seed=seed + offset)
        coarse = fine // 5
        batch = {b"filenames": [f"f{i}.png".encode() for i in range(per_batch)], b"batch_label": split.encode(),
                 b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in coarse],
                 b"data": cifar_rows(images)}
        (folder / split).write_bytes(py2_pickle(batch))
        expected[split] = {"images": images, "labels": fine, "coarse_labels": coarse}
    if with_meta:
        meta = {b"fine_label_names": [n.encode() for n in fine_names],
                b"coarse_label_names": [n.encode() for n in coarse_names]}
        (folder / "meta").write_bytes(py2_pickle(meta))
    expected["class_names"] = fine_names
    expected["coarse_names"] = coarse_names
    return expected


# --------------------------------------------------------------------------------------------------- IDX

def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 or int32 array: 0, 0, type code, rank, big-endian dims, big-endian values."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def write_idx_dataset(folder: Path, splits: Dict[str, Tuple[np.ndarray, np.ndarray]], gz: bool) -> None:
    """MNIST file names: ``train-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (+ ``.gz`` when ``gz``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        prefix = "train" if split == "train" else "t10k"
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz)


# ------------------------------------------------------------------------------------------ image folder

def write_image_folder(root: Path, class_names: Sequence[str], per_class: int,
                       sizes: Sequence[Tuple[int, int]], ext: str = ".png", gray: bool = False,
                       seed: int = 0, quality: int = 95) -> List[Tuple[Path, int, np.ndarray]]:
    """Write ``root/class/img_k.ext`` files; image k of a class has size ``sizes[k % len(sizes)]`` (H, W).

    Returns ``[(path, label, pixels)]`` in ImageFolder order (sorted classes, sorted file names), ``pixels``
    being what a decoder must give back: exact for PNG, Pillow's decoding of the written file for JPEG/WebP.
    """
    from PIL import Image

    root = Path(root)
    written = []
    for label, name in enumerate(sorted(class_names)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            height, width = sizes[k % len(sizes)]
            pixels = smooth_images(1, height, width, 1 if gray else 3, seed=seed + 1000 * label + k)[0]
            path = root / name / f"img_{k:03d}{ext}"
            options = {"quality": quality} if ext.lower() in (".jpg", ".jpeg", ".webp") else {}
            Image.fromarray(pixels).save(path, **options)
            if ext.lower() != ".png":
                with Image.open(path) as decoded:
                    pixels = np.asarray(decoded.convert("L" if gray else "RGB"))
            written.append((path, label, pixels))
    return written


# --------------------------------------------------------------------------------------------------- npz

def write_npz(path: Path, images: np.ndarray, labels: np.ndarray,
              class_names: Optional[Sequence[str]] = None, **extra) -> Path:
    arrays = {"images": images, "labels": labels, **extra}
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names)
    np.savez(path, **arrays)
    return Path(path)
