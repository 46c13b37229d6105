"""``ffmix inspect``: what a ``.beton`` holds: samples, fields, class histogram, image sizes, file size.

Everything is read from the file's own tables (FFCV's header and per-sample metadata, no image decoding), so
it works on plain FFCV files too; the ffmix sidecar, when present, adds class names, channels and source.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .metadata import IMAGE_FIELD, LABEL_FIELD, meta_path, read_meta

HISTOGRAM_ROWS = 30                 # text output lists at most this many classes (--json has them all)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.HelpFormatter  # no "(default: False)" on a flag
    parser.add_argument("beton", metavar="FILE", help="a .beton written by ffmix convert or by FFCV")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--verify", action="store_true", help=(
        "also decode every image (with a progress bar) and list those the loader would refuse; the exit "
        "status is 1 if there are any"))


def run(args: argparse.Namespace) -> int:
    report = inspect_beton(args.beton)
    bad = None
    if args.verify:
        from .verify import verify_beton

        bad = verify_beton(args.beton)
        report["verify"] = {"bad_images": [b.as_dict() for b in bad]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if bad is not None:
            from .verify import format_bad

            print(format_bad(args.beton, bad, report["num_samples"]))
    return 1 if bad else 0


def inspect_beton(path: os.PathLike) -> Dict[str, Any]:
    """Describe ``path`` as a dict (what ``--json`` prints). Raises ``FfmixError`` if it is not a .beton or is
    damaged (truncated, allocation table missing), as the loader would refuse it."""
    from .ffcv_compat import field_kinds, field_table, image_modes, page_size
    from .integrity import open_whole_beton

    path = Path(path)
    reader = open_whole_beton(path)  # the loader's own check: a file it would refuse is not described
    fields = field_kinds(reader)
    report: Dict[str, Any] = {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "num_samples": int(reader.num_samples),
        "page_size": page_size(reader),
        "fields": fields,
    }
    image_name = _pick_field(fields, IMAGE_FIELD, "RGBImageField")
    label_name = _pick_field(fields, LABEL_FIELD, "IntField")
    meta, meta_problem = _sidecar(path)
    if image_name is not None:
        table = field_table(reader, image_name)
        sizes = Counter(zip(table["height"].tolist(), table["width"].tolist()))
        mode_names = {code: name for name, code in image_modes().items()}
        modes = Counter(mode_names.get(int(m), f"mode{m}") for m in table["mode"].tolist())
        report["images"] = {
            "field": image_name,
            "min_size": [int(table["height"].min()), int(table["width"].min())] if len(table) else None,
            "max_size": [int(table["height"].max()), int(table["width"].max())] if len(table) else None,
            "distinct_sizes": len(sizes),
            "common_sizes": [{"size": [h, w], "count": n} for (h, w), n in sizes.most_common(5)],
            "stored_as": dict(sorted(modes.items())),
            "channels": meta.channels if meta else None,
        }
    if label_name is not None:
        labels = field_table(reader, label_name).astype(np.int64)
        values, counts = np.unique(labels, return_counts=True)
        names = meta.class_names if meta else None
        report["labels"] = {
            "field": label_name,
            "num_classes": meta.num_classes if meta else len(values),
            "histogram": [{"label": int(v), "name": names[v] if names and 0 <= v < len(names) else None,
                           "count": int(c)} for v, c in zip(values, counts)],
        }
        if names:  # classes with no samples are worth seeing too
            present = set(values.tolist())
            report["labels"]["empty_classes"] = [k for k in range(len(names)) if k not in present]
    report["ffmix"] = json.loads(meta.to_json()) if meta else None
    if meta_problem:
        report["sidecar_problem"] = meta_problem
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The table ``ffmix inspect`` prints for people."""
    lines = [
        f"file       {report['path']}  ({report['file_bytes'] / 1e6:.1f} MB, pages of "
        f"{report['page_size'] // 1024} KiB)",
        f"samples    {report['num_samples']}",
        "fields     " + ", ".join(f"{name}: {kind}" for name, kind in report["fields"].items()),
    ]
    meta = report.get("ffmix")
    images = report.get("images")
    if images and images["min_size"]:
        low, high = images["min_size"], images["max_size"]
        if images["distinct_sizes"] == 1:
            size_text = f"{low[0]}x{low[1]} (H x W), all the same"
        else:
            common = ", ".join(f"{c['size'][0]}x{c['size'][1]}: {c['count']}" for c in images["common_sizes"])
            size_text = (f"{low[0]}x{low[1]} to {high[0]}x{high[1]} (H x W), {images['distinct_sizes']} distinct; "
                         f"most common {common}")
        lines.append(f"images     {size_text}")
        stored = ", ".join(f"{mode} {count}" for mode, count in images["stored_as"].items())
        channels = {1: "grayscale source (1 channel, stored as 3 equal channels)", 3: "RGB"}.get(
            images["channels"], "channels unknown (no ffmix sidecar)")
        lines.append(f"           stored as {stored}; {channels}")
    if meta:
        split = f", split {meta['split']}" if meta.get("split") else ""
        options = meta.get("write_options", {})
        mode = options.get("write_mode")
        relevant = {"write_mode", "max_resolution", "limit", "skipped"} | {
            "jpg": {"jpeg_quality"}, "smart": {"jpeg_quality", "smart_threshold"},
            "proportion": {"jpeg_quality", "compress_probability"}}.get(mode, set())
        option_text = ", ".join(f"{k}={v}" for k, v in options.items() if k in relevant and v not in (None, 0))
        lines.append(f"source     {meta['source_format']} {meta['source']}{split}")
        lines.append(f"written    {option_text}")
    elif report.get("sidecar_problem"):
        lines.append(f"sidecar    {report['sidecar_problem']}")
    labels = report.get("labels")
    if labels:
        histogram = labels["histogram"]
        total = max(1, sum(row["count"] for row in histogram))
        peak = max((row["count"] for row in histogram), default=1)
        lines.append(f"classes    {labels['num_classes']}  (label field '{labels['field']}')")
        name_width = max([len(row["name"] or "") for row in histogram[:HISTOGRAM_ROWS]] + [4])
        lines.append(f"  {'label':>5}  {'name':<{name_width}}  {'count':>8}  {'share':>6}")
        for row in histogram[:HISTOGRAM_ROWS]:
            bar = "#" * max(1, round(20 * row["count"] / peak))
            lines.append(f"  {row['label']:>5}  {row['name'] or '':<{name_width}}  {row['count']:>8}  "
                         f"{100 * row['count'] / total:5.1f}%  {bar}")
        if len(histogram) > HISTOGRAM_ROWS:
            lines.append(f"  ... {len(histogram) - HISTOGRAM_ROWS} more classes (see --json)")
        if labels.get("empty_classes"):
            empty = labels["empty_classes"]
            lines.append(f"  classes with no samples: {empty[:20]}{' ...' if len(empty) > 20 else ''}")
    return "\n".join(lines)


def _pick_field(fields: Dict[str, str], preferred: str, kind: str) -> Optional[str]:
    if fields.get(preferred) == kind:
        return preferred
    return next((name for name, field_kind in fields.items() if field_kind == kind), None)


def _sidecar(path: Path):
    if not meta_path(path).is_file():
        return None, f"no ffmix sidecar ({meta_path(path).name}); class names and channels unknown"
    try:
        return read_meta(path), None
    except (ValueError, TypeError, FileNotFoundError) as exc:
        return None, f"unreadable ffmix sidecar: {exc}"
