"""The metadata ffmix stores beside every ``.beton`` it writes.

FFCV files carry per-sample fields only, so dataset-level facts (class names, image mode, how the file
was written) live in a small JSON sidecar, ``OUT.beton.json``. The loader reads it so it never guesses the
number of classes or the channel count.

The two files are one unit: the sidecar holds a fingerprint of its ``.beton`` (its size and a BLAKE2b hash of the
byte ranges that hold the header, field table, per-sample table and allocation table: every label, image size
and data address), and ``read_meta`` refuses a sidecar whose fingerprint does not match, so a sidecar from
another conversion (a crash between the two renames, a copied file, CIFAR-100 fine beside coarse: same sample
count, other labels) is never trusted. Sidecars written before fingerprints existed carry none and are accepted
unchecked: refusing them would break every older file, and the loader's own count checks still apply.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import FfmixError, on_command_line
from .system import atomic_write

FORMAT_VERSION = 1
IMAGE_FIELD = "image"   # FFCV's own naming, so plain FFCV pipelines read ffmix files
LABEL_FIELD = "label"


@dataclass
class DatasetMeta:
    """Dataset-level facts about one ``.beton`` file.

    ``image_shape`` is ``(H, W)`` when every image has the same size, else ``None``; ``channels`` is 1 for a
    grayscale source (stored as 3 identical channels, since FFCV's image field is RGB) and 3 for colour.
    ``label_counts[k]`` is the number of samples of class ``k``. ``beton_fingerprint`` identifies the
    ``.beton`` the sidecar belongs to (see the module docstring); ``None`` in sidecars from before it existed.
    """

    num_samples: int
    num_classes: int
    class_names: List[str]
    channels: int
    image_shape: Optional[Tuple[int, int]]
    min_size: Tuple[int, int]
    max_size: Tuple[int, int]
    label_counts: List[int]
    source: str = ""
    source_format: str = ""
    split: Optional[str] = None
    write_options: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    beton_fingerprint: Optional[Dict[str, Any]] = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "DatasetMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in raw and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise FfmixError(f"ffmix metadata is missing keys {missing}")
        values = {k: v for k, v in raw.items() if k in known}
        for key in ("image_shape", "min_size", "max_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def meta_path(beton_path: os.PathLike) -> Path:
    """Where the sidecar of ``beton_path`` lives: ``<beton_path>.json``."""
    return Path(f"{os.fspath(beton_path)}.json")


def write_meta(beton_path: os.PathLike, meta: DatasetMeta) -> Path:
    """Write the sidecar of ``beton_path`` atomically and durably (temporary file, fsync, rename, fsync of
    the folder); returns its path."""
    return atomic_write(meta_path(beton_path), meta.to_json(), durable=True)


def beton_fingerprint(beton_path: os.PathLike, regions: Sequence[Tuple[int, int]]) -> Dict[str, Any]:
    """``{"size", "regions", "blake2b"}``: the file's size and a hash of its byte ranges ``regions``
    (``[start, end)`` pairs; ``ffcv_compat.fingerprint_regions`` gives the ones that identify a .beton)."""
    regions = [[int(start), int(end)] for start, end in regions]  # lists, as JSON gives them back
    return {"size": os.path.getsize(beton_path), "regions": regions,
            "blake2b": _hash_regions(beton_path, regions)}


def _hash_regions(path: os.PathLike, regions: Sequence[Tuple[int, int]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        for start, end in regions:
            stream.seek(start)
            left = end - start
            while left > 0:
                block = stream.read(min(left, 1 << 22))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
    return digest.hexdigest()


def check_fingerprint(beton_path: os.PathLike, meta: DatasetMeta) -> None:
    """Raise ``FfmixError`` unless ``meta`` (a sidecar's content) was written for the file at ``beton_path``.

    A sidecar without a fingerprint (written before ffmix stored one) passes unchecked."""
    stored = meta.beton_fingerprint
    if stored is None:
        return
    beton = Path(beton_path)
    problem = None
    try:
        size = os.path.getsize(beton)
        if size != stored["size"]:
            problem = f"the file is {size} bytes, the sidecar describes one of {stored['size']}"
        elif _hash_regions(beton, stored["regions"]) != stored["blake2b"]:
            problem = "its tables differ from those the sidecar describes"
    except (KeyError, TypeError, ValueError):
        problem = "the sidecar's fingerprint is malformed"
    if problem:
        raise FfmixError(f"{meta_path(beton)} does not belong to {beton} ({problem}): the pair comes from "
                         f"different conversions; re-run `ffmix convert` to write both again")


def read_meta(beton_path: os.PathLike) -> DatasetMeta:
    """Read the metadata of ``beton_path`` and check that it belongs to that file.

    Raises ``FileNotFoundError`` if the ``.beton`` or its sidecar is missing, ``ValueError`` if the sidecar
    is not valid ffmix metadata and ``FfmixError`` (a ``ValueError``) if it was written for another file;
    the messages say how to fix it.
    """
    beton = Path(beton_path)
    if beton.is_dir():
        raise FfmixError(f"{beton} is a folder, not a .beton file")
    if not beton.is_file():
        raise FileNotFoundError(f"no such .beton file: {beton}")
    sidecar = meta_path(beton)
    if not sidecar.is_file():
        # the command line has no option to read a plain FFCV file; make_loader's num_classes= does
        plain = "" if on_command_line() else ", or pass num_classes= to read a plain FFCV file"
        raise FileNotFoundError(
            f"{beton} has no ffmix metadata ({sidecar} is missing); write it with `ffmix convert`{plain}")
    try:
        raw = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FfmixError(f"{sidecar} is not valid ffmix metadata: {exc}") from None
    if not isinstance(raw, dict):
        raise FfmixError(f"{sidecar} is not valid ffmix metadata: expected a JSON object")
    meta = DatasetMeta.from_dict(raw)
    check_fingerprint(beton, meta)
    return meta
