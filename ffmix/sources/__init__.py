"""Input formats for ``ffmix convert``, one module each, all giving a ``SourceDataset``.

``open_source(path)`` detects the format from what ``path`` is (``format=`` overrides):

* ``npz``: a ``.npz`` file with ``images`` and ``labels`` (module ``npz``);
* ``cifar10`` / ``cifar100``: the python batches folder, ``data_batch_1..5`` + ``test_batch`` or ``train`` +
  ``test`` (module ``cifar``; also found one level down, as the official archives unpack);
* ``idx``: a folder of MNIST-style ``*-images-idx3-ubyte[.gz]`` files, or one such file (module ``idx``);
* ``imagefolder``: a ``class_name/image.ext`` tree (module ``imagefolder``);
* ``filelist``: a ``.csv``/``.tsv``/``.txt``/``.lst`` file of ``path,label`` rows (module ``filelist``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import FfmixError, option
from .base import ArraySource, BadSampleError, SourceDataset

FORMATS = ("imagefolder", "filelist", "cifar10", "cifar100", "idx", "npz")

__all__ = ["FORMATS", "ArraySource", "BadSampleError", "SourceDataset", "detect_format", "open_source"]


def detect_format(path: os.PathLike) -> str:
    """The format of ``path`` (one of ``FORMATS``); raises ``FfmixError`` when it cannot tell."""
    from . import cifar, idx

    path = Path(path)
    _check_readable(path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        if idx.looks_like_idx_file(path):
            return "idx"
        if path.suffix.lower() in (".csv", ".tsv", ".txt", ".lst"):
            return "filelist"
        raise FfmixError(f"cannot tell the format of file {path}: expected an .npz, an IDX images file "
                         "(*-images-idx3-ubyte[.gz]) or a file list (.csv/.tsv/.txt/.lst); pass "
                         f"{option('format')}")
    variant = cifar.detect_variant(path)
    if variant is not None:
        return variant
    if idx.find_idx_files(path):
        return "idx"
    with os.scandir(path) as listing:
        has_folders = any(entry.is_dir() and not entry.name.startswith(".") for entry in listing)
    if has_folders:
        return "imagefolder"
    raise FfmixError(f"cannot tell the format of {path}: it holds no class folders, CIFAR batches or IDX "
                     f"files; pass {option('format')} (one of: " + ", ".join(FORMATS) + ")")


def open_source(path: os.PathLike, format: Optional[str] = None, split: Optional[str] = None,
                label_kind: Optional[str] = None, class_names_file: Optional[os.PathLike] = None,
                progress: bool = False, num_classes: Optional[int] = None) -> SourceDataset:
    """Open ``path`` as a dataset of ``format`` (detected when ``None``).

    ``split`` (``train``/``test``) selects a split where the format has them; ``label_kind``
    (``fine``/``coarse``) applies to CIFAR-100 only; ``class_names_file`` (one name per line) to file lists
    only. ``num_classes`` states the class count (checked against what the source shows; see
    ``base.class_count``). ``progress`` shows a bar while a folder or list of files is checked. Raises
    ``FfmixError`` (or ``FileNotFoundError``) for a missing or unreadable source, an unknown format, an option
    the format does not take, or bad content.
    """
    dataset = _open(Path(path), format, split, label_kind, class_names_file, progress, num_classes)
    if num_classes is not None and dataset.num_classes != num_classes:
        raise FfmixError(f"{path} has {dataset.num_classes} classes but "
                         f"{option('num_classes', num_classes)}; drop {option('num_classes')} or fix it")
    return dataset


def _open(path: Path, format, split, label_kind, class_names_file, progress, num_classes) -> SourceDataset:
    _check_readable(path)
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise FfmixError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if label_kind is not None and format != "cifar100":
        raise FfmixError(f"{option('label_kind')} applies to cifar100 only, not to {format}")
    if class_names_file is not None and format != "filelist":
        raise FfmixError(f"{option('class_names_file', flag='--class-names')} applies to file lists only, "
                         f"not to {format}")
    if format == "filelist":
        from .filelist import FileListSource
        if split is not None:
            raise FfmixError(f"a file list has no splits; drop {option('split')} (write one list per split)")
        if path.is_dir():
            raise FfmixError(f"{path} is a folder; a file list source is a .csv/.tsv file of path,label rows")
        return FileListSource(path, class_names_file=class_names_file, progress=progress,
                              num_classes=num_classes)
    if format == "npz":
        from .npz import NpzSource
        if split is not None:
            raise FfmixError(f"an .npz source has no splits; drop {option('split')} (write one .npz per split)")
        return NpzSource(path, num_classes=num_classes)
    if format in ("cifar10", "cifar100"):
        from .cifar import CifarSource
        return CifarSource(path, variant=format, split=split or "train", label_kind=label_kind or "fine")
    if format == "idx":
        from .idx import IdxSource
        return IdxSource(path, split=split or "train", num_classes=num_classes)
    from .imagefolder import ImageFolderSource
    return ImageFolderSource(path, split=split, progress=progress)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"SOURCE {path} does not exist")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise PermissionError(f"SOURCE {path} is not readable (permission denied)")
