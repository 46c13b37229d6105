"""``ffmix bench startup``: seconds from building a loader to its first batch, each in a fresh process.

Loaders: FFCV's plain ``Loader`` (no mixing), FFCV with its ``ImageMixup``/``LabelMixup`` + ``MixupToOneHot``,
and ffmix's ``make_loader`` with MixUp+CutMix. FFCV compiles its pipeline closures in every process; ffmix
keeps its kernels in Numba's on-disk cache, so it is measured:

* warm: the cache filled (one untimed ffmix run first), then the median of several fresh processes;
* cold: Numba's cache folder pointed at a new empty one for each run, so nothing is cached.

FFCV with its ImageMixup (about 10 s of compiling in every process, and in no target) runs once, warm only.

How: the bench starts one clean process (``python -m ffmix.bench.startup``) that imports what every loader
needs (torch, FFCV's loader, decoders and transforms: timed once, apart) and then forks one child per
measurement. A child is a fresh process as far as compiled code goes: nothing of ffmix is loaded in the
parent, and FFCV compiles each loader's pipeline anew. The figure is the child's time from its start to the
first batch: ffmix's own import (its kernels loaded from the cache, or compiled when cold), building the loader
and the first batch. Where ``fork`` is unavailable each child is a new interpreter instead.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

LOADERS = {
    "ffcv_plain": "FFCV Loader, no mixing",
    "ffcv_mixup": "FFCV Loader + ImageMixup/LabelMixup",
    "ffmix": "ffmix make_loader, MixUp+CutMix",
}
CHILD_TIMEOUT_S = 300
PROGRESS_MARK = "ffmix-startup-progress:"


def _shared_imports():
    """What every loader needs; the parent imports it once, before forking."""
    import torch  # noqa: F401
    from ffcv.fields.basics import IntDecoder  # noqa: F401
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder  # noqa: F401
    from ffcv.loader import Loader  # noqa: F401
    from ffcv.transforms import ImageMixup, LabelMixup, MixupToOneHot, ToTensor, ToTorchImage  # noqa: F401


def measure(loader: str, beton: str, batch_size: int, workers: int, num_classes: int,
            cache_dir: Optional[str] = None) -> Dict[str, object]:
    """Build ``loader`` and take its first batch, in this process; the times in seconds.

    ``cache_dir`` points Numba's cache there first (it must happen before ffmix is imported)."""
    started = time.perf_counter()
    if cache_dir is not None:
        import numba
        numba.config.CACHE_DIR = cache_dir
    _shared_imports()   # a no-op after the parent's imports; in a new interpreter, timed apart below
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ImageMixup, LabelMixup, MixupToOneHot, ToTensor, ToTorchImage
    imported = time.perf_counter()

    if loader == "ffmix":
        from ffmix.loader import make_loader
        ffmix_imported = time.perf_counter()
        built_loader = make_loader(beton, batch_size=batch_size, mixup_alpha=0.8, cutmix_alpha=1.0,
                                   num_workers=workers, seed=0)
    else:
        ffmix_imported = imported
        # FFCV's leanest pipelines: decode and hand over (plus its mixup ops for ffcv_mixup)
        mix = loader == "ffcv_mixup"
        image_pipeline = [SimpleRGBImageDecoder()] + ([ImageMixup(0.8, True)] if mix else []) + \
            [ToTensor(), ToTorchImage()]
        label_pipeline = [IntDecoder()] + ([LabelMixup(0.8, True)] if mix else []) + [ToTensor()] + \
            ([MixupToOneHot(num_classes)] if mix else [])
        built_loader = Loader(beton, batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM, seed=0,
                              pipelines={"image": image_pipeline, "label": label_pipeline})
    built = time.perf_counter()
    iterator = iter(built_loader)
    images, targets = next(iterator)
    first = time.perf_counter()
    for _ in iterator:  # finish the epoch so the loader's thread ends cleanly
        pass
    return {"import_s": imported - started, "ffmix_import_s": ffmix_imported - imported,
            "build_s": built - ffmix_imported, "first_batch_s": first - built, "to_first_batch_s": first - imported,
            "batch_shape": list(images.shape), "targets_shape": list(targets.shape)}


def _forked_child(connection, job: Dict[str, object]) -> None:
    try:
        connection.send(measure(**job))
    except BaseException as exc:  # the parent reports it
        connection.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        connection.close()
        os._exit(0)   # no interpreter shutdown in a forked child (threads, atexit hooks of the parent)


def serve(jobs: List[Dict[str, object]]) -> Dict[str, object]:
    """In the clean parent: the shared imports once, then one forked child per job, in order."""
    import multiprocessing

    started = time.perf_counter()
    _shared_imports()
    shared_import_s = time.perf_counter() - started
    context = multiprocessing.get_context("fork")
    results = []
    for number, job in enumerate(jobs, 1):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_forked_child, args=(sender, job))
        process.start()
        sender.close()
        if not receiver.poll(CHILD_TIMEOUT_S):
            process.kill()
            results.append({"error": f"no first batch within {CHILD_TIMEOUT_S} s"})
        else:
            results.append(receiver.recv())
        process.join(30)
        if process.is_alive():
            process.kill()
        print(f"{PROGRESS_MARK} {number}/{len(jobs)} {job['loader']}", file=sys.stderr, flush=True)
    return {"shared_import_s": shared_import_s, "results": results}


def _run_jobs(jobs: List[Dict[str, object]], on_done) -> Dict[str, object]:
    """Run ``jobs`` in fresh processes: a clean forking parent, or one interpreter each without fork.
    ``on_done(text)`` is called as each job finishes."""
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods():
        command = [sys.executable, "-m", "ffmix.bench.startup", "--jobs", json.dumps(jobs)]
        return _run_probe(command, CHILD_TIMEOUT_S * (len(jobs) + 1), on_done)
    results, shared = [], []
    for job in jobs:
        command = [sys.executable, "-m", "ffmix.bench.startup", "--jobs", json.dumps([job]), "--no-fork"]
        answer = _run_probe(command, CHILD_TIMEOUT_S, on_done)
        on_done(job["loader"])
        results += answer["results"]
        shared.append(answer["results"][0].get("import_s", 0.0))
    return {"shared_import_s": statistics.median(shared), "results": results}


def _run_probe(command: List[str], timeout: float, on_done) -> Dict[str, object]:
    """Run one probe process, passing its progress lines on; its last stdout line is the JSON answer."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        other_lines: List[str] = []
        try:
            for line in process.stderr:   # ends when the process closes stderr (exits)
                if line.startswith(PROGRESS_MARK):
                    on_done(line[len(PROGRESS_MARK):].strip())
                else:
                    other_lines.append(line.rstrip())
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(command, timeout)
            process.wait(max(1.0, deadline - time.monotonic()))
        except BaseException:
            process.kill()
            process.wait()
            raise
        output.seek(0)
        stdout = output.read()
    if process.returncode != 0:
        tail = other_lines[-5:] or stdout.strip().splitlines()[-5:]
        raise RuntimeError(f"the start-up probe failed (exit {process.returncode}): " + " | ".join(tail))
    answer = json.loads(stdout.strip().splitlines()[-1])
    for result in answer["results"]:
        if "error" in result:
            raise RuntimeError(f"the start-up probe failed: {result['error']}")
    return answer


def run_startup(*, beton: Path, batch_size: int, workers: int, num_classes: int, warm_runs: int, cold_runs: int,
                fill: bool, progress) -> List[Dict[str, object]]:
    """Rows of the start-up section: per loader, warm (median of ``warm_runs``) and cold (``cold_runs``).

    ``fill``: first run ffmix once, untimed, to fill its cache (not needed when this process already used it).
    """
    common = dict(beton=str(beton), batch_size=batch_size, workers=workers, num_classes=num_classes)
    cold_dirs = []
    jobs: List[Dict[str, object]] = []
    labels: List[tuple] = []
    if fill:
        jobs.append(dict(loader="ffmix", **common))
        labels.append(("ffmix", "fill"))
    for key in LOADERS:
        for _ in range(_warm_runs(key, warm_runs)):
            jobs.append(dict(loader=key, **common))
            labels.append((key, "warm"))
        for _ in range(_cold_runs(key, cold_runs)):
            cold_dirs.append(tempfile.mkdtemp(prefix="ffmix-numba-cold-"))
            jobs.append(dict(loader=key, cache_dir=cold_dirs[-1], **common))
            labels.append((key, "cold"))
    progress.set_postfix_str(f"startup: importing torch and FFCV, then {len(jobs)} fresh processes")
    finished = iter(labels)

    def on_done(text: str) -> None:
        key, state = next(finished, ("?", "?"))
        progress.set_postfix_str(f"startup: {key} ({state}) done")
        if state != "fill":
            progress.update(1)
    try:
        answer = _run_jobs(jobs, on_done)
    finally:
        for folder in cold_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for key, label in LOADERS.items():
        for state in ("warm", "cold"):
            results = [r for (k, s), r in zip(labels, answer["results"]) if k == key and s == state]
            if not results:
                continue
            figures = [r["to_first_batch_s"] for r in results]
            rows.append({"section": "startup", "loader": key, "label": label, "cache": state,
                         "batch_size": batch_size, "workers": workers,
                         "to_first_batch_s": statistics.median(figures), "runs_s": figures,
                         "ffmix_import_s": statistics.median(r["ffmix_import_s"] for r in results),
                         "build_s": statistics.median(r["build_s"] for r in results),
                         "first_batch_s": statistics.median(r["first_batch_s"] for r in results),
                         "import_s": answer["shared_import_s"],
                         "check": _check(results[0], batch_size, num_classes, key)})
    return rows


def _check(result: Dict[str, object], batch_size: int, num_classes: int, key: str) -> Dict[str, object]:
    problems = []
    if result["batch_shape"][0] != batch_size:
        problems.append(f"first batch has {result['batch_shape'][0]} images, expected {batch_size}")
    expected = [batch_size, 1] if key == "ffcv_plain" else [batch_size, num_classes]  # plain FFCV: int labels
    if result["targets_shape"] != expected:
        problems.append(f"targets have shape {result['targets_shape']}")
    return {"ok": not problems, "problems": problems}


def _warm_runs(key: str, warm_runs: int) -> int:
    # FFCV's ImageMixup costs ~10 s of compiling per process and is in no target: one run tells enough
    return min(warm_runs, 1) if key == "ffcv_mixup" else warm_runs


def _cold_runs(key: str, cold_runs: int) -> int:
    # with nothing on disk to cache, FFCV's mixup pipeline starts the same cold as warm
    return 0 if key == "ffcv_mixup" else cold_runs


def startup_steps(warm_runs: int, cold_runs: int) -> int:
    return sum(_warm_runs(key, warm_runs) + _cold_runs(key, cold_runs) for key in LOADERS)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="ffmix bench start-up probe (run by `ffmix bench startup`)")
    parser.add_argument("--jobs", required=True, help="JSON list of measure() keyword arguments")
    parser.add_argument("--no-fork", action="store_true", help="measure in this process (one job)")
    args = parser.parse_args(argv)
    jobs = json.loads(args.jobs)
    if args.no_fork:
        print(json.dumps({"shared_import_s": 0.0, "results": [measure(**job) for job in jobs]}))
    else:
        print(json.dumps(serve(jobs)))


if __name__ == "__main__":
    main()
