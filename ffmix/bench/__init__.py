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
  ``FastCollateMixup``, the tutorial collate and plain ``default_collate``, in the same DataLoader (``collate.py``);
* ``recipe``: the whole training recipe (crop, flip, RandAugment, MixUp/CutMix, RandomErasing) on the photo set:
  ffmix against a DataLoader with torchvision's transforms and timm's Mixup, and ffmix without RandAugment and
  erasing (``recipe.py``).

The competitors live in ``alternatives.py``; every path's output is checked (shapes, rows summing to one, and
end to end the values, on a probe set with one colour per class), so none is faster because it does less or
wrong; every time is also shown against a copy of the batch with the same thread count. Output: a header
(machine, versions), tables, the targets, ``--json`` and ``--plot`` (``report.py``).

Where things are: each section is a record of ``sections.py``; each end-to-end pipeline a record of
``registry.py`` (adding a peer is adding a record there); each target a record of ``targets.py``.
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

from .sections import NAMES as SECTIONS


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
    parser.add_argument("--fmnist", default=None, metavar="DIR",
                        help="Fashion-MNIST IDX folder (default: /usr/share/datasets/fashion-mnist when it is "
                             "there, else a synthetic 28x28 stand-in; a folder given here must hold it)")
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
        # `ffmix bench ops` times the augmentation ops beside the mixing ones
        "sections": (list(SECTIONS) if args.section == "all"
                     else ["ops", "augment_ops"] if args.section == "ops" else [args.section]),
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
    from .data import has_fmnist
    if args.fmnist is not None and not has_fmnist(Path(args.fmnist)):  # asked for, so no quiet stand-in
        raise FfmixError(f"--fmnist {args.fmnist} is not a Fashion-MNIST IDX folder (it needs "
                         "train-images-idx3-ubyte[.gz]); fix the path, or drop --fmnist for the synthetic stand-in")
    from .registry import PIPELINES
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
        settings["sections"] = ["ops", "augment_ops", "e2e", "scaling"]
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
        elif value not in (None, False) and not (name == "device" and value == "cpu"):
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


def _check_outputs(args: argparse.Namespace) -> None:
    """--json and --plot can be written (FfmixError naming the option otherwise), checked before measuring."""
    from ..system import check_writable
    for name in ("json", "plot"):
        target = getattr(args, name)
        if target is None:
            continue
        if name == "json" and target.endswith(("/", os.sep)):  # a folder for DATE-MACHINE.json
            check_writable(Path(target) / "DATE-MACHINE.json", option_name=name, create_parents=True)
            continue
        if Path(target).is_dir():
            raise FfmixError(f"--{name} {target} is a folder; give a file path"
                             + (" (or end it with / for DATE-MACHINE.json there)" if name == "json" else ""))
        check_writable(target, option_name=name, create_parents=True)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_outputs(args)  # a run of minutes must not be lost to an output path found unusable at the end
    started = time.perf_counter()
    from tqdm import tqdm

    from . import data, registry, report, targets
    from .measure import machine
    from .sections import SECTIONS, Plan

    device = resolve_device(settings["device"])
    quick = settings["quick"]
    plan = Plan(settings, device, Path(args.fmnist) if args.fmnist else data.FASHION_MNIST)
    chosen = [section for section in SECTIONS if section.name in settings["sections"]]
    results: Dict[str, List[dict]] = {}
    section_s: Dict[str, float] = {}
    if "e2e" in settings["sections"]:
        for key in settings["pipelines"]:
            pipeline = registry.PIPELINES[key]
            wanted_here = any(pipeline.runs_on(name) for name in settings["datasets"])
            if wanted_here and not pipeline.available():
                plan.skipped[f"e2e {key}"] = f"{pipeline.requires} is not installed ({pipeline.install_hint})"
    if quick and args.section == "all":
        plan.skipped["startup"] = "not part of --quick; run `ffmix bench startup` (fresh processes: tens of seconds)"
        plan.skipped["collate"] = "not part of --quick; run `ffmix bench collate --quick`"
        plan.skipped["recipe"] = "not part of --quick; run `ffmix bench recipe --quick` (needs scikit-image)"
    header = machine(str(device))
    config = {k: v for k, v in settings.items()}

    specs = {s.name: s for s in data.standard_specs(quick, plan.fmnist)}
    wanted = list(dict.fromkeys(name for section in chosen for name in section.datasets(plan)))
    probed = {name for section in chosen if section.probes for name in section.datasets(plan)}
    steps = sum(section.steps(plan) for section in chosen)

    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ffmix-bench-"))
    try:
        with tqdm(total=steps, desc="ffmix bench", unit="step", disable=args.quiet, file=sys.stderr,
                  dynamic_ncols=True) as progress:
            for name in wanted:
                progress.set_postfix_str(f"preparing {name}")
                plan.datasets[name] = data.prepare(specs[name], work_dir, plan.workers)
                if name in probed:
                    probe = data.probe_spec(specs[name], plan.batch_size_for(specs[name]))
                    plan.probes[name] = data.prepare(probe, work_dir, plan.workers)
            mark = time.perf_counter()
            section_s["setup"] = mark - started  # imports and datasets
            for section in chosen:
                rows = section.run(plan, progress)
                if rows is not None:
                    results[section.name] = rows
                mark = _lap(section_s, section.name, mark)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    header["load_average_end"] = machine(str(device))["load_average"]
    full_report = {
        "command": command_line(args), "machine": header, "config": config,
        "datasets": {name: d.describe() for name, d in plan.datasets.items()},
        "results": results, "skipped": plan.skipped,
        "targets": targets.evaluate_targets(results, quick),
        "targets_not_measured": targets.not_measured(results, plan.skipped),
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
