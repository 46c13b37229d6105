"""A full disk, simulated: RLIMIT_FSIZE makes every write past ``limit`` bytes of a file fail with EFBIG, as
ENOSPC would, for this process only (SIGXFSZ ignored, so the write fails instead of killing the process)."""
from __future__ import annotations

import resource
import signal
from contextlib import contextmanager


def set_file_size_limit(limit: int):
    """Limit file writes to ``limit`` bytes; returns a function that undoes it (call it from the main thread)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))

    def undo():
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)

    return undo


@contextmanager
def file_size_limit(limit: int):
    undo = set_file_size_limit(limit)
    try:
        yield
    finally:
        undo()
