"""WebDataset tar shards: ``KEY.jpg`` + ``KEY.cls`` (or ``KEY.json``) members, consecutive in uncompressed
``.tar`` files named by one path, a folder, a glob or a brace range (``train-{000000..000099}.tar``).

A member's key is its name up to the first dot of its last path part, the rest its extension (WebDataset's
rule); the members of one sample are consecutive. The image is the ``jpg``, ``jpeg``, ``png`` or ``webp``
member (the first of these that the sample has, in this order); the label is the integer in ``cls``, or the
field ``json_label`` of the ``json`` member.

Each shard is read once with the standard library's ``tarfile`` before anything is written: only the headers
and the small label members are read, the image members are skipped over, their offsets kept. Refused, naming
the shard and member or key: a link, device, FIFO or sparse member; an absolute or ``..`` name; a member without
extension; an extension twice in one sample; a key met again (in the same or another shard); a sample without an
image or a label; a shard cut off (no end-of-archive block where the members end); a compressed shard (seeking into it would decompress it again and again: ``gunzip`` it first).
The writer processes then read each image's bytes at its offset (``os.pread``), so a shard is never unpacked.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import tarfile
from array import array
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import FfmixError
from ..system import available_cpus
from .base import BadSampleError, PathList, SourceDataset, check_class_names, check_labels
from .encoded import decode_bytes, jpeg_for_passthrough
from .shards import list_shards

TAR_SUFFIXES = (".tar",)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PARALLEL_SCAN_BYTES = 1 << 30   # ~10,000 ImageNet-sized JPEGs: a serial scan of over a second
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7": "xz", b"\x28\xb5": "zstd"}


class WebDatasetSource(SourceDataset):
    """The samples of the tar shards ``source`` names (see the module docstring). ``class_names`` names the
    label indices (default ``'0', '1', ...``); ``json_label`` takes labels from a ``json`` member's field."""

    name = "webdataset"
    channels = None  # known only once every image is decoded

    def __init__(self, source, class_names: Optional[Sequence[str]] = None, json_label: Optional[str] = None,
                 progress: bool = False):
        from tqdm import tqdm

        self.source = os.fspath(source)
        self.json_label = json_label
        self._shards = [str(path) for path in list_shards(self.source, TAR_SUFFIXES, "tar")]
        self._keys = PathList()
        self._shard_of, self._offsets, self._sizes = array("i"), array("q"), array("q")
        labels = array("q")
        first_shard: Dict[str, int] = {}   # key -> shard it was met in: a key met again is a duplicate
        with tqdm(desc=f"checking {self.source}", unit=" samples", disable=None if progress else True,
                  dynamic_ncols=True, leave=False) as bar:
            for shard_number, scanned in enumerate(scan_shards(self._shards, json_label)):
                shard = self._shards[shard_number]
                for key in scanned.keys:
                    if key in first_shard:
                        raise FfmixError(f"{shard}: key {key!r} appears twice (also in "
                                         f"{self._shards[first_shard[key]]}); a sample must appear once")
                    first_shard[key] = shard_number
                    self._keys.append(key)
                self._shard_of.extend([shard_number] * len(scanned.keys))
                self._offsets.extend(scanned.offsets)
                self._sizes.extend(scanned.sizes)
                labels.extend(scanned.labels)
                bar.update(len(scanned.keys))
        if not len(labels):
            raise FfmixError(f"{self.source}: the shards hold no samples (KEY.jpg + KEY.cls members)")
        self.labels = check_labels(np.frombuffer(labels, np.int64), self.source)
        self.class_names = check_class_names(class_names, self.labels, self.source)
        self._files: Dict[int, int] = {}   # shard -> file descriptor, opened in the process that reads
        self._files_pid = -1

    # ------------------------------------------------------------------------------------------ reading

    def __del__(self) -> None:
        if getattr(self, "_files_pid", -1) == os.getpid():
            for descriptor in self._files.values():
                os.close(descriptor)

    def _image_bytes(self, index: int) -> bytes:
        if self._files_pid != os.getpid():   # descriptors are not shared with forked writer processes
            self._files, self._files_pid = {}, os.getpid()
        shard = self._shard_of[index]
        descriptor = self._files.get(shard)
        try:
            if descriptor is None:
                descriptor = self._files[shard] = os.open(self._shards[shard], os.O_RDONLY)
            data = os.pread(descriptor, self._sizes[index], self._offsets[index])
        except OSError as exc:
            raise BadSampleError(self.describe(index), exc.strerror or str(exc)) from None
        if len(data) != self._sizes[index]:
            raise BadSampleError(self.describe(index), "the shard ends inside this image (cut off?)")
        return data

    def read_encoded(self, index: int) -> Optional[bytes]:
        return jpeg_for_passthrough(self._image_bytes(index))

    def read(self, index: int) -> np.ndarray:
        return decode_bytes(self._image_bytes(index), self.describe(index))

    def describe(self, index: int) -> str:
        return f"{self._shards[self._shard_of[index]]} key {self._keys.text(index)!r}"


@dataclass
class ShardIndex:
    """What the scan of one shard found: each sample's key, its image's offset and size, and its label."""
    keys: List[str] = field(default_factory=list)
    offsets: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    labels: array = field(default_factory=lambda: array("q"))


def scan_shard(shard: str, json_label: Optional[str] = None) -> ShardIndex:
    """Read the headers and label members of one shard; raises ``FfmixError`` for what it refuses."""
    found = ShardIndex()
    for key, image, label in _samples(shard, json_label):
        found.keys.append(key)
        found.offsets.append(image.offset_data)
        found.sizes.append(image.size)
        found.labels.append(label)
    return found


def scan_shards(shards: List[str], json_label: Optional[str]) -> Iterator[ShardIndex]:
    """``scan_shard`` of each shard, in order; several at once in forked processes when there are several
    shards and cores and over ``PARALLEL_SCAN_BYTES`` of them. Parsing tar headers in Python costs some 70 us a
    member (minutes for ImageNet's 2.5 million), but starting the processes costs about half a second, more than
    the scan of a few thousand samples (measured with ``python -m ffmix.bench.convert_sources``)."""
    processes = min(len(shards), available_cpus())
    if processes < 2 or sum(os.path.getsize(shard) for shard in shards) < PARALLEL_SCAN_BYTES:
        yield from (scan_shard(shard, json_label) for shard in shards)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:   # an FfmixError in a process is raised here, in shard order
        yield from pool.imap(functools.partial(scan_shard, json_label=json_label), shards)


def _samples(shard: str, json_label: Optional[str]):
    """``(key, image member, label)`` of each sample of ``shard``, in order."""
    with open(shard, "rb") as stream:
        magic = stream.read(2)
    if magic in COMPRESSED_MAGIC:
        raise FfmixError(f"{shard} is {COMPRESSED_MAGIC[magic]}-compressed; unpack it to a plain .tar first "
                         "(e.g. gunzip), so images can be read at their offsets")
    try:
        with tarfile.open(shard, mode="r:") as tar:
            key, members = None, {}
            for member in tar:
                name = member.name
                if member.isdir():
                    continue
                _check_member(member, shard)
                member_key, extension = split_name(name, shard)
                if member_key != key:
                    if key is not None:
                        yield _sample(tar, shard, key, members, json_label)
                    key, members = member_key, {}
                if extension in members:
                    raise FfmixError(f"{shard}: member {name} appears twice in sample {key!r}")
                members[extension] = member
            _check_end(tar, shard)
            if key is not None:
                yield _sample(tar, shard, key, members, json_label)
    except tarfile.TarError as exc:
        raise FfmixError(f"cannot read {shard} as a tar file: {exc}") from None


def _check_end(tar: tarfile.TarFile, shard: str) -> None:
    """Refuse a shard cut off at or inside a member header: ``tarfile`` takes that for the end of the archive
    and would drop the rest silently. A complete archive ends with a zero block where its iteration stopped."""
    block = os.pread(tar.fileobj.fileno(), 512, tar.offset)
    if len(block) < 512 or block.count(0) != 512:
        last = tar.members[-1].name if tar.members else "the start"
        raise FfmixError(f"{shard} ends without tar's end-of-archive block after {last}: the file is cut off or "
                         "damaged; copy the shard again")


def _sample(tar, shard: str, key: str, members: Dict[str, tarfile.TarInfo], json_label: Optional[str]):
    image = next((members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None)
    if image is None:
        raise FfmixError(f"{shard}: sample {key!r} has no image (members: {', '.join(sorted(members))}; "
                         f"expected one of {', '.join(IMAGE_EXTENSIONS)})")
    return key, image, _label(tar, shard, key, members, json_label)


def _label(tar, shard: str, key: str, members: Dict[str, tarfile.TarInfo], json_label: Optional[str]) -> int:
    wanted = "json" if json_label else "cls"
    member = members.get(wanted)
    if member is None:
        raise FfmixError(f"{shard}: sample {key!r} has no label (no {key}.{wanted} member)")
    # pread at the member's offset: tarfile's extractfile builds two file objects per call, a third of the scan
    data = os.pread(tar.fileobj.fileno(), min(member.size, 1 << 20), member.offset_data)
    text = data.decode("utf-8", errors="replace").strip()
    if json_label:
        try:
            value = json.loads(text)[json_label]
        except (ValueError, KeyError, TypeError):
            raise FfmixError(f"{shard}: {member.name} has no field {json_label!r} (or is not a JSON "
                             "object); pass the field that holds the class index") from None
    else:
        value = text
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = -1
    if isinstance(value, bool) or label < 0 or (isinstance(value, float) and value != label):
        raise FfmixError(f"{shard}: {member.name} holds {value!r}, not a non-negative class index")
    return label


def _check_member(member: tarfile.TarInfo, shard: str) -> None:
    """Refuse what a dataset shard has no business holding: links, devices, FIFOs, sparse files, names that
    would leave the folder if unpacked."""
    name = member.name
    if member.issym() or member.islnk():
        raise FfmixError(f"{shard}: member {name} is a link (to {member.linkname}); shards must hold plain files")
    if not member.isfile():
        raise FfmixError(f"{shard}: member {name} is a device, FIFO or other special file; shards must hold "
                         "plain files")
    if member.issparse():
        raise FfmixError(f"{shard}: member {name} is a sparse file; shards must hold plain files")
    if name.startswith("/") or ".." in name.split("/"):
        raise FfmixError(f"{shard}: member name {name!r} is absolute or climbs out with '..'; refused")


def split_name(name: str, shard: str) -> List[str]:
    """``dir/key.ext.more`` -> ``['dir/key', 'ext.more']`` (lower-case extension), WebDataset's rule."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem or not extension:
        raise FfmixError(f"{shard}: member {name} has no KEY.EXTENSION name; WebDataset members are named like "
                         "000123.jpg and 000123.cls")
    return [f"{folder}/{stem}" if folder else stem, extension.lower()]
