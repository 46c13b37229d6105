"""End to end: images/s that reach the training loop as ``(images, soft targets)``, and how that scales.

Every path delivers the same contract: float32 (N, C, H, W) images normalised with the same mean/std, and
float32 (N, num_classes) soft targets (the uint8 rows, labelled, hand over raw uint8 instead). Before timing,
every pipeline is built once more over the dataset's probe twin (one flat colour per class) and its first batch
is checked value for value (``probe_values``): the pixels must carry the weights the targets give. A limit row
(``Pipeline.limit``: the decode-only limit of the photo sets) is timed in the same turns but delivers what it
decoded, checked by its own rule.
All loaders of one comparison are built and warmed up first (first epoch: worker start, Numba compiles,
reported as ``warmup_s``), then timed in turns, run 1 of each, run 2 of each, ..., so that load from other
processes on the machine falls on all of them alike. Before each run the process tree is let go idle
(``wait_until_idle``: the previous loader's background refill of its prepared batches would otherwise be timed
in this one's run), and each run starts after a few untimed batches, so the batches a paused loader had
prepared in advance are not counted as free.
The pipelines, their builders and what each delivers are records of ``registry.py``.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .data import BenchDataset
from .measure import Timing, endless, memcpy_ms, sync, wait_until_idle
from .registry import PIPELINES, build_loader, pipelines_for

LEAD_IN_BATCHES = 4   # >= what any loader here prepares ahead (FFCV: batches_ahead=3; DataLoader: 2 per worker)
MAX_RUN_S = 2.0       # a run of a slow loader need not span its whole (long) epoch
GRID_PIPELINES = ("ffmix", "dl_collate")                  # workers x batch size
SIZE_PIPELINES = ("ffmix", "ffcv_mixup", "dl_collate")    # N/4 and N samples


@dataclass
class _Live:
    """A loader being measured: its batch stream and what was learnt while warming it up."""

    key: str
    loader: object
    stream: object
    batches_per_epoch: int
    build_s: float
    first_batch_s: float
    warmup_s: float
    batches_per_run: int = 0
    consumed: int = 0

    def next(self):
        self.consumed += 1
        return next(self.stream)[1]


def time_interleaved(builders: Dict[str, Callable[[], object]], *, runs: int, min_run_s: float,
                     device: torch.device, on_first_batch: Callable[[str, object], None],
                     progress, label: str, max_run_s: Optional[float] = MAX_RUN_S) -> Dict[str, Timing]:
    """Warm each loader up (one epoch), then time ``runs`` turns of every loader; see the module docstring.

    A run is one epoch of batches, stretched to at least ``min_run_s`` and cut to about ``max_run_s`` when an
    epoch is longer (slow loaders: the few batches lost at an epoch start are then a small share anyway);
    ``max_run_s=None`` keeps whole epochs. Run lengths come from the warm-up's second half.
    """
    live: List[_Live] = []
    try:
        for key, build in builders.items():
            progress.set_postfix_str(f"{label} {key}: warm-up")
            started = time.perf_counter()
            loader = build()
            build_s = time.perf_counter() - started
            item = _Live(key=key, loader=loader, stream=endless(loader), batches_per_epoch=len(loader),
                         build_s=build_s, first_batch_s=0.0, warmup_s=0.0)
            started = time.perf_counter()
            batch = item.next()
            sync(device)
            item.first_batch_s = time.perf_counter() - started
            on_first_batch(key, batch)
            half = item.batches_per_epoch // 2
            middle = None
            for position in range(1, item.batches_per_epoch):
                item.next()
                if position == half:
                    sync(device)
                    middle = time.perf_counter()
            sync(device)
            ended = time.perf_counter()
            item.warmup_s = ended - started
            later = item.batches_per_epoch - 1 - half
            if middle is not None and later >= 3:
                per_batch = (ended - middle) / later
            else:  # an epoch too short to tell: time a few more batches (some may have been prepared ahead)
                count, started = 0, time.perf_counter()
                while count < LEAD_IN_BATCHES + 4 or time.perf_counter() - started < min_run_s / 4:
                    item.next()
                    count += 1
                sync(device)
                per_batch = (time.perf_counter() - started) / count
            per_batch = max(per_batch, 1e-7)
            whole = item.batches_per_epoch
            if max_run_s is not None:
                whole = min(whole, max(LEAD_IN_BATCHES, math.ceil(max_run_s / per_batch)))
            item.batches_per_run = max(whole, math.ceil(min_run_s / per_batch))
            live.append(item)
            progress.update(1)
        runs_s: Dict[str, List[float]] = {item.key: [] for item in live}
        images_per_run: Dict[str, int] = {}
        for turn in range(runs):
            # rotate who goes first, so no loader always follows the same neighbour
            for item in live[turn % len(live):] + live[:turn % len(live)]:
                progress.set_postfix_str(f"{label} {item.key}: run {turn + 1}/{runs}")
                wait_until_idle()   # the previous loader's background refill is not this one's time
                for _ in range(LEAD_IN_BATCHES):
                    item.next()
                sync(device)
                images = 0
                started = time.perf_counter()
                for _ in range(item.batches_per_run):
                    images += item.next()[0].shape[0]
                sync(device)
                runs_s[item.key].append(time.perf_counter() - started)
                images_per_run[item.key] = images
            progress.update(1)
        timings = {}
        for item in live:
            timings[item.key] = Timing(
                runs_s=runs_s[item.key], items_per_run=images_per_run[item.key],
                batches_per_run=item.batches_per_run, warmup_s=item.warmup_s,
                extra={"build_s": round(item.build_s, 4), "first_batch_s": round(item.first_batch_s, 4),
                       "batches_per_epoch": item.batches_per_epoch})
        return timings
    finally:
        for item in live:  # end every loader at an epoch boundary, so no FFCV thread is left mid-epoch
            try:
                for _ in range(-item.consumed % item.batches_per_epoch):
                    item.next()
            finally:
                item.stream.close()
        live.clear()
        gc.collect()


def _checker(dataset: BenchDataset, batch_size: int, checks: Dict[str, Dict[str, object]], device: torch.device):
    from .alternatives import check_batch

    def on_first_batch(key: str, batch) -> None:
        images, targets = batch
        if PIPELINES[key].limit:   # a limit delivers what it decoded, not images: its own rule
            from .decode_limit import check_sizes

            checks[key] = check_sizes(images, batch_size=batch_size, side_range=dataset.spec.side_range)
            return
        checks[key] = check_batch(images, targets, batch_size=batch_size, channels=dataset.channels,
                                  image_shape=dataset.image_shape, num_classes=dataset.num_classes,
                                  mixed=PIPELINES[key].mixed,
                                  dtype=getattr(torch, PIPELINES[key].output_on(device)))
    return on_first_batch


def probe_values(pipelines: Sequence[str], probe: BenchDataset, *, batch_size: int, workers: int,
                 device: torch.device, progress) -> Dict[str, Dict[str, object]]:
    """Each pipeline built as for timing but over ``probe`` (one colour per class), its first batch checked
    value for value with ``alternatives.check_values``: the pixels must carry the weights the targets give."""
    from ..normalization import default_mean_std
    from .alternatives import check_values, class_levels

    levels = class_levels(probe.num_classes, probe.channels)
    mean, std = default_mean_std(probe.channels)
    tolerance = 3.0 if probe.spec.jpeg else 1.5   # JPEG's colour round trip moves a flat colour by a unit or two
    checks: Dict[str, Dict[str, object]] = {}
    for key in pipelines:
        progress.set_postfix_str(f"{probe.name} {key}: value check")
        loader = build_loader(key, probe, batch_size=batch_size, workers=workers, device=device)
        stream = iter(loader)
        try:
            images, targets = next(stream)
            raw = PIPELINES[key].output_on(device) == "uint8"
            # checked before the next batch: FFCV's loaders hand out views of buffers they reuse
            checks[key] = check_values(images, targets, levels=levels, mean=None if raw else mean,
                                       std=None if raw else std, tolerance=tolerance)
        except Exception as exc:   # reported in the row, like any failed check
            checks[key] = {"ok": False, "problems": [f"{type(exc).__name__}: {exc}"], "worst": float("nan")}
        finally:
            for _ in stream:       # end at an epoch boundary, so no FFCV thread is left mid-epoch
                pass
            del stream, loader
            gc.collect()
        progress.update(1)
    return checks


def _merge(contract: Dict[str, object], values: Optional[Dict[str, object]]) -> Dict[str, object]:
    if values is None:
        return {**contract, "values": "not checked"}
    return {"ok": bool(contract["ok"] and values["ok"]),
            "problems": list(contract["problems"]) + [f"probe: {p}" for p in values["problems"]],
            "bad_rows": contract.get("bad_rows", 0), "values": "checked", "value_error": values["worst"]}


def run_e2e(datasets: List[BenchDataset], *, pipelines: Sequence[str], batch_sizes: Dict[str, int], workers: int,
            runs: int, min_run_s: float, device: torch.device, progress,
            probes: Optional[Dict[str, BenchDataset]] = None) -> List[Dict[str, object]]:
    """Rows of the end-to-end section: every pipeline on every dataset, plus the copy limits of each (the
    delivered batch as float32 and as uint8, copied with ``workers`` threads, as many as every path has).
    ``probes[name]``: the probe twin of a dataset, on which every pipeline's values are checked first."""
    rows: List[Dict[str, object]] = []
    for dataset in datasets:
        batch_size = batch_sizes[dataset.name]
        height, width = dataset.image_shape
        pixels = batch_size * dataset.channels * height * width
        copy_ms = {"float32": memcpy_ms(pixels * 4, threads=workers), "uint8": memcpy_ms(pixels, threads=workers)}
        keys = pipelines_for(dataset.name, pipelines)
        probe = (probes or {}).get(dataset.name)
        values = probe_values([key for key in keys if not PIPELINES[key].limit], probe, batch_size=batch_size, workers=workers, device=device,
                              progress=progress) if probe is not None else {}
        checks: Dict[str, Dict[str, object]] = {}
        builders = {key: (lambda key=key: build_loader(key, dataset, batch_size=batch_size, workers=workers,
                                                       device=device))
                    for key in keys}
        timings = time_interleaved(builders, runs=runs, min_run_s=min_run_s, device=device,
                                   on_first_batch=_checker(dataset, batch_size, checks, device), progress=progress,
                                   label=dataset.name)
        # rates are shown against ffmix's float row, or its uint8 row where only that ran (--pipelines)
        reference = next((key for key in ("ffmix", "ffmix_uint8") if key in timings), None)
        ffmix_rate = timings[reference].items_per_s if reference else float("nan")
        base = {"section": "e2e", "dataset": dataset.name, "dataset_title": dataset.describe(),
                "batch_size": batch_size, "workers": workers, "device": str(device)}
        for kind, ms in copy_ms.items():
            rows.append({**base, "pipeline": "memcpy" if kind == "float32" else "memcpy_uint8",
                         "label": f"copy of the delivered {kind} batch, {workers} threads (limit)",
                         "images_per_s": batch_size / (ms / 1e3), "ms_per_batch": ms, "runs_s": [],
                         "vs_ffmix": batch_size / (ms / 1e3) / ffmix_rate, "x_memcpy": 1.0, "threads": workers,
                         "check": {"ok": True, "problems": []}})
        for key, timing in timings.items():
            pipeline = PIPELINES[key]
            output = pipeline.output_on(device)
            contract = checks.get(key, {"ok": False, "problems": ["not checked"]})
            rows.append({**base, "pipeline": key, "label": pipeline.label, **timing.as_dict(),
                         "vs_ffmix": timing.items_per_s / ffmix_rate,
                         "x_memcpy": timing.ms_per_batch / copy_ms[output], "output": output,
                         "check": contract if pipeline.limit else _merge(contract, values.get(key)
                                                                          if probe is not None else None),
                         "note": pipeline.note})
    return rows


def run_scaling(dataset: BenchDataset, *, worker_counts: Sequence[int], batch_sizes: Sequence[int],
                size_batch: int, max_workers: int, runs: int, min_run_s: float, device: torch.device,
                progress, grid_pipelines: Sequence[str] = GRID_PIPELINES,
                size_pipelines: Sequence[str] = SIZE_PIPELINES) -> List[Dict[str, object]]:
    """Images/s for each (workers, batch size) on the first N/4 samples (so the single-worker DataLoader
    runs stay short), and the time of an epoch at N/4 and N samples."""
    rows: List[Dict[str, object]] = []
    quarter = np.arange(dataset.count // 4)
    for workers in worker_counts:
        for batch_size in batch_sizes:
            builders = {key: (lambda key=key: build_loader(key, dataset, batch_size=batch_size, workers=workers,
                                                           device=device, indices=quarter))
                        for key in grid_pipelines}
            timings = time_interleaved(builders, runs=runs, min_run_s=min_run_s, device=device,
                                       on_first_batch=lambda key, batch: None, progress=progress,
                                       label=f"scaling w={workers} b={batch_size}")
            for key, timing in timings.items():
                rows.append({"section": "scaling", "kind": "workers_batch", "dataset": dataset.name,
                             "samples": len(quarter), "pipeline": key, "label": PIPELINES[key].label,
                             "workers": workers, "batch_size": batch_size, **timing.as_dict()})
    # dataset size: the first N/4 samples, then all N; a run is exactly one epoch's worth of batches
    full = dataset.count
    sizes = {"N/4": full // 4, "N": full}
    builders = {}
    for size_name, size in sizes.items():
        for key in size_pipelines:
            builders[f"{key}@{size_name}"] = (
                lambda key=key, size=size: build_loader(key, dataset, batch_size=size_batch, workers=max_workers,
                                                        device=device, indices=np.arange(size)))
    timings = time_interleaved(builders, runs=runs, min_run_s=0.0, device=device,
                               on_first_batch=lambda key, batch: None, progress=progress,
                               label="scaling N", max_run_s=None)
    for key in size_pipelines:
        small, large = timings[f"{key}@N/4"], timings[f"{key}@N"]
        # per epoch: runs cover batches_per_run batches, which is one epoch here
        epoch_small = small.median_s * small.extra["batches_per_epoch"] / small.batches_per_run
        epoch_large = large.median_s * large.extra["batches_per_epoch"] / large.batches_per_run
        rows.append({"section": "scaling", "kind": "dataset_size", "dataset": dataset.name, "pipeline": key,
                     "label": PIPELINES[key].label, "workers": max_workers, "batch_size": size_batch,
                     "n_small": sizes["N/4"], "n_large": sizes["N"], "epoch_s_small": epoch_small,
                     "epoch_s_large": epoch_large, "growth": epoch_large / epoch_small,
                     "images_per_s_small": small.items_per_s, "images_per_s_large": large.items_per_s,
                     "images_per_s": large.items_per_s, "runs_s_small": small.runs_s, "runs_s_large": large.runs_s,
                     "warmup_s_small": small.warmup_s, "warmup_s_large": large.warmup_s})
    return rows


def scaling_steps(worker_counts, batch_sizes, runs, grid_pipelines=GRID_PIPELINES,
                  size_pipelines=SIZE_PIPELINES) -> int:
    return len(worker_counts) * len(batch_sizes) * (len(grid_pipelines) + runs) + 2 * len(size_pipelines) + runs


def e2e_steps(dataset_names: Sequence[str], pipelines: Sequence[str], runs: int, probes: bool = False) -> int:
    def rows(name):
        keys = pipelines_for(name, pipelines)
        return len(keys) + (sum(not PIPELINES[key].limit for key in keys) if probes else 0)
    return sum(rows(name) + runs for name in dataset_names)
