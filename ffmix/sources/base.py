"""What every input format turns into: an indexed dataset of ``(H, W, 3) uint8`` images and integer labels.

A source knows its labels, class names and length up front (cheap: file lists, label arrays) and decodes
images only when asked, so the decoding runs in FFCV's writer processes, not in the main one.
"""
from __future__ import annotations

import numbers
import os
from array import array
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import FfmixError


class BadSampleError(FfmixError):
    """One sample could not be read (e.g. an image file that fails to decode); ``sample`` names it."""

    def __init__(self, sample: str, reason: str):
        super().__init__(f"cannot read {sample}: {reason}")
        self.sample = sample
        self.reason = reason


class SourceDataset:
    """An indexed dataset that ``ffmix.convert`` writes to a ``.beton``.

    Subclasses set ``labels`` (``(N,)`` int64, validated), ``class_names``, ``channels`` (1 for grayscale,
    3 for colour, ``None`` when only decoding tells, as for an image folder), ``name`` (the format),
    ``source`` (a path or description) and ``split``, and implement ``read(index)``.

    ``dataset[i]`` is ``(image, label)`` with ``image`` an ``(H, W, 3)`` uint8 array (grayscale repeated
    on the three channels, since FFCV's image field is RGB) and ``label`` a Python int.
    """

    name: str = "dataset"
    source: str = ""
    split: Optional[str] = None
    channels: Optional[int] = None
    labels: np.ndarray
    class_names: List[str]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> np.ndarray:
        """The image at ``index`` as stored: ``(H, W)`` uint8 for grayscale, ``(H, W, 3)`` for colour.

        Raises ``BadSampleError`` when that one sample cannot be read."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A name for sample ``index`` that a user can find (a file path, or the index in an array)."""
        return f"sample {index} of {self.source or self.name}"

    def max_image_bytes(self) -> Optional[int]:
        """The largest ``H * W * 3`` over all images when known without decoding, else ``None``."""
        return None

    def read_encoded(self, index: int) -> Optional[bytes]:
        """The bytes of sample ``index``'s file when it is a JPEG file (so it may be stored as it is), else
        ``None``. Raises ``BadSampleError`` when the file cannot be read."""
        return None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        return to_rgb(self.read(index)), int(self.labels[index])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8 -> C-contiguous ``(H, W, 3)`` uint8 (gray copied to each channel)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def as_image(array: np.ndarray, where: str) -> np.ndarray:
    """Check one image array and give it as ``(H, W)`` (grayscale) or ``(H, W, 3)`` uint8.

    Accepts ``(H, W)``, ``(H, W, 1)`` and ``(H, W, 3)`` uint8; raises ``FfmixError`` naming ``where`` otherwise.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise FfmixError(f"{where}: images must be uint8 (0-255), got dtype {array.dtype}; "
                         "scale and cast them with np.clip(x, 0, 255).astype(np.uint8)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise FfmixError(f"{where}: an image must be (H, W) grayscale or (H, W, 3) RGB, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise FfmixError(f"{where}: an image has an empty side (shape {array.shape})")
    if max(array.shape[:2]) > 65535:
        raise FfmixError(f"{where}: an image side is over 65535 px (shape {array.shape}), more than FFCV "
                         "stores; shrink it before converting")
    return array


def check_labels(labels: Union[np.ndarray, Sequence], where: str,
                 num_classes: Optional[int] = None) -> np.ndarray:
    """Validate labels and return them as ``(N,)`` int64.

    Labels must be non-negative integers (floats are accepted only when integral, e.g. 3.0), and below
    ``num_classes`` when it is given. Raises ``FfmixError`` naming ``where``, the first bad index and value.
    """
    if not isinstance(labels, np.ndarray):  # np.asarray([True, 2]) is [1, 2]: a bool must not pass as a class
        flagged = next((i for i, v in enumerate(labels) if isinstance(v, (bool, np.bool_))), None)
        if flagged is not None:
            raise FfmixError(f"{where}: labels must be integers; label {flagged} is {labels[flagged]!r}")
    try:
        values = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise FfmixError(f"{where}: labels are not a flat list of integers ({exc})") from None
    if values.dtype == object and all(isinstance(v, numbers.Integral) for v in values.ravel().tolist()):
        values = values.astype(np.int64)
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        else:
            raise FfmixError(f"{where}: labels must be one integer per sample, shape (N,), got shape {values.shape}")
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise FfmixError(f"{where}: labels must be integers, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        not_integral = ~np.isfinite(values) | (values != np.round(values))
        if not_integral.any():
            first = int(np.argmax(not_integral))
            raise FfmixError(f"{where}: labels must be integers; label {first} is {values[first]}")
    if values.size and values.min() < 0:
        first = int(np.argmax(values < 0))
        raise FfmixError(f"{where}: labels must be non-negative class indices; label {first} is {values[first]}")
    if values.size and values.max() > np.iinfo(np.int64).max:
        raise FfmixError(f"{where}: label {int(np.argmax(values))} is too large for int64")
    values = values.astype(np.int64)
    if num_classes is not None and values.size and values.max() >= num_classes:
        first = int(np.argmax(values >= num_classes))
        raise FfmixError(f"{where}: label {first} is {values[first]}, but there are only {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return values


# A class count the labels imply (largest label + 1) is trusted only within these bounds: beyond them one stray
# label (99999 among 20 images, or 2**40) would make a dataset of that many classes, whose names alone fill the
# memory and whose one-hot targets could not be built. A user who means it says so with num_classes.
MAX_CLASSES = 1 << 20            # even when stated: a float32 one-hot target row of this is 4 MiB per sample
UNSTATED_CLASS_LIMIT = 1000      # above this, more classes than samples needs num_classes


def class_count(labels: np.ndarray, where: str, num_classes: Optional[int] = None) -> int:
    """The number of classes of ``labels`` (``(N,)`` int64 from ``check_labels``): ``num_classes`` when given
    (every label must be below it), else the largest label + 1.

    Raises ``FfmixError`` before anything is allocated when the count is over ``MAX_CLASSES``, or when the
    labels imply more than ``UNSTATED_CLASS_LIMIT`` classes and more classes than samples without
    ``num_classes`` saying so (the sign of a stray label)."""
    from ..errors import option
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise FfmixError(f"{option('num_classes')} must be a positive integer, got {num_classes!r}")
        if num_classes > MAX_CLASSES:
            raise FfmixError(f"{option('num_classes', num_classes)} is more than ffmix handles ({MAX_CLASSES} "
                             "classes: a one-hot target row alone would take over 4 MiB per sample)")
        if len(labels) and int(labels.max()) >= num_classes:
            first = int(np.argmax(labels >= num_classes))
            raise FfmixError(f"{where}: label {first} is {labels[first]}, but "
                             f"{option('num_classes', num_classes)} allows 0..{num_classes - 1}; fix the label "
                             f"or raise {option('num_classes')}")
        return int(num_classes)
    if not len(labels):
        return 0
    largest = int(labels.max())
    implied = largest + 1
    first = int(np.argmax(labels))
    if implied > MAX_CLASSES:
        raise FfmixError(f"{where}: label {first} is {largest}, which would make {implied} classes, more than "
                         f"ffmix handles ({MAX_CLASSES}); fix the label")
    if implied > UNSTATED_CLASS_LIMIT and implied > len(labels):
        raise FfmixError(f"{where}: label {first} is {largest}, which would make {implied} classes for "
                         f"{len(labels)} samples; fix the label, or pass {option('num_classes', implied)} "
                         "if there really are that many classes")
    return implied


def index_class_names(labels: np.ndarray, where: str = "labels", num_classes: Optional[int] = None) -> List[str]:
    """Class names ``'0' .. str(count - 1)`` for sources that store none (the count from ``class_count``)."""
    return [str(k) for k in range(class_count(labels, where, num_classes))]


def check_class_names(class_names: Optional[Sequence[str]], labels: np.ndarray, where: str,
                      num_classes: Optional[int] = None) -> List[str]:
    """``class_names`` as a list of str covering every label, or index names when ``None``."""
    from ..errors import option
    if class_names is None:
        return index_class_names(labels, where, num_classes)
    if isinstance(class_names, (str, bytes)):  # a string is a sequence too: "abcd" would be four classes
        raise FfmixError(f"{where}: {option('class_names')} must be a list of names, one per class, got the "
                         f"string {class_names!r}")
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise FfmixError(f"{where}: class names must be unique, got {names}")
    if len(labels) and int(labels.max()) >= len(names):
        first = int(np.argmax(labels >= len(names)))
        raise FfmixError(f"{where}: label {first} is {labels[first]}, but only {len(names)} class names were given")
    if num_classes is not None and num_classes != len(names):
        raise FfmixError(f"{where}: {len(names)} class names but {option('num_classes', num_classes)}; "
                         "give one name per class")
    return names


class ArraySource(SourceDataset):
    """In-memory images: one ``(N, H, W[, 1|3])`` uint8 array, or a list of ``(H, W[, 3])`` arrays of any sizes.

    ``num_classes`` states the class count when ``class_names`` are not given and the labels alone do not
    show it (see ``class_count``). Raises ``FfmixError`` for wrong dtypes or shapes, mismatched lengths, bad
    labels or an empty dataset.
    """

    name = "arrays"

    def __init__(self, images, labels, class_names: Optional[Sequence[str]] = None, source: str = "arrays",
                 split: Optional[str] = None, name: str = "arrays", num_classes: Optional[int] = None):
        self.name = name
        self.source = source
        self.split = split
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise FfmixError(f"{source}: images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
            if len(images):
                as_image(images[0], source)  # dtype and per-image shape, checked once for the whole array
            if images.ndim == 4 and images.shape[3] == 1:
                images = images[:, :, :, 0]
            self._images = images
            self._stacked = True
        else:
            self._images = [as_image(image, f"{source}: image {i}") for i, image in enumerate(images)]
            self._stacked = False
        self.labels = check_labels(labels, source)
        if len(self._images) != len(self.labels):
            raise FfmixError(f"{source}: {len(self._images)} images but {len(self.labels)} labels; "
                             "there must be one label per image")
        if len(self.labels) == 0:
            raise FfmixError(f"{source}: the dataset is empty (0 images)")
        self.class_names = check_class_names(class_names, self.labels, source, num_classes)
        if self._stacked:
            self.channels = 1 if self._images.ndim == 3 else 3
        else:
            kinds = {image.ndim for image in self._images}
            self.channels = 1 if kinds == {2} else 3

    def read(self, index: int) -> np.ndarray:
        return self._images[index]

    def describe(self, index: int) -> str:
        return f"image {index} of {self.source}"

    def max_image_bytes(self) -> Optional[int]:
        if self._stacked:
            return int(self._images.shape[1] * self._images.shape[2] * 3)
        return max(int(image.shape[0] * image.shape[1] * 3) for image in self._images)


class PathList(Sequence):
    """Many file paths in one byte string plus an array of end offsets: about the paths' length plus 8 bytes
    each, where a list of ``Path`` objects costs some 200 bytes a file. Being two objects, it also stays shared
    with forked writer processes (a list of a million objects is copied page by page as its reference counts
    are touched). ``paths[i]`` is a ``Path``; ``paths.text(i)`` a ``str``."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")

    def append(self, path: Union[str, os.PathLike]) -> None:
        self._blob += os.fsencode(path)
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def text(self, index: int) -> str:
        if index < 0:
            index += len(self._ends)
        start = self._ends[index - 1] if index > 0 else 0
        return os.fsdecode(bytes(self._blob[start:self._ends[index]]))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Path(self.text(index))

    def __iter__(self) -> Iterator[Path]:
        return (self[i] for i in range(len(self)))
