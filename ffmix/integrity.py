"""Is a ``.beton`` whole? The one check that the loader and ``ffmix inspect`` both run before trusting a file.

FFCV's Reader parses a cut-off file without complaint: its tables come from the start of the file, and a
missing tail only shows when a sample's bytes are read (garbage, or a crash in compiled code). So the file is
checked against its own tables first, before the sidecar is consulted: a damaged ``.beton`` is reported as
damaged, not as a sidecar "from another conversion".
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import FfmixError


def open_whole_beton(path: os.PathLike):
    """FFCV's Reader of ``path`` after checking the file is whole: FFCV can parse it, its per-sample table holds
    every sample, the allocation table's blocks lie inside the file, and every sample's data starts at one of
    those blocks. Raises ``FfmixError`` naming the file and the damage, ``FileNotFoundError`` if it is missing."""
    from .ffcv_compat import data_extent, open_reader, page_pointers

    path = Path(path)
    if path.is_dir():
        raise FfmixError(f"{path} is a folder, not a .beton file")
    if not path.exists():
        raise FileNotFoundError(f"no such .beton file: {path}")
    reader = open_reader(path)  # also checks the per-sample table's length
    size = path.stat().st_size
    extent = data_extent(reader)
    if extent > size:
        raise FfmixError(f"{path} is truncated: its tables describe {extent} bytes but the file has {size}; "
                         "re-create it with `ffmix convert`")
    starts = page_pointers(reader)
    for name, column in _data_pointer_columns(reader):
        outside = ~np.isin(column, starts)
        if outside.any():
            raise FfmixError(f"{path} is truncated or corrupt: field '{name}' of sample {int(np.argmax(outside))} "
                             f"(and {int(outside.sum()) - 1} more) points outside the file's data blocks (the "
                             "allocation table is missing or damaged); re-create it with `ffmix convert`")
    return reader


def _data_pointer_columns(reader):
    """``(field name, data_ptr column)`` of every field that stores its bytes in the data pages."""
    from .ffcv_compat import field_table

    for name in reader.field_names:
        table = field_table(reader, name)
        if table.dtype.names and "data_ptr" in table.dtype.names:
            yield name, table["data_ptr"]
