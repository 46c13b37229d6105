"""Small facts about the machine and the file system that several parts of ffmix need."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Union


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
