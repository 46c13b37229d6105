"""Crop-and-resize speed: ffmix's ``resize_box`` against OpenCV's INTER_AREA, one thread, interleaved.

Images are photographs 300-500 px on the longer side (``photos.photo_image``; random noise when
scikit-image is missing, which the JSON says); boxes are torchvision's random-resized-crop draws (area 8-100 %,
W / H in [3/4, 4/3], integer sides, as FFCV's decoder gives them) resized to each output size. OpenCV
resizes the cropped view (``cv2.setNumThreads(1)``), as libffcv's ``resize`` does; ffmix's kernel gets the
same integer box. Each is timed twice: called from Python per image (``cv2.resize`` as the issue measured it,
and ``resize_box`` through Numba's dispatcher), and from compiled code (an njit loop over the images calling
``resize_box``, and one calling libffcv's ``resize``, FFCV's OpenCV INTER_AREA, through the intrinsic
``decode_kernels.decode_one`` uses today): the second pair is what a decoder sees. All four run over the same
images in alternating order, repeat after repeat; the figures are the median repeat's ms per image, by the
wall clock and by the process's CPU time (steadier on a shared machine: time spent waiting for a core is not
counted), and the ratios are OpenCV's time over ffmix's.

    python -m ffmix.bench.resize --json docs/bench/<date>-<machine>-resize.json
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List, Tuple

import numpy as np

from numba import njit

from ..ffcv_compat import call_resize, libffcv_functions
from ..ops.resize_kernels import RESIZED, resize_box, resize_work_bytes

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


@njit(cache=True, nogil=True)
def _ffmix_loop(table, out_at, out_height, out_width, work_at, work_bytes):
    failed = 0
    for i in range(table.shape[0]):
        failed += resize_box(table[i, 0], table[i, 1], table[i, 2], table[i, 3], np.float64(table[i, 4]),
                             np.float64(table[i, 5]), np.float64(table[i, 6]), np.float64(table[i, 7]), out_at,
                             out_height, out_width, work_at, work_bytes) != RESIZED
    return failed


@njit(cache=True, nogil=True)
def _libffcv_loop(table, out_at, out_height, out_width, resize_at):
    for i in range(table.shape[0]):
        top, left = table[i, 4], table[i, 5]
        call_resize(resize_at, table[i, 0], table[i, 2], table[i, 3], top, top + table[i, 6], left,
                    left + table[i, 7], out_at, out_height, out_width)


def case_table(cases: List[Case]) -> np.ndarray:
    """int64 (count, 8): address, row bytes, height, width, top, left, box height, box width."""
    return np.array([(image.ctypes.data, image.strides[0], image.shape[0], image.shape[1], top, left, box_height,
                      box_width) for image, top, left, box_height, box_width in cases], np.int64).reshape(-1, 8)


def run_ffmix_compiled(table: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
    assert _ffmix_loop(table, out.ctypes.data, out.shape[0], out.shape[1], work.ctypes.data, work.nbytes) == 0


def run_libffcv(table: np.ndarray, out: np.ndarray, resize_at: int) -> None:
    _libffcv_loop(table, out.ctypes.data, out.shape[0], out.shape[1], resize_at)


def run_opencv(cases: List[Case], out: np.ndarray) -> None:
    import cv2

    size = (out.shape[1], out.shape[0])
    for image, top, left, box_height, box_width in cases:
        cv2.resize(image[top:top + box_height, left:left + box_width], size, dst=out, interpolation=cv2.INTER_AREA)


def box_class(box_height: int, box_width: int, size: int) -> str:
    """Whether the box shrinks in both axes (OpenCV's area path), grows in both, or one of each (OpenCV's
    linear path for both)."""
    shrink = (box_height >= size) + (box_width >= size)
    return "down_both" if shrink == 2 else "up_both" if shrink == 0 else "mixed"


def shape_counts(cases: List[Case], size: int) -> Dict[str, int]:
    counts = {"down_both": 0, "up_both": 0, "mixed": 0}
    for _, _, _, box_height, box_width in cases:
        counts[box_class(box_height, box_width, size)] += 1
    return counts


def by_class(cases: List[Case], out: np.ndarray, work: np.ndarray, resize_at: int, repeats: int) -> Dict:
    """CPU ms per image of the compiled loops for each class of box alone (interleaved, median)."""
    size = out.shape[0]
    rows = {}
    for name in ("down_both", "up_both", "mixed"):
        table = case_table([case for case in cases if box_class(case[3], case[4], size) == name])
        if not len(table):
            continue
        ffmix_ms, libffcv_ms = [], []
        for _ in range(repeats):
            for run, times in ((lambda: run_ffmix_compiled(table, out, work), ffmix_ms),
                               (lambda: run_libffcv(table, out, resize_at), libffcv_ms)):
                start = time.process_time()
                run()
                times.append((time.process_time() - start) / len(table) * 1e3)
        ffmix_median, libffcv_median = float(np.median(ffmix_ms)), float(np.median(libffcv_ms))
        rows[name] = {"boxes": len(table), "ffmix_ms_per_image": round(ffmix_median, 4),
                      "libffcv_ms_per_image": round(libffcv_median, 4),
                      "libffcv_over_ffmix": round(libffcv_median / ffmix_median, 2)}
    return rows


def bench_size(cases: List[Case], size: int, repeats: int) -> Dict[str, object]:
    """ms per image (median of ``repeats`` interleaved repeats) of both, and the ratio."""
    import cv2

    cv2.setNumThreads(1)
    out = np.empty((size, size, 3), np.uint8)
    largest = max(max(case[0].shape[0] for case in cases), max(case[0].shape[1] for case in cases))
    work = np.empty(resize_work_bytes(largest, largest, size, size), np.uint8)
    table = case_table(cases)
    resize_at = libffcv_functions()["resize"]
    runs = {"ffmix": lambda: run_ffmix(cases, out, work), "opencv": lambda: run_opencv(cases, out),
            "ffmix_compiled": lambda: run_ffmix_compiled(table, out, work),
            "libffcv_compiled": lambda: run_libffcv(table, out, resize_at)}
    for run in runs.values():                          # compile / load from Numba's cache, warm up
        run()
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append((time.perf_counter() - start) / len(cases) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) / len(cases) * 1e3)
    row = {"size": size, "boxes": shape_counts(cases, size)}
    for clock, timings in (("wall", wall), ("cpu", cpu)):
        ms = {name: float(np.median(values)) for name, values in timings.items()}
        row[clock] = {f"{name}_ms_per_image": round(value, 4) for name, value in ms.items()}
        row[clock]["opencv_over_ffmix"] = round(ms["opencv"] / ms["ffmix"], 2)
        row[clock]["libffcv_over_ffmix_compiled"] = round(ms["libffcv_compiled"] / ms["ffmix_compiled"], 2)
    row["cpu_by_class"] = by_class(cases, out, work, resize_at, repeats)
    return row



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
        for clock in ("wall", "cpu"):
            times = row[clock]
            print(f"{row['size']:>4} px, {clock:>4}: from Python: ffmix {times['ffmix_ms_per_image']:.3f}, cv2 "
                  f"INTER_AREA {times['opencv_ms_per_image']:.3f} ms/image ({times['opencv_over_ffmix']:.2f}x); "
                  f"from compiled code: ffmix {times['ffmix_compiled_ms_per_image']:.3f}, libffcv "
                  f"{times['libffcv_compiled_ms_per_image']:.3f} ms/image "
                  f"({times['libffcv_over_ffmix_compiled']:.2f}x)")
        for name, times in row["cpu_by_class"].items():
            print(f"      {name:>9} ({times['boxes']} boxes), cpu, compiled: ffmix {times['ffmix_ms_per_image']:.3f}, "
                  f"libffcv {times['libffcv_ms_per_image']:.3f} ms/image ({times['libffcv_over_ffmix']:.2f}x)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
