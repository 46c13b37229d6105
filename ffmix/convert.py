"""``ffmix convert``: a dataset (image folder, file list, CIFAR, IDX, ``.npz``, parquet or WebDataset shards,
arrays, any Python dataset) -> an FFCV ``.beton`` + sidecar.

The file is written with FFCV's ``DatasetWriter`` (field ``image``: ``RGBImageField``, field ``label``:
``IntField``), so plain FFCV pipelines read it. What ffmix adds around the writer:

* atomic output: everything goes to a hidden temporary file beside OUT, which is renamed only once complete;
  any error, Ctrl-C or SIGTERM removes it, and an existing OUT is replaced only with ``force``;
* writer processes that report an unreadable image instead of dying with a traceback, and a main loop that
  stops on the first error, notices a dead process and never waits forever;
* the sidecar (``OUT.beton.json``) with class names, channel count, image sizes, write options and a
  fingerprint of the ``.beton`` (``metadata.read_meta`` refuses a pair that does not match); the data is
  fsynced before the renames, the sidecar is renamed first, and the folder is fsynced after;
* JPEG pass-through: a source JPEG that would be stored as JPEG anyway and needs no resizing is stored byte
  for byte (``ffcv_compat.write_encoded_jpeg``), when its header shows a kind FFCV decodes;
* ``skip_bad`` in one pass: the rows of unreadable samples are dropped before the file is finalised.

FFCV is imported only when a file is written, so ``ffmix convert --help`` answers at once.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import secrets
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .cli import HelpFormatter
from .errors import FfmixError, option, switch
from .metadata import IMAGE_FIELD, LABEL_FIELD, DatasetMeta, beton_fingerprint, meta_path, write_meta
from .system import (DISK_FULL_ERRNOS, atomic_write, available_cpus, check_writable, fsync_directory,
                     write_error)
from .sources.base import ArraySource, BadSampleError, SourceDataset, to_rgb

WRITE_MODES = ("raw", "jpg", "smart", "proportion")
PASSTHROUGH_CHOICES = ("yes", "verify", "no")
# In 'smart' mode an image is stored as JPEG when its raw pixels take more bytes than this (about 148x148 RGB),
# so thumbnails (CIFAR, MNIST) stay exact and photos are compressed. FFCV itself has no default and would
# store everything raw.
DEFAULT_SMART_THRESHOLD = 65536
MIN_PAGE_SIZE = 1 << 21          # FFCV's smallest page (2 MiB)
LARGE_PAGE_SIZE = 1 << 23        # FFCV's default page (8 MiB), used for datasets that are not tiny
MAX_PAGE_SIZE = 1 << 31          # FFCV stores page sizes as uint32 and wants a power of two
MAX_CHUNK = 100                  # samples a writer process takes at a time (FFCV's default)


class ConversionInterrupted(KeyboardInterrupt):
    """SIGTERM arrived during a conversion; a KeyboardInterrupt so the CLI treats it like Ctrl-C."""


# ----------------------------------------------------------------------------------------------- public API

def convert_arrays(images, labels, out_path, *, class_names: Optional[Sequence[str]] = None,
                   num_classes: Optional[int] = None,
                   write_mode: str = "raw", max_resolution: Optional[int] = None, jpeg_quality: int = 90,
                   compress_probability: float = 0.5, smart_threshold: Optional[int] = None,
                   num_workers: int = 1, force: bool = False, progress: bool = False,
                   source: str = "arrays") -> DatasetMeta:
    """Write in-memory images and labels to ``out_path`` (a ``.beton``) and its sidecar; return the metadata.

    ``images``: a uint8 array ``(N, H, W)`` (grayscale), ``(N, H, W, 1)`` or ``(N, H, W, 3)``, or a list of
    ``(H, W)`` / ``(H, W, 3)`` uint8 arrays of any sizes. ``labels``: ``(N,)`` non-negative integers.
    ``class_names`` defaults to ``'0' .. str(max(labels))``; ``num_classes`` states the class count (needed when
    the largest label implies over 1000 classes and more classes than images). The other options are those of
    ``convert``.
    Raises ``FfmixError`` for bad input or an unusable ``out_path``; nothing is left at ``out_path`` then.
    """
    dataset = ArraySource(images, labels, class_names=class_names, source=source, num_classes=num_classes)
    return convert(dataset, out_path, write_mode=write_mode, max_resolution=max_resolution,
                   jpeg_quality=jpeg_quality, compress_probability=compress_probability,
                   smart_threshold=smart_threshold, num_workers=num_workers, force=force, progress=progress)


def convert_dataset(dataset, out_path, *, class_names: Optional[Sequence[str]] = None,
                    labels: Optional[Sequence[int]] = None, image_key: str = "image", label_key: str = "label",
                    write_mode: str = "raw", max_resolution: Optional[int] = None, jpeg_quality: int = 90,
                    compress_probability: float = 0.5, smart_threshold: Optional[int] = None,
                    num_workers: int = 1, force: bool = False, progress: bool = False, skip_bad: bool = False,
                    limit: Optional[int] = None, passthrough: str = "yes") -> DatasetMeta:
    """Write any map-style Python dataset (``len``, ``[i]``) to ``out_path`` and its sidecar; return the metadata.

    Items are ``(image, label)`` or mappings with ``image_key``/``label_key`` entries; images are PIL images,
    uint8 arrays or tensors (HW, HWC or CHW), encoded bytes or ``{"bytes", "path"}`` mappings, and encoded
    JPEG bytes may be stored as they are (``passthrough``). Labels come from ``labels``, the dataset's
    ``targets``, its ``label_key`` column, or one pass over the items (``ffmix.sources.pydataset``).
    ``class_names`` defaults to ``'0' .. str(max label)``. The writer processes are forked and share the dataset
    (nothing is pickled). The other options and the errors are those of ``convert``.
    """
    from .sources.pydataset import PythonDatasetSource

    source = PythonDatasetSource(dataset, labels=labels, class_names=class_names, image_key=image_key,
                                 label_key=label_key, progress=progress)
    return convert(source, out_path, write_mode=write_mode, max_resolution=max_resolution,
                   jpeg_quality=jpeg_quality, compress_probability=compress_probability,
                   smart_threshold=smart_threshold, num_workers=num_workers, force=force, progress=progress,
                   skip_bad=skip_bad, limit=limit, passthrough=passthrough)


def convert(dataset: SourceDataset, out_path, *, write_mode: str = "raw", max_resolution: Optional[int] = None,
            jpeg_quality: int = 90, compress_probability: float = 0.5, smart_threshold: Optional[int] = None,
            num_workers: int = 1, force: bool = False, progress: bool = False, skip_bad: bool = False,
            limit: Optional[int] = None, passthrough: str = "yes") -> DatasetMeta:
    """Write ``dataset`` (a ``SourceDataset`` from ``ffmix.sources``) to ``out_path`` and its sidecar.

    write_mode: FFCV's ``raw`` (exact pixels), ``jpg``, ``smart`` (JPEG when the raw image is over
    ``smart_threshold`` bytes, default 65536) or ``proportion`` (JPEG with ``compress_probability``).
    max_resolution: longest side in px after resizing (images are only shrunk). num_workers: FFCV writer
    processes. limit: write only the first ``limit`` samples. skip_bad: leave out images that fail to decode
    (their count is in ``write_options['skipped']``) instead of failing; the file is still written in one pass.
    passthrough: ``yes`` stores a source JPEG's bytes as they are when the mode stores that image as JPEG and
    it needs no resizing and its header shows a kind FFCV decodes (``ffmix.sources.jpeg``); ``verify`` also
    decodes each such file with FFCV's decoder first (slower); ``no`` decodes and re-encodes every image. The
    counts are in ``write_options['passed_through']`` and ``['jpeg_encoded']``.

    Returns the ``DatasetMeta`` also written to ``<out_path>.json``. Raises ``FfmixError`` for bad options,
    an unreadable sample (unless ``skip_bad``), an unusable ``out_path`` or one that exists while ``force`` is
    false; on any error or interruption (Ctrl-C, SIGTERM) nothing is left at
    ``out_path`` and no temporary file remains.
    """
    _check_options(write_mode, max_resolution, jpeg_quality, compress_probability, smart_threshold,
                   num_workers, limit)
    if passthrough not in PASSTHROUGH_CHOICES:
        raise FfmixError(f"unknown passthrough setting {passthrough!r}; choose one of {', '.join(PASSTHROUGH_CHOICES)}")
    if smart_threshold is None:
        smart_threshold = DEFAULT_SMART_THRESHOLD
    out = check_out_path(out_path, force)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise FfmixError(f"{dataset.source or dataset.name}: the dataset is empty, nothing to write")
    import ffcv.writer  # noqa: F401  (seconds of Numba set-up; done before the temporary file appears)

    options = dict(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=int(jpeg_quality),
                   compress_probability=float(compress_probability), smart_threshold=int(smart_threshold),
                   passthrough=passthrough)
    temp: Optional[Path] = None
    meta_written = False
    with _signals_raise():
        try:
            temp = _claim_temp_file(out)
            indices, skipped, colour_count, passed = _write_all(temp, dataset, np.arange(count), options,
                                                                num_workers, progress, skip_bad, out.name)
            _fsync_file(temp)  # the data is on disk before any name points at it
            meta = _describe(temp, dataset, indices, colour_count, options, limit, skipped, passed)
            sidecar = meta_path(out)
            old_sidecar = sidecar.read_bytes() if sidecar.is_file() else None
            with _signals_blocked():  # both renames or neither: a signal now is handled once they are done
                # The sidecar first: it names its .beton by fingerprint, so a crash between the two renames
                # leaves a new sidecar beside the old .beton, which read_meta refuses. (The other order could
                # leave a new .beton beside an old sidecar without a fingerprint, which would be accepted.)
                write_meta(out, meta)
                meta_written = True
                _between_renames()
                os.replace(temp, out)
                temp = None
                fsync_directory(out.parent)
            return meta
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:  # in a writer process or here: name OUT, not the temporary file
                raise write_error(out, exc) from None
            raise
        finally:
            with _signals_blocked():  # a second Ctrl-C must not cut the clean-up short
                if temp is not None:
                    _remove(temp)
                    if meta_written:  # the .beton rename failed: put the old sidecar back
                        if old_sidecar is None:
                            _remove(sidecar)
                        else:
                            atomic_write(sidecar, old_sidecar, durable=True)


def _between_renames() -> None:
    """Nothing; the tests replace it to crash the process between the sidecar's and the .beton's rename."""


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def check_out_path(out_path, force: bool) -> Path:
    """Fail early, with a message, when ``out_path`` cannot be written; returns it as a ``Path``."""
    out = Path(out_path)
    if out.is_dir():
        raise FfmixError(f"OUT {out} is a directory; give a file name such as {out / 'train.beton'}")
    check_writable(out)
    check_writable(meta_path(out))  # the sidecar too: a folder there would be found only after all the work
    if out.exists() and not force:
        raise FfmixError(f"{out} already exists; pass {switch('force')} to overwrite it")
    return out


# ---------------------------------------------------------------------------------------------------- CLI

def configure_parser(parser: argparse.ArgumentParser) -> None:
    from .sources import FORMATS
    parser.formatter_class = HelpFormatter
    parser.description = (
        "Write a dataset to an FFCV .beton (fields 'image' and 'label') plus an ffmix sidecar OUT.json with "
        "class names, channel count, image sizes and a fingerprint of OUT (a sidecar that does not match its "
        ".beton is refused when loading). The format is detected from SOURCE: a class_name/image folder tree, "
        "a file list (.csv/.tsv/.txt/.lst of 'path,label' or 'path<TAB>label' rows, paths relative to the "
        "list, labels all class indices or all class names), a CIFAR-10/100 python batches folder, a folder of "
        "MNIST-style IDX files (gzip or not), an .npz with arrays 'images' (N,H,W[,C]) uint8 and 'labels' "
        "(N,), Hugging Face parquet shards ('data/train-*.parquet': an image column of {bytes, path} structs and "
        "an integer label column; needs pip install 'ffmix[parquet]') or WebDataset tar shards "
        "('shards/train-{000000..000099}.tar': KEY.jpg + KEY.cls members). Duplicates are never written "
        "silently: in an image folder, a folder reached again through a "
        "symbolic link (a cycle, or a second link to it) is skipped with a warning naming it, and one real "
        "file reached twice (a file link or hard link, or a file list naming it twice) is refused with an error "
        "naming both paths. The output is written to a temporary file and renamed when complete, so an error or "
        "Ctrl-C leaves nothing at OUT; both files are flushed to disk before they are renamed.")
    parser.add_argument("source", metavar="SOURCE",
                        help="dataset folder or file, or a glob / brace range of shards (quote it)")
    parser.add_argument("out", metavar="OUT", help="the .beton to write (its sidecar is OUT.json)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="input format (default: detected from SOURCE)")
    parser.add_argument("--split", choices=("train", "test"), default=None,
                        help="which split, for sources that have them (CIFAR, IDX: default train; an image "
                             "folder with train/ and test/ or val/ subfolders)")
    parser.add_argument("--label-kind", choices=("fine", "coarse"), default=None,
                        help="CIFAR-100 only: the 100 fine or the 20 coarse classes (default fine)")
    parser.add_argument("--class-names", default=None, metavar="FILE",
                        help="file lists and shards: one class name per line, line k naming class k (default: "
                             "the sorted label names, the parquet file's huggingface metadata, or '0', '1', ...)")
    parser.add_argument("--image-column", default=None, metavar="NAME",
                        help="parquet only: the column of encoded images, binary or a {bytes, path} struct "
                             "(default: image)")
    parser.add_argument("--label-column", default=None, metavar="NAME",
                        help="parquet only: the column of integer labels (default: label)")
    parser.add_argument("--json-label", default=None, metavar="FIELD",
                        help="WebDataset only: take each label from this field of the sample's .json member "
                             "instead of its .cls member")
    parser.add_argument("--num-classes", type=int, default=None, metavar="K",
                        help="the number of classes, when labels are class indices (.npz, IDX, file list) and "
                             "the largest label does not show it; needed to accept labels that imply over 1000 "
                             "classes and more classes than images (default: largest label + 1)")
    parser.add_argument("--write-mode", choices=WRITE_MODES, default="raw",
                        help="raw: exact pixels; jpg: JPEG; smart: JPEG for images over --smart-threshold "
                             "bytes; proportion: JPEG with probability --compress-probability")
    parser.add_argument("--max-resolution", type=int, default=None, metavar="PX",
                        help="shrink images so the longest side is at most PX (never enlarges)")
    parser.add_argument("--jpeg-quality", type=int, default=90, metavar="Q",
                        help="JPEG quality, 1-100, of the images ffmix encodes (not of those passed through)")
    parser.add_argument("--compress-probability", type=float, default=0.5, metavar="P",
                        help="with --write-mode proportion: the share of images stored as JPEG")
    parser.add_argument("--smart-threshold", type=int, default=DEFAULT_SMART_THRESHOLD, metavar="BYTES",
                        help="with --write-mode smart: store as JPEG the images whose raw size exceeds this")
    parser.add_argument("--passthrough", choices=PASSTHROUGH_CHOICES, default="yes",
                        help="JPEG source files (image folder, file list) that the write mode stores as JPEG "
                             "and that need no resizing are stored byte for byte, without decoding, when their "
                             "header shows a kind FFCV's decoder reads (8-bit baseline or progressive, gray or "
                             "YCbCr, complete); others (CMYK, 12-bit, cut off, ...) are decoded and re-encoded, "
                             "or reported if they cannot be decoded. yes: so (default); verify: also decode each "
                             "such file with FFCV's decoder before storing it (slower); no: decode and re-encode "
                             "every image")
    parser.add_argument("--workers", type=int, default=available_cpus(), metavar="N",
                        help="FFCV writer processes (default: %(default)s, the CPUs available)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="write only the first N samples (for trials)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out images that fail to decode and report their count, instead of failing "
                             "(the file is still written in one pass)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, summary line or warnings")


def run(args: argparse.Namespace) -> int:
    import warnings

    from .errors import FfmixWarning
    from .sources import open_source
    check_out_path(args.out, args.force)  # before reading a possibly large source
    if Path(args.out).resolve() == Path(args.source).resolve():
        raise FfmixError(f"OUT {args.out} is SOURCE itself; write the .beton elsewhere")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FfmixWarning)
        dataset = open_source(args.source, format=args.format, split=args.split, label_kind=args.label_kind,
                              class_names_file=args.class_names, num_classes=args.num_classes,
                              progress=not args.quiet, image_column=args.image_column,
                              label_column=args.label_column, json_label=args.json_label)
    for warning in caught:
        if not args.quiet and issubclass(warning.category, FfmixWarning):
            print(f"ffmix convert: warning: {warning.message}", file=sys.stderr)
        elif not issubclass(warning.category, FfmixWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    import_started = time.perf_counter()
    import ffcv.writer  # noqa: F401  (seconds of Numba set-up, left out of the reported time)
    started += time.perf_counter() - import_started
    meta = convert(dataset, args.out, write_mode=args.write_mode, max_resolution=args.max_resolution,
                   jpeg_quality=args.jpeg_quality, compress_probability=args.compress_probability,
                   smart_threshold=args.smart_threshold, num_workers=args.workers, force=args.force,
                   progress=not args.quiet, skip_bad=args.skip_bad, limit=args.limit,
                   passthrough=args.passthrough)
    seconds = time.perf_counter() - started
    if not args.quiet:
        print(summary_line(meta, args.out, seconds))
    return 0


def summary_line(meta: DatasetMeta, out, seconds: float) -> str:
    """The one line ``ffmix convert`` prints at the end: what was written, how fast, what was left out."""
    options = meta.write_options
    megabytes = os.path.getsize(out) / 1e6
    shape = "x".join(map(str, meta.image_shape)) if meta.image_shape else (
        f"{meta.min_size[0]}x{meta.min_size[1]} to {meta.max_size[0]}x{meta.max_size[1]}")
    line = (f"ffmix convert: wrote {meta.num_samples} samples ({meta.num_classes} classes, {shape}, "
            f"{'gray' if meta.channels == 1 else 'RGB'}, {options['write_mode']}) to {out} in {seconds:.1f} s: "
            f"{megabytes:.1f} MB, {meta.num_samples / seconds:.0f} samples/s")
    if options["write_mode"] != "raw":
        line += (f"; JPEG: {options.get('passed_through', 0)} stored as they were, "
                 f"{options.get('jpeg_encoded', 0)} encoded")
    if options.get("skipped"):
        line += f"; skipped {options['skipped']} unreadable images"
    return line


# ---------------------------------------------------------------------------------------------- internals

def _check_options(write_mode, max_resolution, jpeg_quality, compress_probability, smart_threshold,
                   num_workers, limit) -> None:
    if write_mode not in WRITE_MODES:
        raise FfmixError(f"unknown write mode {write_mode!r}; choose one of {', '.join(WRITE_MODES)}")
    if max_resolution is not None and not 1 <= max_resolution <= 65535:
        raise FfmixError(f"{option('max_resolution')} must be between 1 and 65535 px, got {max_resolution}")
    if not 1 <= jpeg_quality <= 100:
        raise FfmixError(f"{option('jpeg_quality')} must be between 1 and 100, got {jpeg_quality}")
    if not 0.0 <= compress_probability <= 1.0:
        raise FfmixError(f"{option('compress_probability')} must be between 0 and 1, got {compress_probability}")
    if smart_threshold is not None and smart_threshold < 0:
        raise FfmixError(f"{option('smart_threshold')} must be >= 0 bytes, got {smart_threshold}")
    if num_workers < 1:
        raise FfmixError(f"{option('num_workers', flag='--workers')} must be at least 1, got {num_workers}")
    if limit is not None and limit < 1:
        raise FfmixError(f"{option('limit')} must be at least 1, got {limit}")


def _claim_temp_file(out: Path) -> Path:
    """Create an empty, hidden, uniquely named file beside ``out`` (same file system, so renaming is atomic)."""
    for _ in range(100):
        temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue
        except PermissionError:
            raise FfmixError(f"cannot write {out}: no permission to create files in {out.parent}") from None
        except OSError as exc:
            raise FfmixError(f"cannot write {out}: {exc.strerror}") from None
    raise FfmixError(f"cannot create a temporary file beside {out}")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While converting, SIGTERM raises ``ConversionInterrupted`` (as Ctrl-C raises KeyboardInterrupt), so the
    clean-up in ``finally`` runs when a job scheduler or ``kill`` stops us. Main thread only (Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise ConversionInterrupted(f"by {signal.Signals(signum).name}")  # "ffmix convert: interrupted by SIGTERM"

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration; one that arrived meanwhile is delivered after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _page_size(dataset: SourceDataset, count: int, max_resolution: Optional[int]) -> int:
    """FFCV stores each sample inside one page, so a page must hold the largest encoded image. A JPEG can be
    larger than the raw pixels of a tiny or noisy image, hence the factor 2 and the header allowance. Tiny
    datasets get FFCV's smallest page, since every writer process leaves one partly filled page."""
    largest = dataset.max_image_bytes()
    if max_resolution is not None:
        bound = max_resolution * max_resolution * 3
        largest = bound if largest is None else min(largest, bound)
    if largest is None:
        return LARGE_PAGE_SIZE  # unknown until decoded; a too-small page is detected and the write redone
    floor = MIN_PAGE_SIZE if count * largest <= 16 * LARGE_PAGE_SIZE else LARGE_PAGE_SIZE
    return _page_size_for(largest, floor)


def _page_size_for(image_bytes: int, floor: int = MIN_PAGE_SIZE) -> int:
    page = max(floor, _next_power_of_2(2 * image_bytes + 65536))
    if page > MAX_PAGE_SIZE:
        raise FfmixError(f"an image of {image_bytes / 1e6:.0f} MB (raw) is larger than FFCV can store in one "
                         "page; pass --max-resolution")
    return page


class _PageTooSmall(Exception):
    def __init__(self, image_bytes: int):
        self.image_bytes = image_bytes


@dataclass
class _Problem:
    kind: str          # "bad" (unreadable sample), "too_big" (page too small), "disk_full" (errno) or "crash"
    index: int = -1    # source index
    sample: str = ""
    detail: str = ""
    image_bytes: int = 0
    row: int = -1      # the row of the file it was to fill


@dataclass
class _Pass:
    bad: List[_Problem] = field(default_factory=list)
    colour_count: int = 0
    passed_count: int = 0
    kept: Optional[np.ndarray] = None   # rows written, when some were left out


def _write_all(temp: Path, dataset: SourceDataset, indices: np.ndarray, options: dict, num_workers: int,
               progress: bool, skip_bad: bool, label: str) -> Tuple[np.ndarray, List[str], int, int]:
    """Write ``dataset[indices]`` to ``temp``; returns (indices written, skipped sample names, colour images,
    JPEGs stored as they were).

    One pass: with ``skip_bad``, the rows of unreadable samples stay empty and are dropped from the tables
    before the file is finalised (``ffcv_compat.drop_unwritten_rows``). Only an image too large for FFCV's page
    makes a second pass, with a larger page."""
    page_size = _page_size(dataset, len(indices), options["max_resolution"])
    while True:
        try:
            outcome = _write_pass(temp, dataset, indices, options, page_size, num_workers, progress,
                                  stop_on_bad=not skip_bad, label=label)
        except _PageTooSmall as exc:
            page_size = _page_size_for(exc.image_bytes, floor=page_size * 2)
            continue
        skipped = [problem.sample for problem in sorted(outcome.bad, key=lambda problem: problem.row)]
        kept = indices if outcome.kept is None else indices[outcome.kept]
        if skipped and progress:
            print(f"ffmix convert: left out {len(skipped)} unreadable images", file=sys.stderr)
        return kept, skipped, outcome.colour_count, outcome.passed_count


def _write_pass(temp: Path, dataset: SourceDataset, indices: np.ndarray, options: dict, page_size: int,
                num_workers: int, progress: bool, stop_on_bad: bool, label: str) -> _Pass:
    """One run of FFCV's writer over ``indices`` into ``temp`` (truncated first)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from .ffcv_compat import drop_unwritten_rows, finalize_writer, prepare_writer, release_writer, writer_state
    from tqdm import tqdm

    image_field = RGBImageField(write_mode=options["write_mode"], max_resolution=options["max_resolution"],
                                smart_threshold=options["smart_threshold"], jpeg_quality=options["jpeg_quality"],
                                compress_probability=options["compress_probability"])
    writer = DatasetWriter(os.fspath(temp), {IMAGE_FIELD: image_field, LABEL_FIELD: IntField()},
                           page_size=page_size, num_workers=num_workers)
    count = len(indices)
    chunk = max(1, min(MAX_CHUNK, math.ceil(count / (num_workers * 8))))
    num_chunks = math.ceil(count / chunk)
    num_processes = min(num_workers, num_chunks)

    # FFCV's workers are forked so they share the dataset (arrays, file lists) without pickling it.
    context = multiprocessing.get_context("fork")
    work_queue = context.Queue()
    problem_queue = context.Queue()
    allocations_queue = context.Queue()
    done_count = context.Value("Q", 0)
    colour_count = context.Value("Q", 0)
    passed_count = context.Value("Q", 0)
    # proportion mode: which rows hold JPEG, drawn here (FFCV draws in each forked process, whose NumPy
    # generators all start from the same state)
    jpeg_rows = np.random.default_rng().random(count) < options["compress_probability"]
    processes = []
    outcome = _Pass()
    bar = None
    try:
        prepare_writer(writer, count)  # header and field table into the file; the per-sample table in shared memory
        for chunk_number in range(num_chunks):
            work_queue.put(chunk_number)
        for _ in range(num_processes):
            work_queue.put(None)
        metadata_memory, metadata_type, fields, allocator = writer_state(writer)
        args = (work_queue, metadata_memory, metadata_type, fields, allocator, done_count, colour_count,
                passed_count, allocations_queue, problem_queue, dataset, indices, chunk, options, jpeg_rows)
        processes = [context.Process(target=_writer_process, args=args, daemon=True)
                     for _ in range(num_processes)]
        # Children start with SIGINT/SIGTERM held back and set their own handlers before taking them, so a
        # Ctrl-C during start-up cannot print a traceback from a child.
        with _signals_blocked():
            for process in processes:
                process.start()
        bar = tqdm(total=count, unit="img", desc=f"{dataset.name} -> {label}",
                   file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
        allocations = []
        received = 0
        while received < num_processes:
            _take_problems(problem_queue, outcome, stop_on_bad, block=False)
            try:
                allocations.extend(allocations_queue.get(timeout=0.05))
                received += 1
            except queue.Empty:
                pass
            bar.update(done_count.value - bar.n)
            for process in processes:
                if process.exitcode not in (None, 0):
                    _take_problems(problem_queue, outcome, stop_on_bad, block=True)
                    how = (f"was killed by signal {-process.exitcode} (out of memory?)" if process.exitcode < 0
                           else f"exited with code {process.exitcode}")
                    raise RuntimeError(f"an FFCV writer process {how}")
            if received < num_processes and all(p.exitcode == 0 for p in processes):
                # all ended well: what they sent is in the pipes; never wait for more than that
                _take_problems(problem_queue, outcome, stop_on_bad, block=True)
                try:
                    while received < num_processes:
                        allocations.extend(allocations_queue.get(timeout=1.0))
                        received += 1
                except queue.Empty:
                    raise RuntimeError("FFCV writer processes ended without reporting their pages") from None
        for process in processes:
            process.join()
        _take_problems(problem_queue, outcome, stop_on_bad, block=True)
        bar.update(done_count.value - bar.n)
        if outcome.bad:
            outcome.kept = np.setdiff1d(np.arange(count), [problem.row for problem in outcome.bad])
            if len(outcome.kept) == 0:
                first = min(outcome.bad, key=lambda problem: problem.row)
                raise FfmixError(f"{dataset.source}: none of the {count} images could be read "
                                 f"(first: {first.sample}: {first.detail})")
            allocations = drop_unwritten_rows(writer, outcome.kept, allocations)
        finalize_writer(writer, allocations)
        outcome.colour_count = colour_count.value
        outcome.passed_count = passed_count.value
        return outcome
    finally:
        with _signals_blocked():
            if bar is not None:
                bar.close()
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
                    process.join()
            work_queue.cancel_join_thread()  # unread chunk numbers must not keep us waiting at exit
            release_writer(writer)


def _take_problems(problem_queue, outcome: _Pass, stop_on_bad: bool, block: bool) -> None:
    """Read what the writer processes reported; raise for what ends this pass."""
    while True:
        try:
            problem = problem_queue.get(timeout=0.05) if block else problem_queue.get_nowait()
        except queue.Empty:
            return
        if problem.kind == "crash":
            raise RuntimeError(f"an FFCV writer process failed:\n{problem.detail}")
        if problem.kind == "disk_full":
            raise OSError(int(problem.detail), os.strerror(int(problem.detail)))
        if problem.kind == "too_big":
            raise _PageTooSmall(problem.image_bytes)
        if stop_on_bad:
            raise FfmixError(f"cannot read {problem.sample}: {problem.detail}; pass {switch('skip_bad')} "
                             "to leave out unreadable images")
        outcome.bad.append(problem)


def _writer_process(work_queue, metadata_memory, metadata_type, fields, allocator, done_count, colour_count,
                    passed_count, allocations_queue, problem_queue, dataset: SourceDataset, indices: np.ndarray,
                    chunk: int, options: dict, jpeg_rows: np.ndarray) -> None:
    """One FFCV writer process: encode the chunks it takes from ``work_queue`` into pages of the file.

    Like FFCV's own worker, but an unreadable sample is reported (and its row left empty, to be dropped or the
    pass abandoned by the main process) rather than killing the process with a traceback, and a JPEG file that
    the write mode would store as JPEG anyway and that needs no resizing is stored as it is."""
    from ffcv.fields import RGBImageField

    from .ffcv_compat import (EncodedJPEG, close_allocator, decodes_with_ffcv, open_allocator,
                              write_encoded_jpeg, write_sample)
    from .sources.encoded import refuse_huge_jpeg
    from .sources.jpeg import read_jpeg_header

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group; the main process stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    write_mode, max_resolution = options["write_mode"], options["max_resolution"]
    passthrough = options["passthrough"] != "no" and write_mode != "raw"
    verify = options["passthrough"] == "verify"
    fixed_fields = {}  # proportion mode: the row's mode is drawn already (jpeg_rows), so encode with that mode
    if write_mode == "proportion":
        for mode in ("jpg", "raw"):
            image_field = RGBImageField(write_mode=mode, max_resolution=max_resolution,
                                        jpeg_quality=options["jpeg_quality"])
            fixed_fields[mode] = {IMAGE_FIELD: image_field, LABEL_FIELD: fields[LABEL_FIELD]}

    def stores_jpeg(row: int, height: int, width: int) -> bool:
        if write_mode == "jpg":
            return True
        if write_mode == "smart":
            return height * width * 3 > options["smart_threshold"]
        return write_mode == "proportion" and bool(jpeg_rows[row])

    try:
        metadata = np.frombuffer(metadata_memory.buf, dtype=metadata_type)
        open_allocator(allocator)
        while True:
            chunk_number = work_queue.get()
            if chunk_number is None:
                break
            first = chunk_number * chunk
            colour = passed = 0
            for destination in range(first, min(first + chunk, len(indices))):
                source_index = int(indices[destination])
                label = int(dataset.labels[source_index])
                try:
                    encoded = dataset.read_encoded(source_index) if passthrough else None
                    header = read_jpeg_header(encoded) if encoded is not None else None
                    if header is not None:  # stored without decoding: Pillow's pixel limit is applied here
                        refuse_huge_jpeg(header, dataset.describe(source_index))
                    if (header is not None and header.storable
                            and (max_resolution is None or max(header.height, header.width) <= max_resolution)
                            and stores_jpeg(destination, header.height, header.width)
                            and (not verify or decodes_with_ffcv(encoded, header.height, header.width))):
                        sample = (EncodedJPEG(encoded, header.height, header.width), label)
                        image_bytes = len(encoded)
                        write = write_encoded_jpeg
                        colour += header.components == 3
                        passed += 1
                    else:
                        image = dataset.read(source_index)
                        colour += image.ndim == 3
                        sample = (to_rgb(image), label)
                        image_bytes = int(sample[0].nbytes)
                        write = write_sample
                except BadSampleError as exc:
                    problem_queue.put(_Problem("bad", source_index, exc.sample, exc.reason, row=destination))
                    continue
                row_fields = fields
                if fixed_fields and write is write_sample:
                    row_fields = fixed_fields["jpg" if jpeg_rows[destination] else "raw"]
                try:
                    write(sample, destination, metadata, allocator, row_fields)
                except ValueError as exc:
                    if "page size" not in str(exc):
                        raise
                    problem_queue.put(_Problem("too_big", source_index, dataset.describe(source_index),
                                               str(exc), image_bytes, row=destination))
                    return
            with done_count.get_lock():
                done_count.value += min(first + chunk, len(indices)) - first
            with colour_count.get_lock():
                colour_count.value += colour
            with passed_count.get_lock():
                passed_count.value += passed
        allocations_queue.put(close_allocator(allocator))
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            problem_queue.put(_Problem("crash", detail=traceback.format_exc()))
        else:  # the main process names OUT; the temporary file is its business
            problem_queue.put(_Problem("disk_full", detail=str(exc.errno)))
        sys.exit(1)
    except Exception:
        problem_queue.put(_Problem("crash", detail=traceback.format_exc()))
        sys.exit(1)


def _describe(temp: Path, dataset: SourceDataset, indices: np.ndarray, colour_count: int, options: dict,
              limit: Optional[int], skipped: List[str], passed: int) -> DatasetMeta:
    """The sidecar's facts, the image sizes read back from the written file (after any resizing), and the
    fingerprint that ties the sidecar to this file."""
    from .ffcv_compat import JPEG_MODE, field_table, fingerprint_regions, open_reader

    image_table = field_table(open_reader(temp), IMAGE_FIELD)
    heights = image_table["height"].astype(np.int64)
    widths = image_table["width"].astype(np.int64)
    labels = dataset.labels[indices]
    uniform = heights.min() == heights.max() and widths.min() == widths.max()
    write_options = dict(options, limit=limit, skipped=len(skipped), skipped_samples=skipped[:100],
                         passed_through=int(passed),
                         jpeg_encoded=int((image_table["mode"] == JPEG_MODE).sum()) - int(passed))
    if options["write_mode"] != "smart":
        write_options.pop("smart_threshold")
    return DatasetMeta(
        num_samples=int(len(indices)),
        num_classes=dataset.num_classes,
        class_names=list(dataset.class_names),
        channels=3 if colour_count else 1,
        image_shape=(int(heights[0]), int(widths[0])) if uniform else None,
        min_size=(int(heights.min()), int(widths.min())),
        max_size=(int(heights.max()), int(widths.max())),
        label_counts=np.bincount(labels, minlength=dataset.num_classes).astype(int).tolist(),
        source=dataset.source,
        source_format=dataset.name,
        split=dataset.split,
        write_options=write_options,
        beton_fingerprint=beton_fingerprint(temp, fingerprint_regions(temp)),
    )
