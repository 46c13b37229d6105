"""How far ffmix's default JPEG crop decoding (only the box's region, DCT-scaled) lies from the exact one (the whole
image decoded at full size, the box resized with OpenCV's INTER_AREA: FFCV's pixels), and what each costs.

    python -m ffmix.bench.decode_quality --json docs/decoding/2026-12-02-xeon-2c-decode-quality.json

Over photographs (``photos.photo_image``: longer side 300-500 px, JPEG quality 90), random-resized-crop boxes
(torchvision's ranges, ffmix's seeded draws) are decoded to each output size both ways. Per output size and DCT
scale (1, 1/2, 1/4, 1/8: the one the default path picks for the box) it reports the count, the mean absolute
difference (levels of 255) and the PSNR (dB) of the default against the exact pixels; and per image, on one
thread, the time of each path, measured interleaved (default, exact, exact, default, ...), with their ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..ffcv_compat import JPEG_MODE, libffcv_functions
from ..native import jpeg_region_function, unavailable_reason
from ..ops import augment
from ..ops.decode_kernels import DECODED, WINDOW_BYTES, dct_denominator, decode_one
from ..ops.decoders import region_work_bytes
from .photos import photo_image

SIZES = (224, 160, 64, 32)        # 64, 32: small outputs, where the 1/4 and 1/8 scales occur on these photos
SCALES = (1, 2, 4, 8)
SPEED_SIZES = (224, 160, 64)
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
SCALE = (0.08, 1.0)


def photo_jpegs(count: int, side_range=(300, 500), quality: int = 90,
                seed: int = 0) -> List[Tuple[np.ndarray, int, int]]:
    """``count`` photographs as JPEG bytes: [(uint8 bytes, height, width)]."""
    import cv2

    out = []
    for index in range(count):
        image = photo_image(index, seed * 100_003 + index, side_range)
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append((data.ravel(), image.shape[0], image.shape[1]))
    return out


def box_decoder(jpegs, size: int) -> "BoxDecoder":
    """A ``BoxDecoder`` with scratch for any of ``jpegs`` cropped to size x size."""
    heights, widths = np.array([h for _, h, _ in jpegs]), np.array([w for _, _, w in jpegs])
    return BoxDecoder(int((heights * widths).max()), region_work_bytes(heights, widths, size, size))


class BoxDecoder:
    """Calls the decoders' kernel (``decode_one``) for one JPEG and box, as the crop decoders do (scratch:
    ``largest_pixels`` per image, ``work_bytes`` for the resampler: ``decoders.region_work_bytes``)."""

    def __init__(self, largest_pixels: int, work_bytes: int = 0):
        functions = libffcv_functions()
        self.imdecode_at, self.resize_at = functions["imdecode"], functions["resize"]
        self.region_at = jpeg_region_function()
        if self.region_at is None:
            raise RuntimeError(f"the region decoder is not available: {unavailable_reason()}")
        self.work_bytes = work_bytes
        self.scratch = np.zeros(WINDOW_BYTES + work_bytes + 3 * largest_pixels + 64, np.uint8)

    def decode(self, data, height, width, box, out, exact: bool) -> int:
        """Decode ``box`` (top, left, height, width) of the JPEG into ``out`` (uint8 (H, W, 3)); the status."""
        top, left, box_height, box_width = box
        return decode_one(data.ctypes.data, data.size, height, width, JPEG_MODE, top, left, box_height, box_width,
                          out.ctypes.data, out.shape[0], out.shape[1], self.scratch.ctypes.data, self.scratch.size,
                          self.work_bytes, 1 if exact else 8, int(exact), self.imdecode_at, self.resize_at,
                          self.region_at)


def crop_box(seed: int, index: int, height: int, width: int) -> Tuple[int, int, int, int]:
    key = augment.sample_key(seed, 0, index, augment.CROP_STREAM)
    top, left, box_height, box_width, _ = augment.random_crop_box(np.uint64(key), height, width, *SCALE, *LOG_RATIO)
    return int(top), int(left), int(box_height), int(box_width)


def quality(jpegs, sizes: Sequence[int] = SIZES, seed: int = 0) -> List[Dict]:
    """Rows (size, scale, count, mad, psnr) of the default path against the exact one."""
    sums = {(size, d): [0, 0.0, 0.0] for size in sizes for d in SCALES}   # count, sum |diff|, sum diff^2
    for size in sizes:
        decoder = box_decoder(jpegs, size)
        default, exact = (np.zeros((size, size, 3), np.uint8) for _ in range(2))
        for index, (data, height, width) in enumerate(jpegs):
            box = crop_box(seed, index, height, width)
            if decoder.decode(data, height, width, box, default, False) != DECODED or \
                    decoder.decode(data, height, width, box, exact, True) != DECODED:
                raise RuntimeError(f"photo {index} did not decode")
            difference = default.astype(np.float64) - exact
            entry = sums[size, dct_denominator(box[2], box[3], size, size, 8)]
            entry[0] += 1
            entry[1] += np.abs(difference).mean()
            entry[2] += (difference ** 2).mean()
    rows = []
    for (size, denom), (count, absolute, squared) in sums.items():
        mad = absolute / count if count else None
        mse = squared / count if count else None
        psnr = None if not count else (math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse))
        rows.append({"size": size, "scale": f"1/{denom}", "count": count, "mad": mad, "psnr": psnr})
    return rows


def speed(jpegs, size: int = 224, rounds: int = 5, seed: int = 0) -> Dict:
    """Median over ``rounds`` of the per-image time (ms) of each path, one thread, interleaved."""
    decoder = box_decoder(jpegs, size)
    out = np.zeros((size, size, 3), np.uint8)
    boxes = [crop_box(seed, index, h, w) for index, (_, h, w) in enumerate(jpegs)]
    for index, (data, height, width) in enumerate(jpegs[:4]):        # compiled and warm
        decoder.decode(data, height, width, boxes[index], out, False)
        decoder.decode(data, height, width, boxes[index], out, True)
    times = {"default": [], "exact": []}
    for round_ in range(rounds):
        spent = {"default": 0.0, "exact": 0.0}
        for index, (data, height, width) in enumerate(jpegs):
            order = ("default", "exact") if (index + round_) % 2 == 0 else ("exact", "default")
            for path in order:
                start = time.perf_counter()
                decoder.decode(data, height, width, boxes[index], out, path == "exact")
                spent[path] += time.perf_counter() - start
        for path in spent:
            times[path].append(1e3 * spent[path] / len(jpegs))
    default, exact = float(np.median(times["default"])), float(np.median(times["exact"]))
    return {"size": size, "images": len(jpegs), "rounds": rounds, "default_ms": default, "exact_ms": exact,
            "exact_over_default": exact / default}


def table(rows: List[Dict]) -> str:
    lines = ["| output | DCT scale | boxes | MAD (levels) | PSNR (dB) |", "|---|---|---|---|---|"]
    for row in rows:
        mad = "-" if row["mad"] is None else f"{row['mad']:.3f}"
        psnr = "-" if row["psnr"] is None else ("inf (identical)" if math.isinf(row["psnr"]) else f"{row['psnr']:.1f}")
        lines.append(f"| {row['size']} | {row['scale']} | {row['count']} | {mad} | {psnr} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffmix.bench.decode_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300, help="photographs (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    import numba

    numba.set_num_threads(1)
    jpegs = photo_jpegs(args.images)
    result = {"images": args.images, "side_range": [300, 500], "quality": 90, "rows": quality(jpegs),
              "speed": [speed(jpegs, size=size, rounds=args.rounds) for size in SPEED_SIZES]}
    print(table(result["rows"]))
    for s in result["speed"]:
        print(f"per image at {s['size']} px, one thread: default {s['default_ms']:.3f} ms, exact {s['exact_ms']:.3f} "
              f"ms (exact / default = {s['exact_over_default']:.2f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=lambda v: None)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
