"""Any map-style Python dataset (``len(dataset)``, ``dataset[i]``), e.g. a torchvision dataset or a Hugging Face
``datasets.Dataset``, without ffmix depending on either.

An item is ``(image, label, ...)`` or a mapping with ``image_key`` and ``label_key`` entries. The image may be a
PIL image, a uint8 array or tensor (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C 1 or 3), encoded bytes, or
a ``{"bytes": ..., "path": ...}`` mapping (a Hugging Face image column read with ``decode=False``). Encoded JPEG
bytes are offered to the pass-through and so may be stored as they are.

Labels are needed before anything is written (the sidecar's class counts, the check that each label has a name).
They are taken, in this order, from ``labels=``, from a torchvision-style ``targets`` list, from a Hugging Face
style column (``dataset[label_key]`` when ``label_key`` is in ``dataset.column_names``), or else from one pass
over the items. The writer processes are forked, so the dataset object is shared with them, never pickled.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..errors import FfmixError
from .base import BadSampleError, SourceDataset, as_image, check_class_names, check_labels
from .encoded import decode_bytes, jpeg_for_passthrough
from .imagefolder import pil_to_array


class PythonDatasetSource(SourceDataset):
    """``dataset`` (see the module docstring) as a ``SourceDataset``.

    Raises ``FfmixError`` for an empty dataset, an item of another shape, a bad label or class names that do
    not cover the labels. ``progress`` shows a bar while labels are read from the items."""

    name = "python"
    channels = None  # known only once every image is read

    def __init__(self, dataset, *, labels: Optional[Sequence[int]] = None,
                 class_names: Optional[Sequence[str]] = None, image_key: str = "image", label_key: str = "label",
                 source: Optional[str] = None, progress: bool = False):
        try:
            count = len(dataset)
        except TypeError:
            raise FfmixError(f"{type(dataset).__name__} has no len(); convert_dataset takes a map-style dataset "
                             "(__len__ and __getitem__), not an iterable") from None
        if count == 0:
            raise FfmixError(f"{type(dataset).__name__}: the dataset is empty, nothing to write")
        self.dataset = dataset
        self.image_key, self.label_key = image_key, label_key
        self.source = source or f"{type(dataset).__module__}.{type(dataset).__name__}"
        self._last: Tuple[int, Any] = (-1, None)  # the item fetched last: read_encoded then read ask for one
        self.labels = self._find_labels(labels, count, progress)
        self.class_names = check_class_names(class_names, self.labels, self.source)
        self._last = (-1, None)  # the label pass's items are not kept

    def _find_labels(self, labels, count: int, progress: bool) -> np.ndarray:
        where = self.source
        if labels is None:
            targets = getattr(self.dataset, "targets", None)
            if targets is not None and not callable(targets) and len(targets) == count:
                labels, where = targets, f"{self.source}.targets"
            elif self.label_key in (getattr(self.dataset, "column_names", None) or ()):
                labels, where = self.dataset[self.label_key], f"{self.source}[{self.label_key!r}]"
                if not isinstance(labels, (list, np.ndarray)):
                    labels = list(labels)  # a lazy column object (newer Hugging Face datasets)
        if labels is None:
            return self._labels_from_items(count, progress)
        values = check_labels(labels, where)
        if len(values) != count:
            raise FfmixError(f"{where}: {len(values)} labels for {count} items; give one label per item")
        return values

    def _labels_from_items(self, count: int, progress: bool) -> np.ndarray:
        """One pass over the items for their labels (a dataset with no ``targets`` or label column)."""
        from tqdm import tqdm

        labels = np.empty(count, np.int64)
        for index in tqdm(range(count), desc=f"reading labels of {self.source}", unit=" items",
                          disable=None if progress else True, dynamic_ncols=True, leave=False):
            label = self._split(self._item(index), index)[1]
            if isinstance(label, np.generic) or (hasattr(label, "item") and getattr(label, "ndim", 1) == 0):
                label = label.item()
            if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label < 0:
                raise FfmixError(f"{self.describe(index)}: the label is {label!r}; labels must be non-negative "
                                 "integer class indices")
            labels[index] = label
        return labels

    def _item(self, index: int):
        if self._last[0] == index:
            return self._last[1]
        try:
            item = self.dataset[index]
        except Exception as exc:  # a dataset's own failure to produce item `index`
            raise BadSampleError(self.describe(index), f"{type(exc).__name__}: {exc}") from None
        self._last = (index, item)
        return item

    def _split(self, item, index: int) -> Tuple[Any, Any]:
        """(image, label) of one item; raises ``FfmixError`` naming the item when it has another shape."""
        if isinstance(item, Mapping):
            missing = [key for key in (self.image_key, self.label_key) if key not in item]
            if missing:
                raise FfmixError(f"{self.describe(index)} has no {' or '.join(map(repr, missing))} entry (it has "
                                 f"{', '.join(map(repr, item))}); pass image_key= / label_key=")
            return item[self.image_key], item[self.label_key]
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], item[1]
        raise FfmixError(f"{self.describe(index)} is a {type(item).__name__}; an item must be (image, label) or a "
                         "mapping with image and label entries")

    def read_encoded(self, index: int) -> Optional[bytes]:
        image = self._split(self._item(index), index)[0]
        data = _encoded_bytes(image, self.describe(index))
        return None if data is None else jpeg_for_passthrough(data)

    def read(self, index: int) -> np.ndarray:
        image = self._split(self._item(index), index)[0]
        name = self.describe(index)
        data = _encoded_bytes(image, name)
        if data is not None:
            return decode_bytes(data, name)
        if hasattr(image, "getbands") and hasattr(image, "convert"):   # a PIL image
            try:
                return as_image(pil_to_array(image), name)
            except OSError as exc:
                raise BadSampleError(name, str(exc)) from None
        try:
            return as_image(_pixel_array(image, name), name)
        except FfmixError as exc:
            raise BadSampleError(name, str(exc)) from None

    def describe(self, index: int) -> str:
        return f"item {index} of {self.source}"


def _encoded_bytes(image, name: str) -> Optional[bytes]:
    """The encoded bytes an image value holds (bytes, a mapping's ``bytes`` entry, or else the file its ``path``
    entry names), else ``None``. Raises ``BadSampleError`` for a path that cannot be read."""
    if isinstance(image, Mapping):
        path = image.get("path")
        image = image.get("bytes")
        if image is None and path:
            try:
                with open(path, "rb") as stream:
                    return stream.read()
            except OSError as exc:
                raise BadSampleError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return None


def _pixel_array(image, name: str) -> np.ndarray:
    """An array or tensor as ``(H, W[, C])``: a torch tensor ``(C, H, W)`` (torch's layout) or an array whose
    last side is not a channel count but whose first is, is moved channels-last."""
    is_tensor = hasattr(image, "detach") and hasattr(image, "cpu")
    if is_tensor:
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise FfmixError(f"{name}: the image is a {type(image).__name__}; give a PIL image, a uint8 array or "
                         "tensor, or encoded bytes")
    if image.ndim == 3 and image.shape[0] in (1, 3) and (is_tensor or image.shape[2] not in (1, 3)):
        image = np.moveaxis(image, 0, -1)
    return image
