"""``ffmix inspect --verify``: decode every image of a ``.beton`` and list the ones the loader would refuse.

The checks are the loader's (``ops/decode_kernels.py``), with the same reasons: a JPEG whose header does
not give the height and width the file's table records, a JPEG libjpeg-turbo reports an error or a warning
for (FFCV's own ``imdecode``), a raw image whose byte count does not match its size. JPEGs are decoded at
1/8 scale: libjpeg-turbo still reads every marker and entropy-decodes every block, which is where damage
shows, and skips most of the rest (about 4x faster than a full decode).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from .errors import FfmixError
from .metadata import IMAGE_FIELD, LABEL_FIELD
from .system import available_cpus

CHUNK = 256   # samples per task: few enough tasks to keep the progress bar cheap, enough to share the work


@dataclass(frozen=True)
class BadSample:
    index: int
    label: int
    reason: str

    def as_dict(self) -> Dict:
        return {"index": self.index, "label": self.label, "reason": self.reason}


def verify_beton(path: os.PathLike, *, workers: int = 0, progress: bool = True) -> List[BadSample]:
    """Every sample of ``path`` the loader could not decode, in index order (empty: all decode).

    workers: threads (0: the cores available); libjpeg-turbo runs without the GIL. Raises FfmixError if
    ``path`` is not a .beton with an image field."""
    from ffcv.libffcv import imdecode
    from tqdm import tqdm

    from .ffcv_compat import block_sizes, field_kinds, field_table, image_modes, open_reader
    from .ops.decode_kernels import DECODE_FAILED, HEADER_MISMATCH, RAW_SIZE, STATUS_TEXT, jpeg_header_size

    path = Path(path)
    reader = open_reader(path)
    kinds = field_kinds(reader)
    image_name = IMAGE_FIELD if kinds.get(IMAGE_FIELD) == "RGBImageField" else next(
        (name for name, kind in kinds.items() if kind == "RGBImageField"), None)
    if image_name is None:
        raise FfmixError(f"{path} has no image field (fields: {kinds}); nothing to verify")
    table = field_table(reader, image_name)
    labels = field_table(reader, LABEL_FIELD) if kinds.get(LABEL_FIELD) == "IntField" else None
    sizes = block_sizes(reader, table["data_ptr"])
    pages = np.memmap(path, np.uint8, mode="r")
    jpeg = image_modes()["jpg"]

    def check(index: int) -> int:
        row = table[index]
        height, width, pointer = int(row["height"]), int(row["width"]), int(row["data_ptr"])
        size = int(sizes[index])
        data = np.ascontiguousarray(pages[pointer:pointer + size])
        if int(row["mode"]) != jpeg:
            return 0 if size == height * width * 3 else RAW_SIZE
        if jpeg_header_size(data) != (height, width):
            return HEADER_MISMATCH
        scaled = np.empty(((height + 7) // 8, (width + 7) // 8, 3), np.uint8)
        status = imdecode(data, scaled, height, width, height, width, 0, 0, 1, 8, False, False)
        return 0 if status == 0 else DECODE_FAILED

    def check_chunk(start: int) -> List[BadSample]:
        found = []
        for index in range(start, min(start + CHUNK, len(table))):
            status = check(index)
            if status:
                label = int(labels[index]) if labels is not None else -1
                found.append(BadSample(index, label, STATUS_TEXT[status]))
        return found

    bad: List[BadSample] = []
    starts = range(0, len(table), CHUNK)
    with ThreadPoolExecutor(workers or available_cpus()) as pool, \
            tqdm(total=len(table), desc=f"verifying {path.name}", unit="image", disable=not progress) as bar:
        for start, found in zip(starts, pool.map(check_chunk, starts)):
            bad += found
            bar.update(min(CHUNK, len(table) - start))
    return bad


def format_bad(path, bad: List[BadSample], total: int, limit: int = 50) -> str:
    """The lines ``ffmix inspect --verify`` prints."""
    if not bad:
        return f"verified   all {total} images of {path} decode"
    lines = [f"verified   {len(bad)} of {total} images of {path} cannot be decoded:",
             f"  {'index':>8}  {'label':>5}  reason"]
    lines += [f"  {b.index:>8}  {b.label:>5}  {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... {len(bad) - limit} more (see --json)")
    lines.append("  re-create the file with `ffmix convert` from its source, or train with "
                 "on_decode_error='skip' (`ffmix train --on-decode-error skip`)")
    return "\n".join(lines)
