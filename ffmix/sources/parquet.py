"""Parquet shards as Hugging Face writes them: an ``image`` column of ``{bytes, path}`` structs (or plain binary)
and an integer ``label`` column; other names with ``image_column`` / ``label_column``.

Class names come from the ``huggingface`` schema metadata (``info.features.<label>.names``, a ``ClassLabel``)
when present, else from ``class_names``, else ``'0', '1', ...``. Needs ``pyarrow`` (``pip install
'ffmix[parquet]'``).

Everything but the image bytes is checked before writing: the schema, every label (no nulls, none negative,
each named), and every image cell's presence. The check reads the label column and the file's statistics, not
the images; only a row group whose statistics admit missing bytes has its bytes read, to find the rows that give
a ``path`` instead. Such a path is resolved against the parquet file's folder and must stay inside it (a
``../`` or absolute path elsewhere is refused, as is one real file named twice).

Images are read row group by row group, in the writer processes: each process holds the image column of one
row group at a time, so memory stays flat however large the dataset is.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import FfmixError
from .base import BadSampleError, SourceDataset, check_class_names, check_labels
from .encoded import decode_bytes, jpeg_for_passthrough
from .shards import list_shards

PARQUET_SUFFIXES = (".parquet", ".pq")


def import_parquet():
    """``pyarrow`` and ``pyarrow.parquet``, or an ``FfmixError`` naming the extra that installs them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FfmixError("reading parquet shards needs pyarrow: pip install 'ffmix[parquet]'") from None
    return pyarrow, pyarrow.parquet


class ParquetSource(SourceDataset):
    """The rows of the parquet shards ``source`` names (a file, a folder or a glob; see the module docstring).

    Raises ``FfmixError`` for a missing column, a column of another type, a null or negative label, a row with
    neither image bytes nor a usable path, class names that differ between shards or do not cover the labels."""

    name = "parquet"
    channels = None  # known only once every image is decoded

    def __init__(self, source, image_column: str = "image", label_column: str = "label",
                 class_names: Optional[Sequence[str]] = None, progress: bool = False):
        from tqdm import tqdm

        pyarrow, parquet = import_parquet()
        self.source = os.fspath(source)
        self.image_column, self.label_column = image_column, label_column
        self._shards = [str(path) for path in list_shards(self.source, PARQUET_SUFFIXES, "parquet")]
        self._is_struct = None                 # the image column's layout, the same in every shard
        group_starts, group_shard, group_number, shard_starts = [0], [], [], []
        labels: List[np.ndarray] = []
        self._path_rows: Dict[int, str] = {}   # sample index -> file, for rows that give a path but no bytes
        named_by: Optional[Tuple[List[str], str]] = None
        with tqdm(desc=f"checking {self.source}", unit=" row groups", disable=None if progress else True,
                  dynamic_ncols=True, leave=False) as bar:
            for shard_number, shard in enumerate(self._shards):
                shard_starts.append(group_starts[-1])
                file = self._open(parquet, shard)
                try:
                    names = self._check_layout(pyarrow, file.schema_arrow, shard)
                    if names is not None and named_by is not None and names != named_by[0]:
                        raise FfmixError(f"{shard} names its classes differently from {named_by[1]}; convert "
                                         "shards of one dataset together")
                    named_by = named_by or ((names, shard) if names is not None else None)
                    for number in range(file.num_row_groups):
                        first_row = group_starts[-1] - shard_starts[-1]
                        labels.append(self._group_labels(file, number, shard, first_row))
                        self._find_path_rows(file, number, shard, first_row, group_starts[-1])
                        group_starts.append(group_starts[-1] + file.metadata.row_group(number).num_rows)
                        group_shard.append(shard_number)
                        group_number.append(number)
                        bar.update(1)
                finally:
                    file.close()
        self.labels = check_labels(np.concatenate(labels) if labels else np.empty(0, np.int64), self.source)
        if len(self.labels) == 0:
            raise FfmixError(f"{self.source}: the parquet shards hold no rows")
        self._group_starts = np.asarray(group_starts, np.int64)
        self._group_shard = np.asarray(group_shard, np.int32)
        self._group_number = np.asarray(group_number, np.int32)
        self._shard_starts = np.asarray(shard_starts, np.int64)
        where = (named_by[1] + " (huggingface metadata)") if class_names is None and named_by else self.source
        self.class_names = check_class_names(class_names if class_names is not None else
                                             (named_by[0] if named_by else None), self.labels, where)
        self._refuse_repeated_paths()
        self._loaded: Tuple[int, int, object] = (-1, -1, None)   # (process id, row group, its image column)

    # -------------------------------------------------------------------------------------------- checking

    @staticmethod
    def _open(parquet, shard: str):
        try:
            return parquet.ParquetFile(shard)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise FfmixError(f"cannot read {shard} as parquet: {exc}") from None

    def _check_layout(self, pyarrow, schema, shard: str) -> Optional[List[str]]:
        """Check one shard's columns (the same layout as the shards before it); returns the class names its
        metadata declares, if any."""
        is_struct = self._image_is_struct(pyarrow, schema, shard)
        if self._is_struct is not None and is_struct != self._is_struct:
            raise FfmixError(f"{shard}: column {self.image_column!r} has another type than in {self._shards[0]}; "
                             "convert shards of one layout together")
        self._is_struct = is_struct
        return hf_class_names(schema.metadata, self.label_column)

    def _image_is_struct(self, pyarrow, schema, shard: str) -> bool:
        """Whether the image column is a ``{bytes, path}`` struct (else plain binary); raises for the rest."""
        types = pyarrow.types
        for column in (self.image_column, self.label_column):
            if schema.get_field_index(column) < 0:
                option = "--image-column" if column == self.image_column else "--label-column"
                raise FfmixError(f"{shard} has no column {column!r} (it has {', '.join(schema.names)}); pass "
                                 f"{option}")
        image_type = schema.field(self.image_column).type
        label_type = schema.field(self.label_column).type
        if not types.is_integer(label_type):
            raise FfmixError(f"{shard}: column {self.label_column!r} is {label_type}, not integer class indices; "
                             "pass --label-column")
        if types.is_binary(image_type) or types.is_large_binary(image_type):
            return False
        if types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0:
            return True
        raise FfmixError(f"{shard}: column {self.image_column!r} is {image_type}; expected encoded images "
                         "(binary, or a struct with 'bytes' and 'path' as Hugging Face writes); pass --image-column")

    def _group_labels(self, file, number: int, shard: str, first_row: int) -> np.ndarray:
        column = _read_columns(file, number, [self.label_column], shard).column(0)
        if column.null_count:
            missing = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise FfmixError(f"{shard} row {first_row + missing}: the label is missing (null); every row needs one")
        values = column.to_numpy().astype(np.int64, copy=False)
        if len(values) and values.min() < 0:
            bad = int(np.argmax(values < 0))
            raise FfmixError(f"{shard} row {first_row + bad}: label {values[bad]} is negative; labels are class "
                             "indices 0, 1, ...")
        return values

    def _find_path_rows(self, file, number: int, shard: str, first_row: int, first_index: int) -> None:
        """Record the rows of row group ``number`` that hold a path instead of bytes; refuse empty cells."""
        leaf = f"{self.image_column}.bytes" if self._is_struct else self.image_column
        chunk = file.metadata.row_group(number)
        statistics = next((chunk.column(k).statistics for k in range(chunk.num_columns)
                           if chunk.column(k).path_in_schema == leaf), None)
        if statistics is not None and statistics.has_null_count and statistics.null_count == 0:
            return  # every row has its bytes: nothing to read now
        columns = [leaf] + ([f"{self.image_column}.path"] if self._is_struct else [])
        table = _read_columns(file, number, columns, shard).column(0).combine_chunks()
        data = table.field("bytes") if self._is_struct else table
        paths = table.field("path") if self._is_struct and table.type.get_field_index("path") >= 0 else None
        folder = os.path.dirname(os.path.abspath(shard))
        for row in np.flatnonzero(data.is_null().to_numpy(zero_copy_only=False)).tolist():
            name = paths[row].as_py() if paths is not None and table[row].is_valid else None
            where = f"{shard} row {first_row + row}"
            if not name:
                raise FfmixError(f"{where}: the image has neither bytes nor a path")
            self._path_rows[first_index + row] = resolve_inside(name, folder, where)

    def _refuse_repeated_paths(self) -> None:
        seen: Dict[str, int] = {}
        for index, path in self._path_rows.items():
            if path in seen:
                raise FfmixError(f"{self.describe(seen[path])} and {self.describe(index)} both name {path}; a "
                                 "sample must appear once")
            seen[path] = index

    # ------------------------------------------------------------------------------------------ reading

    def _locate(self, index: int) -> Tuple[int, int]:
        group = int(np.searchsorted(self._group_starts, index, side="right")) - 1
        return group, index - int(self._group_starts[group])

    def _image_bytes(self, index: int) -> bytes:
        path = self._path_rows.get(index)
        if path is not None:
            try:
                with open(path, "rb") as stream:
                    return stream.read()
            except OSError as exc:
                raise BadSampleError(self.describe(index), f"cannot read {path}: {exc.strerror or exc}") from None
        group, row = self._locate(index)
        pid, loaded_group, column = self._loaded
        if pid != os.getpid() or loaded_group != group:
            column = None
            self._loaded = (-1, -1, None)  # release the last row group before reading the next
            try:
                column = self._read_group(group)
            except Exception as exc:  # a damaged page: pyarrow raises ArrowInvalid, OSError, ...
                raise BadSampleError(self.describe(index), f"cannot read its row group: {exc}") from None
            self._loaded = (os.getpid(), group, column)
        return column[row].as_py() or b""

    def _read_group(self, group: int):
        """The image bytes of one row group, as one pyarrow binary array."""
        _, parquet = import_parquet()
        shard = self._shards[int(self._group_shard[group])]
        leaf = f"{self.image_column}.bytes" if self._is_struct else self.image_column
        file = parquet.ParquetFile(shard)
        try:
            table = file.read_row_group(int(self._group_number[group]), columns=[leaf]).column(0).combine_chunks()
        finally:
            file.close()
        return table.field("bytes") if self._is_struct else table

    def read_encoded(self, index: int) -> Optional[bytes]:
        return jpeg_for_passthrough(self._image_bytes(index))

    def read(self, index: int) -> np.ndarray:
        return decode_bytes(self._image_bytes(index), self.describe(index))

    def describe(self, index: int) -> str:
        group = self._locate(index)[0]
        shard = int(self._group_shard[group])
        return f"{self._shards[shard]} row {index - int(self._shard_starts[shard])}"


def _read_columns(file, number: int, columns: List[str], shard: str):
    """``columns`` of row group ``number``; a damaged file raises ``FfmixError`` naming the shard and group."""
    try:
        return file.read_row_group(number, columns=columns)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise FfmixError(f"cannot read row group {number} of {shard}: {exc}".replace("\n", " ")) from None


def hf_class_names(metadata: Optional[dict], label_column: str) -> Optional[List[str]]:
    """The class names a Hugging Face ``ClassLabel`` column declares in the schema's ``huggingface`` metadata."""
    if not metadata or b"huggingface" not in metadata:
        return None
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        names = features[label_column]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


def resolve_inside(name: str, folder: str, where: str) -> str:
    """``name`` (relative to ``folder``, or absolute) as a real path inside ``folder``; raises ``FfmixError`` for a
    path that leads outside it (``..``, an absolute path elsewhere, a link out) or to no regular file."""
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, name))
    if os.path.commonpath([real, real_folder]) != real_folder:
        raise FfmixError(f"{where}: the image path {name!r} leads outside the parquet file's folder {folder}; "
                         "only images beside the parquet file (or below it) are read")
    if not os.path.isfile(real):
        raise FfmixError(f"{where}: the image path {name!r} ({real}) is not a file")
    return real
