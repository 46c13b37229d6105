"""``ffmix bench ops`` (augmentation part): each RandAugment op alone, and RandAugment(2, 9) whole, on one uint8
batch in memory: ffmix's kernel over the batch against torchvision's ``transforms.v2`` on the same images.

torchvision runs per image, as it does inside a DataLoader's dataset (``tv/image``); for the single ops it also
runs once on the whole batch (``tv/batch``: its best case, which RandAugment cannot use since every image
draws its own op). Every op's output is checked value for value against torchvision's before timing (the
magnitude is bin 9 of torchvision's 31, positive). What RandAugment costs a whole loader: ``augment_cost.py``.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
from numba import njit, prange

from ..ops.auto_augment_kernels import apply_op
from .measure import Timing, time_calls

MAGNITUDE_BIN, NUM_BINS = 9, 31


def shape(quick: bool):
    return (8, 32, 32, 3) if quick else (128, 224, 224, 3)


@njit(cache=True, parallel=True, nogil=True)
def _apply_batch(images, out, op, magnitude):
    for i in prange(images.shape[0]):
        apply_op(images[i], out[i], op, magnitude, False)
    return out


def run_augment_ops(*, quick: bool, threads: int, runs: int, min_run_s: float, progress) -> List[Dict[str, object]]:
    import numba
    import torch
    from torchvision.transforms import v2

    from ..ops.auto_augment import RandAugment, augment_images
    from ..ops.auto_augment_draws import RAND_AUGMENT, op_magnitude
    from ..ops.auto_augment_kernels import NUM_OPS, OP_NAMES
    from ..ops.auto_augment_reference import tv_apply

    count, height, width, channels = shape(quick)
    runs = min(runs, 2) if quick else runs   # --quick checks that it works; 15 rows of three paths add up
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)
    out, scratch = np.empty_like(images), np.empty_like(images)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    singles = list(tensors)
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows: List[Dict[str, object]] = []
    shape_name = f"{count}x{height}x{width}x{channels}"

    def record(name, timings: Dict[str, Timing], check: Dict[str, object]):
        ffmix_ms = timings["ffmix"].ms_per_batch
        row = {"section": "augment_ops", "shape": shape_name, "op": name, "threads": threads,
               "ffmix_ms": round(ffmix_ms, 4), "check": check}
        for key, timing in timings.items():
            row[f"{key}_ms"] = round(timing.ms_per_batch, 4)
            row[f"{key}_runs_s"] = [round(s, 6) for s in timing.runs_s]
            if key != "ffmix":
                row[f"x_{key}"] = round(timing.ms_per_batch / ffmix_ms, 3)
        rows.append(row)

    for op in range(NUM_OPS):
        name = OP_NAMES[op]
        magnitude = op_magnitude(RAND_AUGMENT, op, MAGNITUDE_BIN, NUM_BINS, height, width)
        expected = tv_apply(tensors, name, magnitude).permute(0, 2, 3, 1).numpy()
        same = bool(np.array_equal(_apply_batch(images, out, op, magnitude), expected))
        calls: Dict[str, Callable[[int], object]] = {
            "ffmix": lambda k, op=op, m=magnitude: _apply_batch(images, out, op, m),
            "tv_image": lambda k, name=name, m=magnitude: [tv_apply(image, name, m) for image in singles],
            "tv_batch": lambda k, name=name, m=magnitude: tv_apply(tensors, name, m),
        }
        progress.set_postfix_str(f"augment ops {name}")
        timings = time_calls(calls, items=count, min_run_s=min_run_s, runs={key: runs for key in calls})
        progress.update(1)
        record(name, timings, {"ok": same, "problems": [] if same else ["differs from torchvision"]})

    settings = RandAugment(2, MAGNITUDE_BIN, NUM_BINS).settings
    indices = np.arange(count, dtype=np.uint64)
    tv_rand = v2.RandAugment(2, MAGNITUDE_BIN, NUM_BINS)

    def ffmix_rand(k):
        np.copyto(out, images)
        return augment_images(out, scratch, indices, k, settings)

    progress.set_postfix_str("augment ops RandAugment(2, 9)")
    timings = time_calls({"ffmix": ffmix_rand, "tv_image": lambda k: [tv_rand(image) for image in singles],
                          "copy": lambda k: np.copyto(out, images)},
                         items=count, min_run_s=min_run_s, runs={"ffmix": runs, "tv_image": runs, "copy": runs})
    progress.update(1)
    record("RandAugment(2, 9) incl. copy", timings, {"ok": True, "problems": []})
    return rows


def progress_steps(quick: bool) -> int:
    return 15


def augment_ops_text(rows: List[dict]) -> str:
    from .report import fmt_ms, table
    lines = [f"Augmentation ops, one batch {rows[0]['shape']} uint8 in memory, {rows[0]['threads']} threads "
             "(ms per batch; xN = torchvision's time / ffmix's; 'same' = pixels equal to torchvision's)"]
    body = []
    for row in rows:
        batch = row.get("tv_batch_ms")
        body.append([row["op"], fmt_ms(row["ffmix_ms"]), fmt_ms(row["tv_image_ms"]), f"x{row['x_tv_image']:.1f}",
                     "-" if batch is None else fmt_ms(batch), "-" if batch is None else f"x{row['x_tv_batch']:.1f}",
                     "same" if row["check"]["ok"] else "DIFFERS"])
    lines.append(table(["op", "ffmix", "tv/image", "", "tv/batch", "", "check"], body, "lrrrrrl"))
    return "\n".join(lines)
