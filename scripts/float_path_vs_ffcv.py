#!/usr/bin/env python3
"""ffmix's float path against FFCV's plain Loader on the bench's rgb32 data (32x32 raw), interleaved.

    PYTHONPATH=. python scripts/float_path_vs_ffcv.py [--runs 21] [--batches 48] [--data /tmp/ffmix-rgb32]

Loaders (batch 512, 2 threads, float32 normalised, built as ``ffmix bench`` builds them):
  ffcv     FFCV Loader, no mixing (``alternatives.ffcv_loader(mixup_alpha=0)``): SimpleRGBImageDecoder +
           NormalizeImage (a lookup table) + ToTorchImage. It delivers float32 (N, C, H, W) *views* whose memory
           is channels-last (NormalizeImage writes (N, H, W, C)); one-hot float targets made in the loop.
  mix      ffmix make_loader, MixUp 0.8 + CutMix 1.0 (switch 0.5, mode batch), (N, C, H, W) contiguous
  mix_cl   the same with channels_last=True (the layout FFCV delivers)
  off      ffmix make_loader, no mixing;  off_cl: the same, channels_last=True
Every ffmix loader delivers soft float32 targets made in the pipeline.

After a warm-up epoch each, the loaders take turns (the first one rotates), ``--batches`` per turn after 4 untimed
ones. Printed per loader: the median and best ms/batch over the turns and FFCV's time divided by the loader's
(> 1: faster than FFCV): of the medians, and the median of the per-turn ratios (neighbours in time, so the load
from other processes falls on both alike).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ffmix.bench.alternatives import ffcv_loader
from ffmix.bench.data import prepare, standard_specs
from ffmix.loader import make_loader

BATCH, WORKERS, LEAD_IN = 512, 2, 4


def builders(beton: Path):
    mixed = dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    return {
        "ffcv": lambda: ffcv_loader(beton, batch_size=BATCH, workers=WORKERS, num_classes=10, channels=3, crop=None,
                                    mixup_alpha=0.0, device=torch.device("cpu")),
        "mix": lambda: make_loader(beton, batch_size=BATCH, num_workers=WORKERS, **mixed),
        "mix_cl": lambda: make_loader(beton, batch_size=BATCH, num_workers=WORKERS, channels_last=True, **mixed),
        "off": lambda: make_loader(beton, batch_size=BATCH, num_workers=WORKERS),
        "off_cl": lambda: make_loader(beton, batch_size=BATCH, num_workers=WORKERS, channels_last=True),
    }


def endless(loader):
    while True:
        yield from loader


def layout(images: torch.Tensor) -> str:
    if images.is_contiguous():
        return "NCHW contiguous"
    return "channels-last memory" if images.is_contiguous(memory_format=torch.channels_last) else "strided"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--batches", type=int, default=48)
    parser.add_argument("--data", type=Path, default=Path("/tmp/ffmix-rgb32"))
    parser.add_argument("--loaders", default="ffcv,mix,mix_cl,off,off_cl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = next(s for s in standard_specs(quick=False) if s.name == "rgb32")
    dataset = prepare(spec, args.data, WORKERS)
    names = args.loaders.split(",")
    make = builders(dataset.beton)
    streams = {}
    for name in names:
        loader = make[name]()
        streams[name] = endless(loader)
        for _ in range(len(loader)):   # warm-up epoch: compiles, starts threads
            images, targets = next(streams[name])
        print(f"{name:7s} delivers {images.dtype} {tuple(images.shape)} ({layout(images)}), targets {targets.dtype} "
              f"{tuple(targets.shape)}", flush=True)
    times = {name: [] for name in names}
    for turn in range(args.runs):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            stream = streams[name]
            for _ in range(LEAD_IN):
                next(stream)
            started = time.perf_counter()
            for _ in range(args.batches):
                next(stream)
            times[name].append((time.perf_counter() - started) / args.batches * 1e3)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in names:
        line = f"{name:7s} median {medians[name]:.3f} ms/batch, best {min(times[name]):.3f}"
        if "ffcv" in times and name != "ffcv":
            paired = statistics.median(f / t for f, t in zip(times["ffcv"], times[name]))
            line += f"; FFCV time / this: medians {medians['ffcv'] / medians[name]:.3f}, per turn {paired:.3f}"
        print(line)


if __name__ == "__main__":
    main()
