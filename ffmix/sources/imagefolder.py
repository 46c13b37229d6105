"""A ``root/class_name/.../image.ext`` tree, as torchvision's ``ImageFolder`` reads it.

Class index = position of the class folder in the sorted list of folder names (torchvision's rule); hidden
folders such as ``.ipynb_checkpoints`` are not classes. Files are taken recursively, in sorted order (a folder's
files, then its subfolders), by extension (case-insensitive); other files are ignored. Images are decoded with
Pillow when written, in FFCV's writer processes: grayscale stays one channel (the converter records it),
everything else becomes RGB (alpha dropped, as torchvision's loader does).

Links never make a sample appear twice: a folder reached again through a symbolic link (the same real folder,
including a link back to a folder above it, a cycle) is skipped with an ``FfmixWarning`` naming both paths, and
the same real file reached under two names (a file symlink or hard link) is refused with an ``FfmixError``,
since it would be a duplicate and possibly under two labels.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import FfmixError, FfmixWarning, option
from .base import BadSampleError, PathList, SourceDataset, as_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


def decode_image(path, name: Optional[str] = None) -> np.ndarray:
    """Decode one image file (a path, or an open binary stream with ``name`` saying where it came from):
    ``(H, W)`` uint8 for grayscale modes, else ``(H, W, 3)`` uint8.

    16-bit and float grayscale is brought to 0-255. Pillow's pixel limit applies (a header claiming more than
    twice ``PIL.Image.MAX_IMAGE_PIXELS`` is refused). Raises ``BadSampleError`` naming the file on failure."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-transparency notes; not the user's concern here
            with Image.open(path) as image:
                image.load()
                return pil_to_array(image)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = str(exc) or type(exc).__name__
        raise BadSampleError(name or str(path), reason) from None


def pil_to_array(image) -> np.ndarray:
    """A loaded PIL image as ``(H, W)`` uint8 (grayscale modes) or ``(H, W, 3)`` uint8 (the rest, alpha dropped)."""
    if image.mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"))
    if image.mode in GRAY_MODES:  # 16-bit or 32-bit integer / float grayscale
        values = np.asarray(image)
        if values.dtype.kind == "f":
            return np.clip(np.rint(values), 0, 255).astype(np.uint8)
        # 16-bit modes -> 0-255; mode I (32-bit) is scaled only if it uses more than 8 bits
        sixteen = image.mode.startswith("I;16") or values.max(initial=0) > 255
        scale = 257.0 if sixteen else 1.0
        return np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


class ImageFilesSource(SourceDataset):
    """Images that are files (an image folder, a file list): ``files`` (a ``PathList``) and ``labels``.

    Subclasses fill ``files``/``labels`` and call ``_refuse_duplicates`` with each file's identity."""

    channels = None  # known only after decoding every image
    files: PathList

    def read(self, index: int) -> np.ndarray:
        path = self.files.text(index)
        image = decode_image(Path(path))
        try:
            return as_image(image, path)
        except FfmixError as exc:
            raise BadSampleError(path, str(exc)) from None

    def read_encoded(self, index: int) -> Optional[bytes]:
        path = self.files.text(index)
        if not path.lower().endswith(JPEG_EXTENSIONS):
            return None
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except OSError as exc:
            raise BadSampleError(path, exc.strerror or str(exc)) from None

    def describe(self, index: int) -> str:
        return self.files.text(index)

    def _refuse_duplicates(self, devices: np.ndarray, inodes: np.ndarray, where: str) -> None:
        """Raise ``FfmixError`` naming the first two paths that are one real file (same device and inode)."""
        if len(inodes) < 2:
            return
        order = np.lexsort((inodes, devices))
        same = (devices[order][1:] == devices[order][:-1]) & (inodes[order][1:] == inodes[order][:-1])
        same &= devices[order][1:] >= 0  # -1: a link that leads nowhere, identity unknown
        if same.any():
            first = int(np.argmax(same))
            a, b = sorted((int(order[first]), int(order[first + 1])))
            raise FfmixError(f"{where}: {self.describe(a)} and {self.describe(b)} are the same file (linked "
                             "twice); a sample must appear once: remove one of the two")


class _Identities:
    """(device number, inode) of each listed file, in two compact arrays."""

    def __init__(self) -> None:
        from array import array
        self.devices = array("q")
        self.inodes = array("Q")

    def add(self, device: int, inode: int) -> None:
        self.devices.append(device)
        self.inodes.append(inode)

    def add_unknown(self) -> None:
        self.devices.append(-1)
        self.inodes.append(len(self.inodes))

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.devices, np.int64), np.frombuffer(self.inodes, np.uint64)


class ImageFolderSource(ImageFilesSource):
    """The images of ``root`` (or of ``root/train``, ``root/test`` / ``root/val`` with ``split``).

    Raises ``FfmixError`` when there are no class folders, a class folder holds no images or one real file
    is listed twice; warns (``FfmixWarning``) for each linked folder it does not follow again. ``progress``
    shows a bar of the files found while listing."""

    name = "imagefolder"

    def __init__(self, root: Path, split: Optional[str] = None, progress: bool = False):
        root = Path(root)
        if split is not None:
            root = self._split_folder(root, split)
        try:
            with os.scandir(root) as listing:
                class_names = sorted(entry.name for entry in listing
                                     if entry.is_dir() and not entry.name.startswith("."))
        except OSError as exc:
            raise FfmixError(f"cannot list {root}: {exc.strerror or exc}") from None
        if not class_names:
            raise FfmixError(f"{root} has no class folders; an image folder source is root/class_name/image.jpg")
        if split is None and set(class_names) <= SPLIT_NAMES:  # train/ and val/ are splits, not 2 classes
            raise FfmixError(f"{root} holds split folders ({', '.join(class_names)}), not class folders; "
                             "pass --split train or --split test")
        from tqdm import tqdm

        self.files = PathList()
        identities = _Identities()
        labels = np.empty(0, np.int64)
        counts: List[int] = []
        # The root and every class folder are claimed first, so a link inside one class to another class's
        # folder is skipped there (not read under the wrong label, leaving the real class empty).
        visited: Dict[Tuple[int, int], str] = {}
        root_stat = os.stat(root)
        root_identity = (root_stat.st_dev, root_stat.st_ino)
        for folder in [str(root)] + [os.path.join(root, name) for name in class_names]:
            folder_stat = os.stat(folder)
            visited.setdefault((folder_stat.st_dev, folder_stat.st_ino), folder)
        with tqdm(desc=f"listing {root}", unit=" files", disable=None if progress else True,
                  dynamic_ncols=True, leave=False) as bar:
            for class_name in class_names:
                folder = os.path.join(root, class_name)
                before = len(self.files)
                skipped_as = self._walk(folder, visited, {root_identity}, identities, bar)
                if len(self.files) == before:
                    why = f" (it is the folder {skipped_as}, already read)" if skipped_as else (
                        f" (looked for {', '.join(IMAGE_EXTENSIONS)})")
                    raise FfmixError(f"class folder {folder} holds no images{why}; add images or remove the "
                                     "folder")
                counts.append(len(self.files) - before)
        self.labels = np.repeat(np.arange(len(class_names), dtype=np.int64), counts) if counts else labels
        self.class_names = class_names
        self.source = str(root)
        self.split = split
        self._refuse_duplicates(*identities.arrays(), where=str(root))

    def _walk(self, folder: str, visited: Dict[Tuple[int, int], str], ancestors: set,
              identities: _Identities, bar) -> Optional[str]:
        """Append the images under ``folder``; returns the earlier path when ``folder`` was read already.

        One ``scandir`` per folder and no system call per regular file: the file types and inode numbers come
        with the directory listing; only links are followed with ``stat``."""
        try:
            folder_stat = os.stat(folder)
        except OSError as exc:
            raise FfmixError(f"cannot list {folder}: {exc.strerror or exc}") from None
        identity = (folder_stat.st_dev, folder_stat.st_ino)
        if identity in visited and visited[identity] != folder:
            earlier = visited[identity]
            kind = "a symbolic-link cycle" if identity in ancestors else "a link to a folder already read"
            warnings.warn(f"{folder} is {kind} ({earlier}); not reading it again", FfmixWarning, stacklevel=2)
            return earlier
        visited[identity] = folder
        ancestors = ancestors | {identity}
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise FfmixError(f"cannot list {folder}: {exc.strerror or exc}") from None
        subfolders = []
        found = 0
        device = folder_stat.st_dev
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            if is_folder:
                subfolders.append(entry.path)
            elif name.lower().endswith(IMAGE_EXTENSIONS):
                self.files.append(entry.path)
                found += 1
                if entry.is_symlink():
                    try:
                        target = entry.stat()
                        identities.add(target.st_dev, target.st_ino)
                    except OSError:  # a link to nothing: reported as unreadable when decoded
                        identities.add_unknown()
                else:
                    identities.add(device, entry.inode())
        bar.update(found)
        for subfolder in subfolders:
            self._walk(subfolder, visited, ancestors, identities, bar)
        return None

    @staticmethod
    def _split_folder(root: Path, split: str) -> Path:
        for name in SPLIT_FOLDERS.get(split, ()):
            if (root / name).is_dir():
                return root / name
        wanted = " or ".join(f"{name}/" for name in SPLIT_FOLDERS.get(split, (split,)))
        raise FfmixError(f"{option('split', split)}: {root} has no {wanted} subfolder; drop --split to use {root} "
                         "itself as the class folder root")
