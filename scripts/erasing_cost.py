"""What RandomErasing costs in make_loader on the CPU: interleaved turns of loaders with and without it.

    PYTHONPATH=. python scripts/erasing_cost.py PHOTOS.beton [const|rand|pixel] [turns] [epochs per turn]

PHOTOS.beton: the photo set at 224 px (``ffmix bench recipe --datasets photos --work-dir DIR`` leaves it under
DIR/photos). Three loaders (random-resized-crop, flip, MixUp + CutMix, float32 normalised, 2 threads): ``off``
(re_prob=0), ``op`` (re_prob=1e-9: the op runs and erases nothing) and ``on`` (re_prob=0.25). Each turn runs
every loader for some epochs, in alternating order; printed: per-turn throughput ratios to ``off`` and the
median ratio of CPU time per image (all threads), which other load on the machine disturbs much less.
"""
import sys
import time

import numpy as np
import torch

from ffmix.loader import make_loader

PROBABILITIES = {"off": 0.0, "op": 1e-9, "on": 0.25}


def build(beton: str, re_prob: float, mode: str):
    return make_loader(beton, batch_size=128, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, image_size=224,
                       crop="random", hflip=True, re_prob=re_prob, re_mode=mode, device=torch.device("cpu"),
                       num_workers=2, seed=0, drop_last=True)


def timed_turn(loader, epochs: int):
    """(images per second, CPU milliseconds per image) over ``epochs`` epochs."""
    wall, cpu, count = time.perf_counter(), time.process_time(), 0
    for _ in range(epochs):
        for images, _targets in loader:
            count += images.shape[0]
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count * 1e3


def main(beton: str, mode: str = "const", turns: int = 8, epochs: int = 4) -> None:
    loaders = {key: build(beton, p, mode) for key, p in PROBABILITIES.items()}
    for loader in loaders.values():   # compile and warm up
        timed_turn(loader, 1)
    rates = {key: [] for key in loaders}
    cpu_ms = {key: [] for key in loaders}
    keys = list(loaders)
    for turn in range(turns):
        for key in keys if turn % 2 == 0 else keys[::-1]:
            rate, ms = timed_turn(loaders[key], epochs)
            rates[key].append(rate)
            cpu_ms[key].append(ms)
    for key in ("op", "on"):
        ratios = np.array(rates[key]) / np.array(rates["off"])
        cpu_ratio = np.median(np.array(cpu_ms["off"]) / np.array(cpu_ms[key]))
        print(f"{mode} {key}/off throughput per turn {np.round(ratios, 3)} median {np.median(ratios):.3f}; "
              f"CPU time per image off/{key} median {cpu_ratio:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:3]), *(int(v) for v in sys.argv[3:5]))
