"""Conversion speed by source: the same JPEGs from an image folder, parquet shards, WebDataset tar shards and a
Python dataset of their bytes, each written to a ``.beton`` by ``ffmix.convert``.

    python -m ffmix.bench.convert_sources --count 2000 --json docs/convert/<date>-<machine>.json

What is timed, per source: opening it (listing the folder, checking the shards' labels and members, reading a
Python dataset's labels) plus the conversion, as ``ffmix convert`` would spend them. The images are JPEG-mode
conversions, so every image takes the pass-through path (stored as it is), the path where reading the source is
the largest share of the work; each result is checked (all images passed through, labels in order) before its
time counts. One untimed conversion first (FFCV's import and Numba set-up); then ``--repeats`` rounds, the
sources in turn within each round, and the median per source. The ratio is images/s over the folder's.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..system import atomic_write

SOURCES = ("imagefolder", "parquet", "webdataset", "python")
NUM_CLASSES = 10


def make_jpegs(count: int, height: int, width: int, noise: float = 6.0, seed: int = 0) -> List[bytes]:
    """``count`` JPEGs (quality 90) of smooth gradients plus Gaussian noise of std ``noise`` levels: about 10 KB
    each at 192x256 with the default noise, about ImageNet's average of 110 KB at 375x500 with noise 20."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    cols = np.linspace(0, 1, width)[None, :, None]
    encoded = []
    for _ in range(count):
        values = rng.uniform(0, 255, 3) + rng.uniform(-120, 120, 3) * rows + rng.uniform(-120, 120, 3) * cols
        values = values + rng.normal(0, noise, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def write_sources(folder: Path, jpegs: List[bytes], labels: np.ndarray, shards: int) -> Dict[str, object]:
    """The same images as an image folder, parquet shards (Hugging Face layout, 100-row groups) and tar shards."""
    import pyarrow
    import pyarrow.parquet as parquet

    order = np.arange(len(jpegs))
    for label in range(NUM_CLASSES):
        (folder / "folder" / f"class{label:02d}").mkdir(parents=True)
    for index in order:  # the folder's order is by class then name: shards are written in that same order
        (folder / "folder" / f"class{labels[index]:02d}" / f"{index:06d}.jpg").write_bytes(jpegs[index])
    ordered = order[np.lexsort((order, labels))]
    struct = pyarrow.struct([("bytes", pyarrow.binary()), ("path", pyarrow.string())])
    (folder / "parquet").mkdir()
    (folder / "tar").mkdir()
    for shard, part in enumerate(np.array_split(ordered, shards)):
        images = pyarrow.array([{"bytes": jpegs[i], "path": f"{i:06d}.jpg"} for i in part], struct)
        table = pyarrow.table({"image": images, "label": pyarrow.array(labels[part], pyarrow.int64())})
        parquet.write_table(table, folder / "parquet" / f"train-{shard:05d}-of-{shards:05d}.parquet",
                            row_group_size=100)
        with tarfile.open(folder / "tar" / f"train-{shard:06d}.tar", "w") as tar:
            for i in part:
                for name, data in ((f"{i:06d}.jpg", jpegs[i]), (f"{i:06d}.cls", str(labels[i]).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {"imagefolder": str(folder / "folder"), "parquet": str(folder / "parquet" / "train-*.parquet"),
            "webdataset": str(folder / "tar" / f"train-{{000000..{shards - 1:06d}}}.tar"),
            "python": [(jpegs[i], int(labels[i])) for i in ordered]}


def converter(name: str, where, out: Path, workers: int) -> Callable[[], object]:
    from ..convert import convert, convert_dataset
    from ..sources import open_source

    if name == "python":
        return lambda: convert_dataset(where, out, write_mode="jpg", num_workers=workers, force=True)
    return lambda: convert(open_source(where), out, write_mode="jpg", num_workers=workers, force=True)


def run(count: int, height: int, width: int, noise: float, shards: int, workers: int,
        repeats: int) -> Dict[str, object]:
    jpegs = make_jpegs(count, height, width, noise)
    labels = np.arange(count) % NUM_CLASSES
    expected_labels = np.sort(labels)
    with tempfile.TemporaryDirectory(prefix="ffmix-bench-convert-") as scratch:
        folder = Path(scratch)
        sources = write_sources(folder, jpegs, labels, shards)
        converters = {name: converter(name, sources[name], folder / f"{name}.beton", workers) for name in SOURCES}
        converters["imagefolder"]()  # untimed: FFCV's import, Numba's set-up, the page cache
        seconds: Dict[str, List[float]] = {name: [] for name in SOURCES}
        for _ in range(repeats):
            for name in SOURCES:
                started = time.perf_counter()
                meta = converters[name]()
                seconds[name].append(time.perf_counter() - started)
                labels_written = np.repeat(np.arange(NUM_CLASSES), meta.label_counts)
                if meta.write_options["passed_through"] != count or not np.array_equal(labels_written,
                                                                                        expected_labels):
                    raise RuntimeError(f"{name}: the conversion did not store every JPEG as it was")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rates = {name: count / median[name] for name in SOURCES}
    return {"count": count, "image_size": [height, width], "noise": noise, "mean_jpeg_bytes": int(np.mean([len(j) for j in jpegs])),
            "shards": shards, "workers": workers, "repeats": repeats, "seconds": seconds,
            "median_s": median, "images_per_s": rates,
            "ratio_to_folder": {name: rates[name] / rates["imagefolder"] for name in SOURCES},
            "targets": {"parquet": 0.9, "webdataset": 0.9, "python": 0.8}}


def table(result: Dict[str, object]) -> str:
    lines = [f"{'source':<12} {'median s':>9} {'images/s':>9} {'x folder':>9} {'target':>7}"]
    for name in SOURCES:
        target = result["targets"].get(name)
        lines.append(f"{name:<12} {result['median_s'][name]:>9.3f} {result['images_per_s'][name]:>9.0f} "
                     f"{result['ratio_to_folder'][name]:>9.2f} {'' if target is None else f'>= {target}':>7}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from .measure import machine

    parser = argparse.ArgumentParser(prog="python -m ffmix.bench.convert_sources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="images (default %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    parser.add_argument("--noise", type=float, default=6.0,
                        help="noise std in levels: JPEG size (default %(default)s: ~10 KB at 192x256)")
    parser.add_argument("--shards", type=int, default=4, help="parquet and tar shards (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="writer processes (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default %(default)s)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.count, args.size[0], args.size[1], args.noise, args.shards, args.workers, args.repeats)
    report = {"command": " ".join(["python -m ffmix.bench.convert_sources"] + (argv or sys.argv[1:])),
              "machine": machine("cpu"), **result}
    print(f"{report['command']}\n{report['machine']['cpu']}, {report['machine']['cores']} cores, load "
          f"{report['machine']['load_average']}\n{args.count} JPEGs {args.size[0]}x{args.size[1]} "
          f"(~{result['mean_jpeg_bytes'] // 1000} KB), --write-mode jpg, {args.workers} workers\n")
    print(table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.json), (json.dumps(report, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
