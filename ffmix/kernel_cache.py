"""Numba's on-disk kernel cache, kept in step with ffmix's sources.

ffmix's kernels are compiled with ``cache=True`` so that a process loads them instead of compiling for a minute.
Numba checks a cached function against *its own file* only (modification time and size): a kernel that calls a
function of another module, which later changed (a ``git pull``, a merge, an edited kernel), keeps loading the
old machine code, silently. That happened during development (an augment kernel's caller ran the old kernel
until its cache was deleted). So before any kernel module is imported, ``refresh`` compares a digest of every
source file the cached code can depend on with the one stored beside the cache, and on a difference deletes the
cached machine code (``*.nbi``/``*.nbc``) under those directories; Numba then compiles once and caches again.

Several processes may import ffmix at once (pytest-xdist workers, DataLoader workers): the check and the
deletion run under an exclusive file lock, and the digest is written last, so a process that sees the new
digest also sees the old caches gone. Where the package directory is not writable, Numba does not cache there
either (it uses its user-wide cache directory), and nothing is done.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterable

PACKAGE = Path(__file__).resolve().parent
CACHED_CODE = ("*.nbi", "*.nbc")
STAMP = "ffmix-sources.sha256"


def sources_digest(directories: Iterable[Path]) -> str:
    """sha256 over the path (relative to its directory) and bytes of every ``.py`` file under ``directories``."""
    digest = hashlib.sha256()
    for directory in directories:
        for path in sorted(directory.rglob("*.py")):
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def refresh(cache_root: Path, digest: str) -> bool:
    """Delete the Numba machine code cached under ``cache_root`` unless it was made from sources with ``digest``
    (kept in ``cache_root/__pycache__/ffmix-sources.sha256``). Returns whether anything was deleted."""
    stamp_dir = cache_root / "__pycache__"
    stamp = stamp_dir / STAMP
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        stamp_dir.mkdir(exist_ok=True)
        lock = open(stamp_dir / (STAMP + ".lock"), "a")
    except OSError:          # read-only install: Numba caches elsewhere (its user-wide directory)
        return False
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.exists() and stamp.read_text() == digest:   # another process refreshed it meanwhile
                return False
            stale = [path for pattern in CACHED_CODE for path in cache_root.rglob(pattern)]
            for path in stale:
                path.unlink(missing_ok=True)
            temporary = stamp.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(digest)
            os.replace(temporary, stamp)
            return bool(stale)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def refresh_package() -> bool:
    """``refresh`` for ffmix's own package directory, against its own sources."""
    return refresh(PACKAGE, sources_digest([PACKAGE]))
