"""A list of image files with their labels: ``LIST.csv`` (``path,label``) or tab-separated (``path<TAB>label``).

One image per row. Paths are relative to the folder of the list (absolute paths are taken as they are). Labels
are either all class indices (``0``, ``1``, ...) or all class names (``cat``, ``dog``): names are numbered in
sorted order, as image-folder classes are. An optional names file (one class name per line, line k naming
class k) gives index labels their names and fixes the numbering of name labels. A first row ``path,label``
(or ``filename,class``, ...) is a header and skipped, as are empty rows and rows starting with ``#``. CSV
quoting applies, so a path may hold a comma when quoted.

Every row is checked before anything is written: the file exists and has an image extension, the label is a
valid index or name, and no real file is listed twice (a duplicate row, or two paths linked to one file); an
error names the list, the line and the fix. This is the way ImageNet's validation set and many Kaggle sets come.
"""
from __future__ import annotations

import csv
import os
import re
import stat
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import FfmixError
from .base import PathList, check_class_names, index_class_names
from .imagefolder import IMAGE_EXTENSIONS, ImageFilesSource, _Identities

LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst")
HEADER_PATHS = {"path", "file", "filename", "file_name", "image", "img", "image_path", "filepath"}
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


def read_class_names_file(path: os.PathLike) -> List[str]:
    """One class name per line (surrounding spaces and empty lines dropped); raises ``FfmixError``."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise FfmixError(f"cannot read the class names file {path}: {exc.strerror or exc}") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise FfmixError(f"the class names file {path} is empty; put one class name per line")
    if len(set(names)) != len(names):
        seen = set()
        repeated = next(name for name in names if name in seen or seen.add(name))
        raise FfmixError(f"the class names file {path} names {repeated!r} twice; class names must be unique")
    return names


class FileListSource(ImageFilesSource):
    """The images listed in ``path`` (see the module docstring); ``class_names_file`` is optional.

    Raises ``FfmixError`` for a bad row (naming its line), an empty list or a bad names file. ``progress``
    shows a bar of the rows checked."""

    name = "filelist"

    def __init__(self, path: os.PathLike, class_names_file: Optional[os.PathLike] = None,
                 progress: bool = False, num_classes: Optional[int] = None):
        from array import array

        from tqdm import tqdm

        path = Path(path)
        base = path.parent
        names = read_class_names_file(class_names_file) if class_names_file is not None else None
        self.files = PathList()
        identities = _Identities()
        lines = array("q")                      # the list's line of each sample, for messages
        label_codes = array("q")                # index into label_texts
        label_texts: Dict[str, int] = {}
        first_line: Dict[str, int] = {}
        where = str(path)
        try:
            stream = open(path, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise FfmixError(f"cannot read the file list {path}: {exc.strerror or exc}") from None
        with stream, tqdm(desc=f"checking {path}", unit=" rows", disable=None if progress else True,
                          dynamic_ncols=True, leave=False) as bar:
            first = stream.readline()
            delimiter = "\t" if "\t" in first else ","
            stream.seek(0)
            for line_number, row in enumerate(csv.reader(stream, delimiter=delimiter), start=1):
                if line_number % 8192 == 0:
                    bar.update(8192)
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if len(row) != 2:
                    raise FfmixError(f"{where}, line {line_number}: expected 2 fields, path{delimiter!r}label, "
                                     f"got {len(row)}: {delimiter.join(row)!r}")
                file_text, label = row[0].strip(), row[1].strip()
                if not len(self.files) and not _INTEGER.match(label) and file_text.lower() in HEADER_PATHS:
                    continue                    # a header row
                if not file_text or not label:
                    raise FfmixError(f"{where}, line {line_number}: empty {'path' if not file_text else 'label'}")
                full = file_text if os.path.isabs(file_text) else os.path.join(base, file_text)
                if not file_text.lower().endswith(IMAGE_EXTENSIONS):
                    raise FfmixError(f"{where}, line {line_number}: {file_text} is not an image file (expected "
                                     f"one of {', '.join(IMAGE_EXTENSIONS)})")
                try:
                    status = os.stat(full)
                except FileNotFoundError:
                    raise FfmixError(f"{where}, line {line_number}: {full} does not exist; fix the path (paths "
                                     f"are relative to the list's folder, {base})") from None
                except OSError as exc:
                    raise FfmixError(f"{where}, line {line_number}: cannot read {full}: "
                                     f"{exc.strerror or exc}") from None
                if not stat.S_ISREG(status.st_mode):
                    raise FfmixError(f"{where}, line {line_number}: {full} is not a file")
                code = label_texts.get(label)
                if code is None:
                    code = label_texts[label] = len(label_texts)
                    first_line[label] = line_number
                self.files.append(full)
                identities.add(status.st_dev, status.st_ino)
                lines.append(line_number)
                label_codes.append(code)
        if not len(self.files):
            raise FfmixError(f"{where} lists no images; write one 'path,label' row per image")
        self._lines = lines
        self.labels, self.class_names = self._resolve_labels(label_texts, first_line, label_codes, names, where,
                                                             num_classes)
        self.source = where
        self._refuse_duplicates(*identities.arrays(), where=where)

    @staticmethod
    def _resolve_labels(label_texts: Dict[str, int], first_line: Dict[str, int], codes, names, where: str,
                        num_classes: Optional[int] = None):
        texts = list(label_texts)               # in code order
        numeric = [bool(_INTEGER.match(text)) for text in texts]
        codes = np.frombuffer(codes, np.int64)
        if all(numeric):
            values = np.array([int(text) for text in texts], dtype=np.int64)
            if values.min() < 0:
                text = texts[int(np.argmin(values))]
                raise FfmixError(f"{where}, line {first_line[text]}: label {text} is negative; labels are class "
                                 "indices 0, 1, ... or class names")
            labels = values[codes]
            if names is not None and int(values.max()) >= len(names):
                text = texts[int(np.argmax(values))]
                raise FfmixError(f"{where}, line {first_line[text]}: label {text}, but the class names file has "
                                 f"only {len(names)} names (classes 0..{len(names) - 1})")
            return labels, (check_class_names(names, labels, where) if names
                             else index_class_names(labels, where, num_classes))
        if any(numeric):
            number = texts[numeric.index(True)]
            word = texts[numeric.index(False)]
            raise FfmixError(f"{where}: line {first_line[number]} has the class index {number} but line "
                             f"{first_line[word]} the class name {word!r}; use indices or names throughout")
        if names is None:
            names = sorted(texts)
        position = {name: k for k, name in enumerate(names)}
        unknown = [text for text in texts if text not in position]
        if unknown:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise FfmixError(f"{where}, line {first_line[unknown[0]]}: class {unknown[0]!r} is not in the class "
                             f"names file ({shown}); add it there or fix the label")
        mapping = np.array([position[text] for text in texts], dtype=np.int64)
        return mapping[codes], list(names)

    def describe(self, index: int) -> str:
        return f"{self.files.text(index)} (line {self._lines[index]} of {self.source})"
