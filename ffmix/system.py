"""Small facts about the machine and the file system that several parts of ffmix need."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Union

from .errors import FfmixError

if TYPE_CHECKING:
    import torch


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes], *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a hidden temporary file beside it and a rename, so a reader sees the
    old file or the new one, never half of one. ``durable`` also flushes file and directory to disk."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    if durable:
        fsync_directory(path.parent)
    return path


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
