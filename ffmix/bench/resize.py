"""Crop-and-resize speed: ffmix's ``resize_box`` against OpenCV's INTER_AREA, one thread, interleaved.

Images are photographs 300-500 px on the longer side (``photos.photo_image``; random noise when
scikit-image is missing, which the JSON says); boxes are torchvision's random-resized-crop draws (area 8-100 %,
W / H in [3/4, 4/3], integer sides, as FFCV's decoder gives them) resized to each output size. OpenCV
resizes the cropped view (``cv2.setNumThreads(1)``), as libffcv's ``resize`` does; ffmix's kernel gets the
same integer box. Both run over the same images in alternating order, repeat after repeat; the figure is the
median repeat's ms per image, and the ratio is OpenCV's time over ffmix's.

    python -m ffmix.bench.resize --json docs/bench/<date>-<machine>-resize.json
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Tuple

import numpy as np

from ..ops.resize_kernels import resize_box, resize_work_bytes, RESIZED

SIDE_RANGE = (300, 500)
SCALE, LOG_RATIO = (0.08, 1.0), (np.log(3 / 4), np.log(4 / 3))

Case = Tuple[np.ndarray, int, int, int, int]      # image, top, left, box height, box width


def crop_box(rng: np.random.Generator, height: int, width: int) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (ten tries, then the whole image): top, left, height, width."""
    for _ in range(10):
        area = height * width * rng.uniform(*SCALE)
        ratio = np.exp(rng.uniform(*LOG_RATIO))
        box_width, box_height = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < box_width <= width and 0 < box_height <= height:
            return (int(rng.integers(0, height - box_height + 1)), int(rng.integers(0, width - box_width + 1)),
                    box_height, box_width)
    return 0, 0, height, width


def make_cases(count: int, seed: int) -> Tuple[List[Case], str]:
    """``count`` (image, box) pairs and where the images came from."""
    from ..errors import FfmixError
    from .photos import photo_image

    rng = np.random.default_rng(seed)
    cases = []
    source = "photos (scikit-image)"
    for i in range(count):
        try:
            image = photo_image(i, seed + i, SIDE_RANGE)
        except FfmixError:
            source = "random noise (scikit-image not installed)"
            height, width = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))
            image = rng.integers(0, 256, (height, width, 3), np.uint8)
        cases.append((np.ascontiguousarray(image),) + crop_box(rng, *image.shape[:2]))
    return cases, source


def run_ffmix(cases: List[Case], out: np.ndarray, work: np.ndarray) -> None:
    out_height, out_width = out.shape[:2]
    out_at, work_at, work_bytes = out.ctypes.data, work.ctypes.data, work.nbytes
    for image, top, left, box_height, box_width in cases:
        status = resize_box(image.ctypes.data, image.strides[0], image.shape[0], image.shape[1], float(top),
                            float(left), float(box_height), float(box_width), out_at, out_height, out_width,
                            work_at, work_bytes)
        assert status == RESIZED


def run_opencv(cases: List[Case], out: np.ndarray) -> None:
    import cv2

    size = (out.shape[1], out.shape[0])
    for image, top, left, box_height, box_width in cases:
        cv2.resize(image[top:top + box_height, left:left + box_width], size, dst=out, interpolation=cv2.INTER_AREA)


def shape_counts(cases: List[Case], size: int) -> Dict[str, int]:
    """How many boxes shrink in both axes, grow in both, or one of each."""
    counts = {"down_both": 0, "up_both": 0, "mixed": 0}
    for _, _, _, box_height, box_width in cases:
        shrink = (box_height >= size) + (box_width >= size)
        counts["down_both" if shrink == 2 else "up_both" if shrink == 0 else "mixed"] += 1
    return counts


def bench_size(cases: List[Case], size: int, repeats: int) -> Dict[str, object]:
    """ms per image (median of ``repeats`` interleaved repeats) of both, and the ratio."""
    import cv2

    cv2.setNumThreads(1)
    out = np.empty((size, size, 3), np.uint8)
    largest = max(max(case[0].shape[0] for case in cases), max(case[0].shape[1] for case in cases))
    work = np.empty(resize_work_bytes(largest, largest, size, size), np.uint8)
    run_ffmix(cases[:1], out, work)                      # compile / load from Numba's cache
    run_opencv(cases[:1], out)
    timings = {"ffmix": [], "opencv": []}
    for repeat in range(repeats):
        order = ("ffmix", "opencv") if repeat % 2 == 0 else ("opencv", "ffmix")
        for name in order:
            start = time.perf_counter()
            run_ffmix(cases, out, work) if name == "ffmix" else run_opencv(cases, out)
            timings[name].append((time.perf_counter() - start) / len(cases) * 1e3)
    ffmix_ms, opencv_ms = float(np.median(timings["ffmix"])), float(np.median(timings["opencv"]))
    return {"size": size, "ffmix_ms_per_image": round(ffmix_ms, 4), "opencv_ms_per_image": round(opencv_ms, 4),
            "opencv_over_ffmix": round(opencv_ms / ffmix_ms, 2), "boxes": shape_counts(cases, size)}


def main(argv=None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .measure import machine, version_of

    cases, source = make_cases(args.images, args.seed)
    results = [bench_size(cases, size, args.repeats) for size in args.sizes]
    report = {"machine": machine("cpu"), "opencv": version_of("opencv-python"),
              "config": {"images": args.images, "repeats": args.repeats, "seed": args.seed, "source": source,
                         "side_range": SIDE_RANGE, "threads": 1},
              "results": results}
    for row in results:
        print(f"{row['size']:>4} px: ffmix {row['ffmix_ms_per_image']:.3f} ms/image, OpenCV INTER_AREA "
              f"{row['opencv_ms_per_image']:.3f} ms/image, OpenCV / ffmix {row['opencv_over_ffmix']:.2f}  "
              f"{row['boxes']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
