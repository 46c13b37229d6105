"""What ``ffmix bench`` shows: a header (machine, versions), tables for people, the targets with met/missed
(evaluated in ``targets.py``), a JSON file with every figure, and a bar chart."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import FfmixError
from ..system import atomic_write, write_figure

# ------------------------------------------------------------------------------------------------ text

def fmt_rate(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_ratio(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}×" if value < 100 else f"{value:,.0f}×"


def fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table, padded so it also reads well as plain text; ``align``: 'l' or 'r' per column."""
    widths = [max(len(str(h)), *(len(str(r[k])) for r in rows)) if rows else len(str(h))
              for k, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in rows])


def check_text(row: dict) -> str:
    check = row.get("check") or {}
    if check.get("ok", True):
        values = check.get("values")
        return "ok" if values in (None, "not checked") else "ok, values checked" if values == "checked" else \
            f"ok, {values}"
    return "FAIL: " + "; ".join(check.get("problems", []))


def header_text(machine: dict, config: dict, command: Optional[str] = None) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    gpu = machine["gpu"] or "none"
    load = machine.get("load_average")
    lines = ([f"command: {command}"] if command else []) + [
        f"ffmix bench{' --quick' if config.get('quick') else ''} ({', '.join(config['sections'])}), "
        f"{machine['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, GPU: {gpu}; "
        f"{machine['os']}" + (f"; load average at start {load[0]}" if load else ""),
        f"versions: {versions}",
        f"settings: {config['workers']} workers/threads, device {config['device']}; median of {config['runs']} "
        f"runs, taken in turns; a loader's run is an epoch (>= {config['min_run_s']} s, cut to ~2 s for slow "
        f"ones); warm-up (first epoch, compiles) excluded; MixUp α=0.8, CutMix α=1.0, switch 0.5, one decision "
        f"per batch in ffmix (mode=batch)",
    ]
    return "\n".join(lines)


def ops_text(rows: List[dict]) -> str:
    parts = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        shape_rows = [r for r in rows if r["shape"] == shape]
        body = [[r["label"], r["input"], str(r["threads"]), fmt_ms(r["ms_per_batch"]), fmt_rate(r["images_per_s"]),
                 fmt_ratio(r["vs_ffmix"]), fmt_ratio(r["x_memcpy"]), check_text(r)] for r in shape_rows]
        parts.append(f"Mixing alone, batch {shape} uint8 (N×H×W×C), one batch in memory\n" + table(
            ["implementation", "input", "threads", "ms/batch", "images/s", "rate ÷ ffmix", "time ÷ memcpy",
             "check"], body, "lllrrrrl"))
    return "\n\n".join(parts)


def e2e_text(rows: List[dict]) -> str:
    parts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        data_rows = [r for r in rows if r["dataset"] == dataset]
        first = data_rows[0]
        body = []
        for r in data_rows:
            warm = "-" if r["pipeline"].startswith("memcpy") else f"{r['warmup_s']:.2f}"
            body.append([r["label"], fmt_rate(r["images_per_s"]), fmt_ms(r["ms_per_batch"]),
                         fmt_ratio(r["vs_ffmix"]), fmt_ratio(r["x_memcpy"]), warm, check_text(r)])
        notes = [f"  note ({r['pipeline']}): {r['note']}" for r in data_rows if r.get("note")]
        notes.append("  time ÷ copy: against the copy of a batch of the row's own output dtype, same thread count; "
                     "check: the delivered batch's contract, and values on a probe set (one colour per class: "
                     "each image's mean pixel must match its target row)")
        parts.append(f"End to end: {first['dataset_title']}; batch {first['batch_size']}, {first['workers']} workers, "
                     f"device {first['device']}\n" + table(
                         ["pipeline", "images/s", "ms/batch", "rate ÷ ffmix", "time ÷ copy", "first epoch s",
                          "check"], body, "lrrrrrl") + "\n" + "\n".join(notes))
    return "\n\n".join(parts)


def scaling_text(rows: List[dict]) -> str:
    parts = []
    grid = [r for r in rows if r["kind"] == "workers_batch"]
    if grid:
        pipelines = list(dict.fromkeys(r["pipeline"] for r in grid))
        configs = list(dict.fromkeys((r["workers"], r["batch_size"]) for r in grid))
        labels = {r["pipeline"]: r["label"] for r in grid}
        body = []
        for workers, batch in configs:
            cells = [str(workers), str(batch)]
            for p in pipelines:
                match = [r for r in grid if r["pipeline"] == p and r["workers"] == workers and r["batch_size"] == batch]
                cells.append(fmt_rate(match[0]["images_per_s"]) if match else "-")
            body.append(cells)
        parts.append(f"Scaling on {grid[0]['dataset']} ({grid[0]['samples']} samples): images/s by workers and "
                     "batch size\n" +
                     table(["workers", "batch"] + [labels[p] for p in pipelines], body, "rr" + "r" * len(pipelines)))
    sizes = [r for r in rows if r["kind"] == "dataset_size"]
    if sizes:
        body = [[r["label"], f"{r['epoch_s_small']:.3f}", f"{r['epoch_s_large']:.3f}", f"{r['growth']:.2f}×",
                 fmt_rate(r["images_per_s_small"]), fmt_rate(r["images_per_s_large"])] for r in sizes]
        parts.append(f"Scaling with dataset size on {sizes[0]['dataset']} (batch {sizes[0]['batch_size']}, "
                     f"{sizes[0]['workers']} workers): epoch time at N={sizes[0]['n_small']} and "
                     f"4N={sizes[0]['n_large']} (4.00× is linear)\n" +
                     table(["pipeline", "epoch s at N", "epoch s at 4N", "growth", "images/s at N", "images/s at 4N"],
                           body, "lrrrrr"))
    return "\n\n".join(parts)


def startup_text(rows: List[dict]) -> str:
    body = [[r["label"], r["cache"], f"{r['to_first_batch_s']:.2f}", f"{r['ffmix_import_s']:.2f}",
             f"{r['build_s']:.2f}", f"{r['first_batch_s']:.2f}", f"{r['import_s']:.2f}", str(len(r["runs_s"])),
             check_text(r)] for r in rows]
    first = rows[0]
    return (f"Start-up: fresh process, after the shared imports (torch, FFCV) -> first batch; batch "
            f"{first['batch_size']}, {first['workers']} workers\n" +
            table(["loader", "Numba cache", "to first batch s", "ffmix import s", "build s", "iter+first batch s",
                   "shared imports s", "runs", "check"], body, "llrrrrrrl"))


def collate_text(rows: List[dict]) -> str:
    parts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        data_rows = [r for r in rows if r["dataset"] == dataset]
        first = data_rows[0]
        body = [[r["label"], fmt_ms(r["collate_ms"]), fmt_ratio(r["collate_x_default"]), fmt_rate(r["images_per_s"]),
                 fmt_ratio(r["vs_ffmix"]), f"{r['warmup_s']:.2f}", check_text(r)] for r in data_rows]
        parts.append(f"DataLoader collate_fn: {first['dataset_title']}; batch {first['batch_size']}, "
                     f"{first['workers']} workers (rate ÷ ffmix: against MixCollate of the same output dtype; "
                     f"alone: one thread, as in a worker)\n" +
                     table(["collate_fn", "alone ms/batch", "time ÷ default_collate", "DataLoader images/s",
                            "rate ÷ ffmix", "first epoch s", "check"], body, "lrrrrrl")
                     + _ceiling_note(data_rows))
    return "\n\n".join(parts)


def _ceiling_note(rows: List[dict]) -> str:
    """How far the DataLoader itself lets any collate_fn lead timm's and the tutorial's: the rate targets
    cannot be met past these ratios."""
    rate = {r["path"]: r["images_per_s"] for r in rows}
    if "ceiling" not in rate:
        return ""
    leads = [f"{rate['ceiling'] / rate[peer]:.3g}× {name}'s" for peer, name in (("timm", "timm"),
             ("tutorial", "the tutorial")) if rate.get(peer)]
    return (f"\nThe DataLoader alone delivers {fmt_rate(rate['ceiling'])} images/s"
            + (f": at most {' and '.join(leads)} rate, for any collate_fn" if leads else ""))


def targets_text(targets: List[dict]) -> str:
    if not targets:
        return ""
    body = [[t["target"], f"{t['measured']:.3g}×", f"{t['comparison']} {t['threshold']:g}×",
             "met" if t["met"] else ("MISSED (check failed: " + ", ".join(t["failed_check"]) + ")"
                                     if t.get("failed_check") else "MISSED")] for t in targets]
    quick = " (--quick: tiny data, not the sizes the targets are set for)" if targets[0]["quick"] else ""
    return f"Targets{quick}\n" + table(["target", "measured", "needed", ""], body, "lrrl")


def not_measured_text(absent: List[dict]) -> str:
    """The targets a run could not evaluate (a row missing: an optional peer not installed, or left out)."""
    body = [[t["target"], "not measured", t["why"]] for t in absent]
    return "Targets not measured (neither met nor missed)\n" + table(["target", "", "why"], body, "lll")


def render(report: dict) -> str:
    parts = [header_text(report["machine"], report["config"], report.get("command"))]
    for name, line in report.get("datasets", {}).items():
        parts.append(f"dataset {name}: {line}")
    from .sections import SECTIONS

    results = report["results"]
    for section in SECTIONS:
        if results.get(section.name):
            parts.append(section.text(results[section.name]))
    for name, why in report.get("skipped", {}).items():
        parts.append(f"{name}: skipped ({why})")
    if report.get("targets"):
        parts.append(targets_text(report["targets"]))
    if report.get("targets_not_measured"):
        parts.append(not_measured_text(report["targets_not_measured"]))
    laps = ", ".join(f"{k} {v:.0f} s" for k, v in report.get("section_seconds", {}).items())
    parts.append(f"total {report['seconds']:.0f} s" + (f" ({laps})" if laps else ""))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ json, plot

def write_json(report: dict, path: os.PathLike) -> None:
    atomic_write(path, json.dumps(report, indent=2, default=_plain), option_name="json", create_parents=True)


def _plain(value):
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# colour families share a colour map: ffmix greens, FFCV blues, timm purples, PyTorch/torchvision/NumPy/kornia
# oranges, limits grey. The end-to-end pipelines carry their family in the registry; the ops section's
# implementations and the copy limits are named here.
_COLOUR_MAPS = {"ffmix": "Greens", "timm": "Purples", "ffcv": "Blues", "other": "Oranges", "limit": "Greys"}
_OPS_FAMILIES = {"ffmix": "ffmix", "ffmix_mixup": "ffmix", "ffcv": "ffcv", "torch": "other", "tv_mixup": "other",
                 "tv_cutmix": "other", "numpy_loop": "other", "memcpy": "limit", "memcpy_uint8": "limit",
                 "memcpy_float": "limit", "memcpy_1t": "limit"}


def _family_members() -> Dict[str, List[str]]:
    from .registry import PIPELINES

    members: Dict[str, List[str]] = {family: [] for family in _COLOUR_MAPS}
    for key, pipeline in PIPELINES.items():
        members[pipeline.family].append(key)
    for key, family in _OPS_FAMILIES.items():
        if key not in members[family]:
            members[family].append(key)
    return members


def _colour(key: str, plt, members: Dict[str, List[str]]):
    """A shade of the family's colour map, darkest for its first member."""
    for family, keys in members.items():
        if key in keys:
            return plt.get_cmap(_COLOUR_MAPS[family])(0.85 - 0.5 * keys.index(key) / max(len(keys) - 1, 1))
    return "tab:purple"


def plot_figure(report: dict):
    """The bar chart as a matplotlib Figure (not saved): images/s on a log scale, one panel per section shown
    (e2e: a group per dataset, a bar per pipeline; ops: a group per batch shape, a bar per implementation);
    the bars' labels are the rows' labels. Raises ``FfmixError`` when the report has neither section."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    panels = [(name, rows) for name, rows in (("e2e", results.get("e2e")), ("ops", results.get("ops"))) if rows]
    if not panels:
        raise FfmixError("--plot needs the e2e or ops section; nothing to plot")
    members = _family_members()
    figure, axes = plt.subplots(len(panels), 1, figsize=(13, 5.2 * len(panels)), squeeze=False)
    for axis, (name, rows) in zip(axes[:, 0], panels):
        group_key, bar_key = ("dataset", "pipeline") if name == "e2e" else ("shape", "impl")
        groups = list(dict.fromkeys(r[group_key] for r in rows))
        bars = list(dict.fromkeys(r[bar_key] for r in rows))
        labels = {r[bar_key]: r["label"] for r in rows}
        width = 0.8 / len(bars)
        for k, bar in enumerate(bars):
            xs, ys = [], []
            for g, group in enumerate(groups):
                match = [r for r in rows if r[group_key] == group and r[bar_key] == bar]
                if match:
                    xs.append(g - 0.4 + width * (k + 0.5))
                    ys.append(match[0]["images_per_s"])
            axis.bar(xs, ys, width=width, label=labels[bar], color=_colour(bar, plt, members),
                     hatch="//" if bar.startswith("memcpy") else None, edgecolor="black" if bar == "ffmix" else None)
        axis.set_yscale("log")
        axis.set_xticks(range(len(groups)))
        if name == "e2e":
            titles = {r["dataset"]: r["dataset_title"].split(":")[0] for r in rows}
            axis.set_xticklabels([titles[g] for g in groups])
            axis.set_title("End to end: images/s delivered as (normalised float32 images, soft targets)")
        else:
            axis.set_xticklabels([f"batch {g} uint8" for g in groups])
            axis.set_title("Mixing alone: images/s on one in-memory batch")
        axis.set_ylabel("images/s (log scale)")
        axis.grid(axis="y", which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    machine = report["machine"]
    figure.suptitle(f"ffmix bench, {machine['date'][:10]}: {machine['cpu']}, {machine['cores']} cores, "
                    f"{report['config']['workers']} workers", fontsize=11)
    figure.tight_layout()
    return figure


def write_plot(report: dict, path: os.PathLike) -> None:
    """``plot_figure`` saved as a PNG at ``path`` (written atomically: a reader never sees half a file)."""
    import matplotlib.pyplot as plt

    figure = plot_figure(report)
    try:
        write_figure(figure, path, option_name="plot", dpi=110)
    finally:
        plt.close(figure)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ffmix.bench.report RESULT.json``: the tables of a kept run again (for the README), with
    the command that made them above."""
    import argparse

    parser = argparse.ArgumentParser(description="Print the tables of a kept `ffmix bench --json` file.")
    parser.add_argument("json_file", type=Path)
    args = parser.parse_args(argv)
    try:
        kept = json.loads(args.json_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"ffmix bench report: cannot read {args.json_file}: {exc}", file=sys.stderr)
        return 1
    print(f"from {args.json_file}\n")
    print(render(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
