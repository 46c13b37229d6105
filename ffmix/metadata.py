"""The metadata ffmix stores beside every ``.beton`` it writes.

FFCV files carry per-sample fields only, so dataset-level facts (class names, image mode, how the file
was written) live in a small JSON sidecar, ``OUT.beton.json``. The loader reads it so it never guesses the
number of classes or the channel count.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import FfmixError

FORMAT_VERSION = 1
IMAGE_FIELD = "image"   # FFCV's own naming, so plain FFCV pipelines read ffmix files
LABEL_FIELD = "label"


@dataclass
class DatasetMeta:
    """Dataset-level facts about one ``.beton`` file.

    ``image_shape`` is ``(H, W)`` when every image has the same size, else ``None``; ``channels`` is 1 for a
    grayscale source (stored as 3 identical channels, since FFCV's image field is RGB) and 3 for colour.
    ``label_counts[k]`` is the number of samples of class ``k``.
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
    """Write the sidecar of ``beton_path`` atomically (temporary file, then rename); returns its path."""
    target = meta_path(beton_path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(meta.to_json())
    os.replace(tmp, target)
    return target


def read_meta(beton_path: os.PathLike) -> DatasetMeta:
    """Read the metadata of ``beton_path``.

    Raises ``FileNotFoundError`` if the ``.beton`` or its sidecar is missing and ``ValueError`` if the sidecar
    is not valid ffmix metadata; both messages say how to fix it.
    """
    beton = Path(beton_path)
    if not beton.is_file():
        raise FileNotFoundError(f"no such .beton file: {beton}")
    sidecar = meta_path(beton)
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{beton} has no ffmix metadata ({sidecar} is missing); write it with `ffmix convert`, "
            "or pass num_classes= to read a plain FFCV file")
    try:
        raw = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FfmixError(f"{sidecar} is not valid ffmix metadata: {exc}") from None
    if not isinstance(raw, dict):
        raise FfmixError(f"{sidecar} is not valid ffmix metadata: expected a JSON object")
    return DatasetMeta.from_dict(raw)
