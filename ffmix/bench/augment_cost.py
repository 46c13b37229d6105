"""What RandAugment costs a whole loader: ``make_loader`` on a JPEG set at 224 px with ``auto_augment`` and without,
everything else equal (random-resized-crop, flip, MixUp + CutMix, batch 128), uint8 and float output.

    python -m ffmix.bench.augment_cost --count 768 --rounds 3 --json cost.json

The recipes run one epoch each in turns, ``--rounds`` times after a warm-up epoch (compiles), so load from other
jobs falls on all of them alike; each recipe's ratio is the median over rounds of (epoch time without
augmentation / epoch time with it), and the process's CPU time per image is reported beside it (steadier than
wall-clock time on a shared machine). The issue's target: RandAugment(2, 9) costs at most 30 % of throughput,
a ratio of at least 0.7. Not a ``ffmix bench`` section (its registry is elsewhere); docs/auto_augment.md quotes it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

# timm strings: torchvision's RandAugment(2, 9) (bin 9 = timm level 3, every op applied) and DeiT's recipe
RECIPES = ("none", "rand-m3-n2-p1-inc1", "rand-m9-mstd0.5-inc1")


def _loader(beton: Path, auto_augment: str, output: str, workers: int):
    import torch

    from ..loader import make_loader

    kinds = {"uint8": {"dtype": torch.uint8, "normalize": False}, "float": {"dtype": torch.float32}}
    return make_loader(beton, batch_size=128, image_size=224, hflip=True, mixup_alpha=0.8, cutmix_alpha=1.0,
                       num_workers=workers, auto_augment=None if auto_augment == "none" else auto_augment,
                       seed=0, **kinds[output])


def _epoch(loader) -> Dict[str, float]:
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch, _targets in loader:
        images += len(batch)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "images": images}


def measure(beton: Path, recipes=RECIPES, outputs=("uint8", "float"), rounds: int = 3,
            workers: int = 2) -> List[dict]:
    """One row per (output, recipe): epoch times per round, images/s, CPU ms per image and the ratios to the
    same output without augmentation (``recipes[0]`` must be "none")."""
    combos = [(output, recipe) for output in outputs for recipe in recipes]
    loaders = {combo: _loader(beton, combo[1], combo[0], workers) for combo in combos}
    for loader in loaders.values():
        _epoch(loader)   # warm-up: compiles
    epochs = {combo: [] for combo in combos}
    for _ in range(rounds):
        for combo in combos:
            epochs[combo].append(_epoch(loaders[combo]))
    rows = []
    for output, recipe in combos:
        runs, base = epochs[(output, recipe)], epochs[(output, recipes[0])]
        images = runs[0]["images"]
        wall = [run["wall_s"] for run in runs]
        cpu_ms = float(np.median([run["cpu_s"] for run in runs])) * 1e3 / images
        base_cpu_ms = float(np.median([run["cpu_s"] for run in base])) * 1e3 / images
        rows.append({"output": output, "auto_augment": recipe, "images": images,
                     "wall_s": [round(w, 4) for w in wall],
                     "images_per_s": round(images / float(np.median(wall)), 1),
                     "ratio": round(float(np.median([b["wall_s"] / w for b, w in zip(base, wall)])), 3),
                     "cpu_ms_per_image": round(cpu_ms, 4), "ratio_cpu": round(base_cpu_ms / cpu_ms, 3)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=768, help="photographs in the set (made once)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default="bench-out/augment_cost", help="where the JPEG set is kept")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    from .data import DatasetSpec, prepare
    from .photos import PHOTO_FILES

    spec = DatasetSpec(name="photos", title="photographs (scikit-image) 300-500 px, random-resized-crop 224",
                       count=args.count, num_classes=len(PHOTO_FILES), side_range=(300, 500), crop=224, jpeg=True,
                       source="photos")
    data = prepare(spec, Path(args.work_dir), workers=args.workers)
    rows = measure(data.beton, rounds=args.rounds, workers=args.workers)
    print(f"{'output':7s} {'auto_augment':22s} {'img/s':>7s} {'ratio':>6s} {'CPU ms/img':>10s} {'ratio (CPU)':>11s}")
    for row in rows:
        print(f"{row['output']:7s} {row['auto_augment']:22s} {row['images_per_s']:7.0f} {row['ratio']:6.2f} "
              f"{row['cpu_ms_per_image']:10.3f} {row['ratio_cpu']:11.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"count": args.count, "rounds": args.rounds,
                                               "workers": args.workers, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
