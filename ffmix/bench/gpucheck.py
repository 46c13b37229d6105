"""The summary of ``make gpu-check`` (``scripts/gpu-check.sh``): one table from the files its steps left in
one folder, and the exit status that says whether everything held.

The script runs each step under its own time limit and appends ``name<TAB>exit status<TAB>seconds`` to
``steps.tsv``; the steps' own outputs lie beside it (``tests.log``, ``bench-e2e-cuda.json``,
``train/metrics.jsonl``). ``python -m ffmix.bench.gpucheck FOLDER`` prints the table, writes
``summary.md`` and ``summary.json`` there, and exits 1 if a step failed, timed out, left no result, or the
training missed its accuracy. Nothing here needs a GPU, so all of it is tested on the CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..system import atomic_write
from .report import fmt_rate, table

ACCURACY_GOAL = 0.94
STEP_TITLES = {
    "prepare": "FFCV built from gpu-bundle/ (--offline)",
    "tests": "GPU tests (pytest -m gpu)",
    "data": "Fashion-MNIST .beton files",
    "bench": "ffmix bench e2e --device cuda",
    "train": "Fashion-MNIST training on the GPU",
}
OPTIONAL_STEPS = ("prepare", "data")   # rows only when the script ran them (--offline; no .beton files yet)
TIMED_OUT = (124, 137)   # timeout(1): 124 after SIGTERM, 137 after SIGKILL
# the e2e rows shown: ffmix's, and timm's PrefetchLoader + FastCollateMixup (timm's GPU path) beside it
BENCH_ROWS = ("ffmix", "ffmix_uint8", "ffmix_off", "timm_fast_collate", "timm_mixup", "ffcv_plain")


def read_steps(folder: Path) -> Dict[str, Dict[str, float]]:
    """``steps.tsv`` as {name: {"rc": int, "seconds": float}} (the last line of a name wins)."""
    steps: Dict[str, Dict[str, float]] = {}
    path = folder / "steps.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                steps[parts[0]] = {"rc": int(parts[1]), "seconds": float(parts[2])}
    return steps


def _status(step: Optional[Dict[str, float]]) -> str:
    if step is None:
        return "not run"
    if step["rc"] == 0:
        return "ok"
    if step["rc"] in TIMED_OUT:
        return "TIMED OUT"
    return f"FAILED (exit {step['rc']})"


def tests_figure(folder: Path) -> str:
    """pytest's closing line ("3 passed, 250 deselected in 41.2s"), or what is missing."""
    log = folder / "tests.log"
    if not log.is_file():
        return "no tests.log"
    lines = [line.strip("= ").strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    closing = [line for line in lines if " in " in line and any(w in line for w in ("passed", "failed", "error",
                                                                                     "skipped", "deselected"))]
    return closing[-1] if closing else (lines[-1][:120] if lines else "empty tests.log")


def build_figures(folder: Path) -> Dict[str, object]:
    """How ``scripts/ffcv_offline.py`` made FFCV (``ffcv/ffcv-build.json``): the attempt that worked, the ones
    that failed before it, and whether ``import ffcv`` then held."""
    path = folder / "ffcv" / "ffcv-build.json"
    if not path.is_file():
        return {"ok": False, "text": "no ffcv/ffcv-build.json"}
    try:
        report = json.loads(path.read_text())
        failed = [f"{a['name']} failed ({a['detail'][:60]})" for a in report["attempts"] if not a["ok"]]
        used, imported = report["used"], str(report.get("import", "not tried"))
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "text": f"unreadable ffcv-build.json ({exc})"}
    parts = [f"Python {report.get('python', '?')}"] + failed
    parts.append(f"{used} worked, distutils {report.get('distutils', '?')}" if used else "every attempt failed")
    parts.append("import ffcv ok" if imported.startswith("ok") else f"import ffcv {imported[:80]}")
    return {"ok": bool(used) and imported.startswith("ok"), "text": "; ".join(parts), "used": used}


def bench_figures(folder: Path) -> Dict[str, object]:
    """Per dataset, images/s into GPU memory of the rows in BENCH_ROWS, their checks, and ffmix ÷ timm."""
    path = folder / "bench-e2e-cuda.json"
    if not path.is_file():
        return {"ok": False, "text": "no bench-e2e-cuda.json", "datasets": {}}
    try:
        rows = json.loads(path.read_text())["results"]["e2e"]
    except (ValueError, KeyError) as exc:
        return {"ok": False, "text": f"unreadable bench JSON ({exc})", "datasets": {}}
    datasets: Dict[str, Dict[str, dict]] = {}
    for row in rows:
        if row["pipeline"] in BENCH_ROWS:
            datasets.setdefault(row["dataset"], {})[row["pipeline"]] = row
    failed = sorted(f"{name}/{key}" for name, found in datasets.items() for key, row in found.items()
                    if key.startswith("ffmix") and not row.get("check", {}).get("ok", False))
    on_gpu = all(str(row.get("device", "")).startswith("cuda") for found in datasets.values()
                 for row in found.values())
    parts = []
    for name, found in datasets.items():
        ffmix, timm = found.get("ffmix"), found.get("timm_fast_collate")
        text = f"{name}: ffmix {fmt_rate(ffmix['images_per_s'])}" if ffmix else f"{name}: no ffmix row"
        if ffmix and timm:
            text += (f", timm PrefetchLoader+FastCollateMixup {fmt_rate(timm['images_per_s'])} "
                     f"({ffmix['images_per_s'] / timm['images_per_s']:.3g}×)")
        parts.append(text + " images/s")
    problems = ([f"ffmix rows failed their checks: {', '.join(failed)}"] if failed else []) + \
        ([] if on_gpu else ["rows were not delivered to a CUDA device"])
    return {"ok": bool(datasets) and not problems, "text": "; ".join(parts + problems) or "no e2e rows",
            "datasets": {name: {key: {"images_per_s": row["images_per_s"], "check_ok": row["check"]["ok"]}
                                for key, row in found.items()} for name, found in datasets.items()}}


def train_figures(folder: Path, goal: float = ACCURACY_GOAL) -> Dict[str, object]:
    """The last epoch of ``train/metrics.jsonl``: accuracy, seconds, whether it reached ``goal``."""
    path = folder / "train" / "metrics.jsonl"
    if not path.is_file():
        return {"ok": False, "text": "no train/metrics.jsonl"}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        return {"ok": False, "text": "empty metrics.jsonl"}
    last = json.loads(lines[-1])
    accuracy, seconds = float(last["val_acc"]), float(last["elapsed"])
    ok = accuracy >= goal and math.isfinite(seconds)
    verdict = "≥" if ok else "< goal"
    return {"ok": ok, "accuracy": accuracy, "seconds": seconds, "epochs": int(last["epoch"]),
            "text": f"{100 * accuracy:.2f}% test accuracy ({verdict} {100 * goal:.0f}%) after {last['epoch']} "
                    f"epochs, {seconds:.0f} s of training"}


def summarize(folder: Path) -> Dict[str, object]:
    """Everything the table shows, and ``ok``: whether every step ran and held."""
    folder = Path(folder)
    steps = read_steps(folder)
    figures = {"prepare": build_figures(folder), "tests": {"ok": True, "text": tests_figure(folder)}, "bench": bench_figures(folder),
               "train": train_figures(folder)}
    rows = []
    for name, title in STEP_TITLES.items():
        step = steps.get(name)
        if name in OPTIONAL_STEPS and step is None:
            continue   # not an offline run, or the .beton files were there already
        status = _status(step)
        figure = figures.get(name, {"ok": True, "text": ""})
        ok = status == "ok" and bool(figure["ok"])
        if status == "ok" and not figure["ok"]:
            status = "FAILED (result)"
        rows.append({"step": name, "title": title, "status": status, "ok": ok,
                     "seconds": None if step is None else step["seconds"], "figures": figure["text"]})
    return {"folder": str(folder), "ok": all(r["ok"] for r in rows), "rows": rows,
            "bench": figures["bench"].get("datasets", {}),
            "train": {k: v for k, v in figures["train"].items() if k not in ("text",)}}


def render(summary: Dict[str, object]) -> str:
    body = [[r["title"], r["status"], "-" if r["seconds"] is None else f"{r['seconds']:.0f}", r["figures"]]
            for r in summary["rows"]]
    verdict = "gpu-check: all steps held" if summary["ok"] else "gpu-check: FAILED (see the rows above)"
    return (f"gpu-check summary ({summary['folder']})\n" + table(["step", "result", "s", "figures"], body, "llrl")
            + f"\n{verdict}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a gpu-check folder; exit 1 if anything failed.")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"gpu-check: no results folder {args.folder}", file=sys.stderr)
        return 2
    summary = summarize(args.folder)
    text = render(summary)
    print(text)
    atomic_write(args.folder / "summary.md", text + "\n")
    atomic_write(args.folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
