"""``ffmix bench``: ffmix against what people run today for MixUp/CutMix, side by side in one run.

Sections (``ffmix bench SECTION``; default ``all``):

* ``ops``: mixing alone on one in-memory batch: the ffmix op, FFCV's ImageMixup, the NumPy and PyTorch
  tutorial functions, torchvision's MixUp and CutMix, against ``np.copyto`` of the batch (``ops.py``);
* ``e2e``: images/s delivered to the training loop as (images, soft targets) by the PyTorch DataLoader
  recipes, timm (FastCollateMixup; Mixup in the loop), kornia, FFCV's loader with its own mixup, and ffmix,
  on three datasets (``e2e.py``, ``data.py``);
* ``scaling``: the same for 1..N workers and two batch sizes, and an epoch's time at N/4 and N samples;
* ``startup``: fresh processes, loader built -> first batch, Numba cache warm and cold (``startup.py``);
* ``collate``: for people who stay on PyTorch's DataLoader: ``ffmix.MixCollate`` against timm's
  ``FastCollateMixup``, the tutorial collate and plain ``default_collate``, in the same DataLoader (``collate.py``).

The competitors live in ``alternatives.py``; every path's output is checked (shapes, rows summing to one, and
end to end the values, on a probe set with one colour per class), so none is faster because it does less or
wrong; every time is also shown against a copy of the batch with the same thread count. Output: a header (machine, versions), tables, the targets, ``--json``
and ``--plot`` (``report.py``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from ..errors import FfmixError
from ..system import resolve_device

SECTIONS = ("ops", "e2e", "scaling", "startup", "collate")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure ffmix against the usual MixUp/CutMix data paths on the same data, workers and batch size: "
        "mixing alone (ops), end to end (e2e), scaling, and loader start-up. Prints a table; --json and --plot "
        "write every figure. The datasets are generated in a work folder (Fashion-MNIST is read from "
        f"--fmnist when present). A full run takes a few minutes; --quick well under one.")
    parser.add_argument("section", nargs="?", default="all", choices=("all",) + SECTIONS,
                        help="which part to run")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and short runs: checks that everything works, in well under a minute")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="write every figure to this JSON file; a path ending in / is a folder, where the "
                             "file is named DATE-MACHINE.json (e.g. --json docs/bench/, as the README's tables)")
    parser.add_argument("--plot", metavar="PATH", default=None, help="write a bar chart (PNG) of images/s")
    parser.add_argument("--device", default="cpu", help="where batches are delivered: cpu or cuda[:N]")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="CPU workers/threads for every path (default: the cores available)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="batch size for the 28x28 and 32x32 datasets (default 512; --quick 256)")
    parser.add_argument("--jpeg-batch-size", type=int, default=None, metavar="N",
                        help="batch size for the JPEG dataset (default 128; --quick 32)")
    parser.add_argument("--runs", type=int, default=None, metavar="N",
                        help="timed runs per measurement, the median is reported (default 5; --quick 3)")
    parser.add_argument("--min-run-s", type=float, default=None, metavar="S",
                        help="shortest timed run in seconds (default 0.5; --quick 0.05)")
    parser.add_argument("--datasets", default=None, metavar="LIST",
                        help="end-to-end datasets, comma-separated from fmnist, rgb32, jpeg224, photos, "
                             "photos160 (real photographs at 224 / 160 px; needs scikit-image) (default: "
                             "fmnist, rgb32, jpeg224; --quick: rgb32)")
    parser.add_argument("--pipelines", default=None, metavar="LIST",
                        help="end-to-end pipelines, comma-separated (default: all; names as in the JSON's "
                             "'pipeline' field, e.g. ffmix,ffcv_plain)")
    parser.add_argument("--warm-runs", type=int, default=None, metavar="N",
                        help="start-up: fresh processes with the Numba cache warm (default 3; --quick 1)")
    parser.add_argument("--cold-runs", type=int, default=None, metavar="N",
                        help="start-up: fresh processes with an empty Numba cache (default 1; --quick 0)")
    parser.add_argument("--fmnist", default="/usr/share/datasets/fashion-mnist", metavar="DIR",
                        help="Fashion-MNIST IDX folder (a synthetic 28x28 stand-in is used if missing)")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="keep the generated datasets here and reuse them (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _settings(args) -> Dict[str, object]:
    from ..system import available_cpus as cpu_count

    quick = args.quick
    def pick(value, full, small):
        return value if value is not None else (small if quick else full)

    settings = {
        "quick": quick,
        "workers": pick(args.workers, cpu_count(), cpu_count()),
        "batch_size": pick(args.batch_size, 512, 256),
        "jpeg_batch_size": pick(args.jpeg_batch_size, 128, 32),
        "runs": pick(args.runs, 5, 3),
        "min_run_s": pick(args.min_run_s, 0.5, 0.05),
        "warm_runs": pick(args.warm_runs, 3, 1),
        "cold_runs": pick(args.cold_runs, 1, 0),
        "device": args.device,
        "sections": list(SECTIONS) if args.section == "all" else [args.section],
    }
    for name in ("workers", "batch_size", "jpeg_batch_size", "runs"):
        if settings[name] < 1:
            raise FfmixError(f"--{name.replace('_', '-')} must be at least 1, got {settings[name]}")
    if settings["min_run_s"] < 0 or settings["warm_runs"] < 0 or settings["cold_runs"] < 0:
        raise FfmixError("--min-run-s, --warm-runs and --cold-runs must not be negative")
    listed = args.datasets if args.datasets is not None else ("rgb32" if quick else "fmnist,rgb32,jpeg224")
    datasets = [d.strip() for d in listed.split(",") if d.strip()]
    from .data import PHOTO_DATASETS
    known = ("fmnist", "rgb32", "jpeg224", *PHOTO_DATASETS)
    unknown = sorted(set(datasets) - set(known))
    if unknown or not datasets:
        raise FfmixError(f"--datasets takes a comma-separated list of {', '.join(known)}; got {listed!r}")
    settings["datasets"] = datasets
    from .e2e import PIPELINES
    if args.pipelines is None:
        settings["pipelines"] = list(PIPELINES)
    else:
        chosen = [p.strip() for p in args.pipelines.split(",") if p.strip()]
        unknown = sorted(set(chosen) - set(PIPELINES))
        if unknown or not chosen:
            raise FfmixError(f"--pipelines takes a comma-separated list of {', '.join(PIPELINES)}; "
                             f"got {args.pipelines!r}")
        settings["pipelines"] = [p for p in PIPELINES if p in chosen]
    if quick and args.section == "all":
        # start-up needs fresh processes that import torch and compile FFCV's pipelines: tens of seconds
        # (collate: its own quick run, `ffmix bench collate --quick`, keeps this one as short as it was)
        settings["sections"] = ["ops", "e2e", "scaling"]
    return settings


def _lap(section_s: Dict[str, float], name: str, mark: float) -> float:
    now = time.perf_counter()
    if now - mark > 1e-3:
        section_s[name] = now - mark
    return now


# (option, attribute) of every option that changes what is measured, in the order a command line shows them
_COMMAND_OPTIONS = (("--quick", "quick"), ("--device", "device"), ("--workers", "workers"),
                    ("--batch-size", "batch_size"), ("--jpeg-batch-size", "jpeg_batch_size"), ("--runs", "runs"),
                    ("--min-run-s", "min_run_s"), ("--datasets", "datasets"), ("--pipelines", "pipelines"),
                    ("--warm-runs", "warm_runs"), ("--cold-runs", "cold_runs"), ("--fmnist", "fmnist"))


def command_line(args: argparse.Namespace) -> str:
    """The ``ffmix bench`` command that measures what ``args`` measure (output paths left out): printed above
    the tables and kept in the JSON, so every published figure names the command that made it."""
    import shlex

    words = ["ffmix", "bench"] + ([] if args.section == "all" else [args.section])
    for option, name in _COMMAND_OPTIONS:
        value = getattr(args, name, None)
        if value is True:
            words.append(option)
        elif value not in (None, False) and not (name == "device" and value == "cpu") \
                and not (name == "fmnist" and value == "/usr/share/datasets/fashion-mnist"):
            words += [option, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def json_path(target: str, header: Dict[str, object], quick: bool, section: str = "all") -> Path:
    """``target``, or for a folder (ending in /) the file DATE-MACHINE[-SECTION][-quick].json in it."""
    if not target.endswith(("/", os.sep)):
        return Path(target)
    import re

    described = f"{header['cpu']} {header['cores']}c" + (f" {header['gpu']}" if header.get("gpu") else "")
    machine = re.sub(r"[^a-z0-9]+", "-", described.lower()).strip("-")
    suffix = ("" if section == "all" else f"-{section}") + ("-quick" if quick else "")
    return Path(target) / f"{str(header['date'])[:10]}-{machine[:60]}{suffix}.json"


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    for name in ("json", "plot"):
        target = getattr(args, name)
        folder_ok = name == "json" and target is not None and target.endswith(("/", os.sep))
        if target is not None and Path(target).is_dir() and not folder_ok:
            raise FfmixError(f"--{name} {target} is a folder; give a file path"
                             + (" (or end it with / for DATE-MACHINE.json there)" if name == "json" else ""))
    started = time.perf_counter()
    from tqdm import tqdm

    from . import collate, data, e2e, ops, report, startup
    from .measure import machine

    device = resolve_device(settings["device"])
    sections = settings["sections"]
    quick = settings["quick"]
    workers = settings["workers"]
    runs = settings["runs"]
    results: Dict[str, List[dict]] = {}
    skipped: Dict[str, str] = {}
    section_s: Dict[str, float] = {}
    if "e2e" in sections and "kornia_mix" in settings["pipelines"] and not e2e.have_kornia():
        skipped["e2e kornia_mix"] = "kornia is not installed (pip install kornia, or ffmix's bench extra)"
    if quick and args.section == "all":
        skipped["startup"] = "not part of --quick; run `ffmix bench startup` (fresh processes: tens of seconds)"
        skipped["collate"] = "not part of --quick; run `ffmix bench collate --quick`"
    header = machine(str(device))
    config = {k: v for k, v in settings.items()}

    needs_data = any(s in sections for s in ("e2e", "scaling", "startup"))
    specs = {s.name: s for s in data.standard_specs(quick, Path(args.fmnist))}
    wanted = [specs[name] for name in settings["datasets"]] if "e2e" in sections else []
    if any(s in sections for s in ("scaling", "startup")) and specs["rgb32"] not in wanted:
        wanted.append(specs["rgb32"])
    # scaling: 1, 2 and all workers, two batch sizes; --quick: ffmix only, one batch size
    scaling_workers = sorted({1, min(2, workers), workers})
    scaling_batches = sorted({128, settings["batch_size"]}) if not quick else [settings["batch_size"]]
    grid_pipelines = ("ffmix",) if quick else e2e.GRID_PIPELINES
    size_pipelines = ("ffmix",) if quick else e2e.SIZE_PIPELINES
    e2e_pipelines = settings["pipelines"]
    steps = 0
    if "ops" in sections:
        steps += ops.progress_steps(quick)
    if "e2e" in sections:
        steps += e2e.e2e_steps(wanted if "e2e" in sections else [], e2e_pipelines, runs, probes=True)
    if "scaling" in sections:
        steps += e2e.scaling_steps(scaling_workers, scaling_batches, min(runs, 3), grid_pipelines, size_pipelines)
    if "startup" in sections:
        steps += startup.startup_steps(settings["warm_runs"], settings["cold_runs"])
    if "collate" in sections:
        steps += collate.collate_steps(runs)

    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ffmix-bench-"))
    datasets = {}
    probes = {}
    try:
        with tqdm(total=steps, desc="ffmix bench", unit="step", disable=args.quiet, file=sys.stderr,
                  dynamic_ncols=True) as progress:
            if needs_data:
                for spec in wanted:
                    progress.set_postfix_str(f"preparing {spec.name}")
                    datasets[spec.name] = data.prepare(spec, work_dir, workers)
                    if "e2e" in sections and spec.name in settings["datasets"]:
                        size = settings["jpeg_batch_size"] if spec.jpeg else settings["batch_size"]
                        probes[spec.name] = data.prepare(data.probe_spec(spec, size), work_dir, workers)
            mark = time.perf_counter()
            section_s["setup"] = mark - started  # imports and datasets
            if "ops" in sections:
                # one batch in memory is steady from the second call: shorter runs suffice
                results["ops"] = ops.run_ops(quick=quick, threads=workers, runs=runs,
                                             min_run_s=min(settings["min_run_s"], 0.2), progress=progress)
            mark = _lap(section_s, "ops", mark)
            if "e2e" in sections:
                chosen = [datasets[name] for name in settings["datasets"]]
                batch_sizes = {d.name: settings["jpeg_batch_size"] if d.spec.jpeg else settings["batch_size"]
                               for d in chosen}
                results["e2e"] = e2e.run_e2e(chosen, pipelines=e2e_pipelines, batch_sizes=batch_sizes,
                                             workers=workers, runs=runs, min_run_s=settings["min_run_s"],
                                             device=device, progress=progress, probes=probes)
            mark = _lap(section_s, "e2e", mark)
            if "scaling" in sections:
                results["scaling"] = e2e.run_scaling(
                    datasets["rgb32"], worker_counts=scaling_workers, batch_sizes=scaling_batches,
                    size_batch=settings["batch_size"], max_workers=workers, runs=min(runs, 3),
                    min_run_s=settings["min_run_s"], device=device, progress=progress,
                    grid_pipelines=grid_pipelines, size_pipelines=size_pipelines)
            mark = _lap(section_s, "scaling", mark)
            if "startup" in sections:
                if settings["warm_runs"] + settings["cold_runs"] == 0:
                    skipped["startup"] = "--warm-runs 0 and --cold-runs 0"
                else:
                    rgb = datasets["rgb32"]
                    results["startup"] = startup.run_startup(
                        beton=rgb.beton, batch_size=settings["batch_size"], workers=workers,
                        num_classes=rgb.num_classes, warm_runs=settings["warm_runs"],
                        cold_runs=settings["cold_runs"], progress=progress,
                        fill="ffmix.ops.batch" not in sys.modules)  # this process filled the cache already
                    if settings["cold_runs"] == 0:
                        skipped["startup, cold cache"] = "--cold-runs 0 (the --quick default: a cold ffmix " \
                                                         "compile takes tens of seconds)"
            mark = _lap(section_s, "startup", mark)
            if "collate" in sections:
                results["collate"] = collate.run_collate(
                    quick=quick, fmnist=Path(args.fmnist), batch_size=settings["batch_size"], workers=workers,
                    runs=runs, min_run_s=settings["min_run_s"], progress=progress)
            _lap(section_s, "collate", mark)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    header["load_average_end"] = machine(str(device))["load_average"]
    full_report = {
        "command": command_line(args), "machine": header, "config": config,
        "datasets": {name: d.describe() for name, d in datasets.items()},
        "results": results, "skipped": skipped,
        "targets": report.evaluate_targets(results, quick),
        "seconds": time.perf_counter() - started, "section_seconds": section_s,
    }
    print(report.render(full_report))
    if args.json:
        written = json_path(args.json, header, quick, args.section)
        report.write_json(full_report, written)
        print(f"wrote {written}")
    if args.plot:
        report.write_plot(full_report, args.plot)
        print(f"wrote {args.plot}")
    return 0
