"""Small facts about the machine and the file system that several parts of ffmix need."""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import FfmixError

if TYPE_CHECKING:
    import torch


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# A run may plan to take at most this share of the memory available now: the rest is the model, the
# framework and whatever else the machine runs. Beyond it the kernel's OOM killer ends the run with no message.
MEMORY_SHARE = 0.8
# Slots FFCV's epoch thread keeps per batch buffer: batches_ahead in flight, plus the one being filled and the
# one the training loop holds.
EXTRA_BATCH_SLOTS = 2


def available_memory() -> int:
    """Bytes of memory this process can still get: psutil's "available" (free plus reclaimable cache)."""
    import psutil
    return int(psutil.virtual_memory().available)


def loader_buffer_bytes(batch_size: int, image_shape, batches_ahead: int = 3, output_itemsize: int = 4) -> int:
    """Estimated bytes of host memory a loader preallocates for batches of ``batch_size`` images of
    ``image_shape`` (H, W): per slot (``batches_ahead`` + ``EXTRA_BATCH_SLOTS``), the decoded uint8 RGB batch
    and its output of ``output_itemsize`` bytes a value (0 when the output lives on a GPU). Measured: 282 MiB
    for 64 images of 256x256 to float32 on the CPU, where this says 300 MiB."""
    height, width = image_shape
    return (batches_ahead + EXTRA_BATCH_SLOTS) * batch_size * height * width * 3 * (1 + output_itemsize)


def check_memory(needed: int, what: str, fix: str) -> None:
    """Raise ``FfmixError`` before allocating when ``needed`` bytes (an estimate of ``what``) exceed
    ``MEMORY_SHARE`` of the memory available now; ``fix`` says which options lower it."""
    available = available_memory()
    if needed > MEMORY_SHARE * available:
        raise FfmixError(f"{what} would take about {_gib(needed)} of memory, but only {_gib(available)} is "
                         f"available on this machine; {fix}")


def _gib(count: int) -> str:
    return f"{count / 2 ** 30:,.1f} GiB" if count >= 2 ** 27 else f"{count / 2 ** 20:,.0f} MiB"


def resolve_device(requested, *, local_rank: int = 0, option: str = "--device") -> "torch.device":
    """The ``torch.device`` for ``requested``: "auto" (this rank's GPU if CUDA is available, else the CPU),
    "cpu", "cuda" (GPU ``local_rank``), "cuda:N", or a ``torch.device``. The one place ffmix parses a device.

    Raises FfmixError, naming ``option``, for an unknown name, CUDA asked for but missing, or a GPU index
    (or local rank) beyond the visible GPUs.
    """
    import torch  # here, so that importing ffmix.system does not load torch

    if isinstance(requested, str) and requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise FfmixError(f"{option} must be auto, cpu, cuda or cuda:N, got {requested!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise FfmixError(f"{option} must be auto, cpu, cuda or cuda:N, got {str(device)!r}")
    if not torch.cuda.is_available():
        raise FfmixError(f"{option} {device} but no CUDA GPU is available here; use {option} cpu")
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        what = f"GPU {index}" if device.index is not None else f"local rank {index}"
        raise FfmixError(f"{option} {device}: {what} has no GPU, only {torch.cuda.device_count()} visible; "
                         "pick a visible GPU or start at most that many processes per node")
    return torch.device("cuda", index)


# Why a write failed, in words a user acts on (the errno's own text names the temporary file, not the target).
_WRITE_FAILURES = {errno.ENOSPC: ("no space left on the device", "free some space or choose another place"),
                   errno.EDQUOT: ("the disk quota is used up", "free some space or choose another place"),
                   errno.EFBIG: ("the file is too large for this file system or process limit",
                                 "choose another place"),
                   errno.EROFS: ("the file system is read-only", "choose another place"),
                   errno.EACCES: ("permission denied", "choose a folder you may write to"),
                   errno.EPERM: ("permission denied", "choose a folder you may write to")}


# The errnos that mean "the disk will not take it", whichever file ffmix was writing: reported for the
# destination the user named, never for the temporary file beside it.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _destination(path: Path, option_name: Optional[str]) -> str:
    from .errors import option
    return f"{option(option_name)} {path}" if option_name else str(path)


def write_error(path: Union[str, os.PathLike], exc: OSError, option_name: Optional[str] = None) -> FfmixError:
    """The ``FfmixError`` for ``exc`` raised while writing ``path``: it names ``path`` (and the option that gave
    it), the reason and what to do; never the temporary file the write went through."""
    reason, fix = _WRITE_FAILURES.get(exc.errno, (exc.strerror or type(exc).__name__, "choose another place"))
    return FfmixError(f"cannot write {_destination(Path(path), option_name)}: {reason}; {fix}")


def check_writable(path: Union[str, os.PathLike], *, option_name: Optional[str] = None,
                   create_parents: bool = False) -> Path:
    """Fail before long work when ``atomic_write`` could not write ``path``: it is a folder, its folder is missing
    (unless ``create_parents``, then the nearest existing one counts), not a folder, or not writable (read-only
    file system, permissions). Creates nothing. Raises ``FfmixError`` naming ``path`` and ``option_name``."""
    path = Path(path)
    where = _destination(path, option_name)
    if path.is_dir():
        raise FfmixError(f"cannot write {where}: it is a folder; give a file path")
    parent = path.parent
    if create_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.exists():
        raise FfmixError(f"cannot write {where}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise FfmixError(f"cannot write {where}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):  # access(2) also answers EROFS for a read-only file system
        problem = "is on a read-only file system" if _read_only(parent) else "is not writable (permission denied)"
        raise FfmixError(f"cannot write {where}: folder {parent} {problem}; choose another place")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes], *, durable: bool = False,
                 option_name: Optional[str] = None, create_parents: bool = False) -> Path:
    """Write ``data`` to ``path`` through a hidden temporary file beside it and a rename, so a reader sees the
    old file or the new one, never half of one (a full disk leaves the old file as it was). ``durable`` also
    flushes file and directory to disk; ``create_parents`` creates missing folders first. Every file ffmix
    writes goes through here.

    Raises ``FfmixError`` naming ``path`` (and ``option_name``, the option that gave it), never the temporary
    file, when it cannot be written."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if create_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        if path.is_dir():
            raise FfmixError(f"cannot write {_destination(path, option_name)}: it is a folder; give a file path") \
                from None
        raise write_error(path, exc, option_name) from None
    finally:
        if temp.exists():
            temp.unlink()
    if durable:
        fsync_directory(path.parent)
    return path


def write_figure(figure, path: Union[str, os.PathLike], *, option_name: Optional[str] = None, **savefig) -> Path:
    """Save a matplotlib ``figure`` as a PNG at ``path`` through ``atomic_write`` (rendered in memory first, so
    a failure leaves an existing file whole); ``savefig`` are ``Figure.savefig``'s options (e.g. ``dpi``)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    return atomic_write(path, buffer.getvalue(), option_name=option_name, create_parents=True)


def fsync_directory(directory: Union[str, os.PathLike]) -> None:
    """Make renames inside ``directory`` survive a power cut (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
