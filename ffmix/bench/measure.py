"""Timing and the machine description shared by the ``ffmix bench`` sections.

Rules every section follows: the first call (Numba compiles, worker start-up, first epoch) is a warm-up,
timed and reported apart; then several timed runs, of which the median is the figure and all are kept in the
JSON; a run lasts at least ``min_run_s`` so that timer resolution and scheduler noise stay small.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np


@dataclass
class Timing:
    """Runs of a repeated piece of work: ``runs_s`` wall seconds of ``items_per_run`` items each."""

    runs_s: List[float]
    items_per_run: float
    batches_per_run: float
    warmup_s: float = 0.0
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def items_per_s(self) -> float:
        return self.items_per_run / self.median_s

    @property
    def ms_per_batch(self) -> float:
        return 1e3 * self.median_s / self.batches_per_run

    @property
    def spread(self) -> float:
        """(max - min) / median of the runs: how noisy the measurement was."""
        return (max(self.runs_s) - min(self.runs_s)) / self.median_s

    def as_dict(self) -> Dict[str, object]:
        return {"runs_s": [round(s, 6) for s in self.runs_s], "median_s": round(self.median_s, 6),
                "items_per_run": self.items_per_run, "batches_per_run": self.batches_per_run,
                "images_per_s": round(self.items_per_s, 3), "ms_per_batch": round(self.ms_per_batch, 5),
                "spread": round(self.spread, 4), "warmup_s": round(self.warmup_s, 4), **self.extra}


def sync(device) -> None:
    """Wait for queued GPU work, so that time stamps include it."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch
        torch.cuda.synchronize(device)


def time_calls(calls: Dict[str, Callable[[int], object]], *, items: int, runs: Dict[str, int], min_run_s: float,
               on_start: Optional[Callable[[str], None]] = None, device=None) -> Dict[str, Timing]:
    """Time each ``calls[key](k)`` (one batch of ``items`` images; ``k`` counts calls, for fresh randomness).

    Per key: the first call is the warm-up (``warmup_s``); the next (up to three) estimate a call's time; a run repeats
    the call enough times to last ``min_run_s``. Runs go in turns (run 1 of every key, then run 2, ...) so
    that load from other processes falls on all of them alike. ``on_start(key)`` is called before each
    key's warm-up (for progress and thread settings).
    """
    counter = iter(range(1 << 62))
    warmup_s: Dict[str, float] = {}
    repeats: Dict[str, int] = {}
    for key, call in calls.items():
        if on_start is not None:
            on_start(key)
        started = time.perf_counter()
        call(next(counter))
        sync(device)
        warmup_s[key] = time.perf_counter() - started
        calls_made, started = 0, time.perf_counter()
        while calls_made < 3 and (calls_made == 0 or time.perf_counter() - started < min_run_s):
            call(next(counter))   # one call is enough to tell when a call takes longer than a run
            calls_made += 1
        sync(device)
        estimate = max((time.perf_counter() - started) / calls_made, 1e-7)
        repeats[key] = max(1, math.ceil(min_run_s / estimate))
    runs_s: Dict[str, List[float]] = {key: [] for key in calls}
    for turn in range(max(runs.values())):
        for key, call in calls.items():
            if turn >= runs[key]:
                continue
            started = time.perf_counter()
            for _ in range(repeats[key]):
                call(next(counter))
            sync(device)
            runs_s[key].append(time.perf_counter() - started)
    return {key: Timing(runs_s=runs_s[key], items_per_run=items * repeats[key], batches_per_run=repeats[key],
                        warmup_s=warmup_s[key]) for key in calls}


def process_tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its live child processes (DataLoader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:      # ended meanwhile
            pass
    return total


def wait_until_idle(*, window_s: float = 0.1, busy_share: float = 0.1, max_s: float = 5.0) -> float:
    """Wait until this process and its children use less than ``busy_share`` of one core over ``window_s``
    (at most ``max_s``); returns the seconds waited. A loader stopped mid-epoch keeps working in the
    background until its queue of prepared batches is full again (FFCV's threads, a DataLoader's worker
    processes); without this wait that work is timed as part of the next loader's run, and a slow loader's
    refill (a DataLoader's 4 batches of 0.3 s each on photographs) costs the loader after it a third of its
    rate."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_s:
        before = process_tree_cpu_s()
        time.sleep(window_s)
        if process_tree_cpu_s() - before < busy_share * window_s:
            break
    return time.perf_counter() - started


def endless(loader) -> Iterator:
    """The batches of ``loader``, epoch after epoch, as one stream; yields ``(epoch, batch)``."""
    epoch = 0
    while True:
        for batch in loader:
            yield epoch, batch
        epoch += 1


def memcpy_ms(nbytes: int, repeats: int = 15, threads: int = 1) -> float:
    """Median ms of copying ``nbytes`` with ``threads`` threads (``np.copyto`` for one, else a Numba
    ``prange`` copy in ``threads`` slices): the memory-speed limit of a path that handles a batch with as
    many threads. The first copy (compile, page faults) is not timed."""
    source = np.ones(nbytes, np.uint8)
    target = np.empty_like(source)
    if threads <= 1:
        copy = lambda: np.copyto(target, source)   # noqa: E731
    else:
        kernel = parallel_copy(threads)
        copy = lambda: kernel(source, target)      # noqa: E731
    times = []
    with _numba_threads(threads):
        copy()
        for _ in range(repeats):
            started = time.perf_counter()
            copy()
            times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def parallel_copy(threads: int):
    """``copy(source, target)`` of two flat uint8 arrays in ``threads`` slices, one per Numba thread."""
    from numba import njit, prange

    global _PARALLEL_COPY
    if _PARALLEL_COPY is None:
        @njit(parallel=True, cache=True, nogil=True)
        def copy_in_slices(source, target, slices):
            step = (source.size + slices - 1) // slices
            for k in prange(slices):
                start = k * step
                stop = min(source.size, start + step)
                target[start:stop] = source[start:stop]
        _PARALLEL_COPY = copy_in_slices
    kernel = _PARALLEL_COPY
    return lambda source, target: kernel(source, target, threads)


_PARALLEL_COPY = None


class _numba_threads:
    """Numba's thread count set to ``threads`` (at most its pool size) for a block, then restored."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        import numba
        self.saved = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        import numba
        numba.set_num_threads(self.saved)


# -------------------------------------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> Optional[float]:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(device: str) -> Dict[str, object]:
    """Where and with what the numbers were measured."""
    import torch

    from .. import __version__
    from ..system import available_cpus as cpu_count

    gpu = None
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count()))
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "memory_gib": memory_gib(),
        "gpu": gpu,
        "device": device,
        "os": f"{platform.system()} {platform.release()}",
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": {"ffmix": __version__, "ffcv": version_of("ffcv"), "torch": torch.__version__,
                     "torchvision": version_of("torchvision"), "numba": version_of("numba"),
                     "numpy": np.__version__, "python": sys.version.split()[0]},
    }
