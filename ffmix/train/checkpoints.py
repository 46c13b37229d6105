"""The run directory: checking it can take a run, the files of each epoch, and resuming from ``last.pt``.

A resumed run must compute what the uninterrupted one would have. ``last.pt`` therefore records, beside the
model, optimizer, schedule and RNG state, everything that decides the computation: the options (all but
RUNTIME_KEYS), the facts of the training and validation data (shapes, counts, label counts and the sidecar's
fingerprint of each .beton, so other data of the same shape is told apart even though paths may move), the
number of processes and the device type. ``load_checkpoint`` refuses a resume where any of them differs, naming
each difference and the file.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..distributed import Node
from ..errors import FfmixError
from ..metadata import DatasetMeta
from ..models import count_parameters
from ..system import atomic_write
from .config import RUNTIME_KEYS, Config, config_to_argv, flag, run_dir_of
from .report import plot_curves

CHECKPOINT_FORMAT = 2   # 2: with the world size and device type the run computed on
ARTIFACTS = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png")


def prepare_run_dir(config: Config, is_main: bool) -> Path:
    """Check RUN_DIR can take this run (and, on rank 0, create it) without touching an earlier run in it."""
    run_dir = run_dir_of(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise FfmixError(f"--out {run_dir} is a file, not a directory; choose another --out")
    existing = [name for name in ARTIFACTS if (run_dir / name).exists()]
    resumable = (run_dir / "last.pt").is_file()
    if config.resume and not resumable:
        if existing:  # e.g. interrupted in its first epoch: config.json written, no checkpoint yet
            raise FfmixError(f"--resume: the run in {run_dir} finished no epoch, so there is no checkpoint "
                             f"(last.pt) to resume; start it again with --overwrite instead of --resume")
        raise FfmixError(f"--resume: no checkpoint to resume in {run_dir} (last.pt is missing); "
                         "run without --resume to start a new run")
    if existing and not config.resume and not config.overwrite:
        if not resumable:
            raise FfmixError(f"{run_dir} holds a run that finished no epoch ({', '.join(existing)}); pass "
                             "--overwrite to start it again, or choose another --out")
        raise FfmixError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out")
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise FfmixError(f"cannot write to run directory {run_dir} ({exc.strerror}); choose another --out") \
                from None
        if config.overwrite and not config.resume:
            for name in existing:
                (run_dir / name).unlink()
    elif not os.access(nearest_existing(run_dir), os.W_OK):
        raise FfmixError(f"cannot write to run directory {run_dir} (permission denied); choose another --out")
    return run_dir


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def save_epoch(run_dir: Path, model, optimizer, scheduler, config: Config, node: Node,
               metas: Tuple[DatasetMeta, DatasetMeta], history: List[dict], best: dict) -> dict:
    """After an epoch (rank 0): last.pt, best.pt when validation accuracy improved, metrics and curves.
    Every file is written to a temporary name and renamed, so an interruption leaves the previous one.
    ``metas``: the training and validation sets' metadata."""
    latest = history[-1]
    if latest["val_acc"] > best["val_acc"]:
        best = {"val_acc": latest["val_acc"], "epoch": latest["epoch"]}
        save_torch({"format": CHECKPOINT_FORMAT, "epoch": latest["epoch"], "val_acc": latest["val_acc"],
                    "config": dataclasses.asdict(config), "model": model.state_dict()}, run_dir / "best.pt")
    state = {"format": CHECKPOINT_FORMAT, "epoch": latest["epoch"], "config": dataclasses.asdict(config),
             "data": data_facts(metas[0]), "val_data": data_facts(metas[1]), "computation": computation_facts(node),
             "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
             "history": history, "best": best}
    save_torch(state, run_dir / "last.pt")
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    plot_curves(history, run_dir / "curves.png")
    return best


def save_torch(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def write_json(path: Path, content: dict) -> None:
    atomic_write(path, json.dumps(content, indent=2) + "\n")


def data_facts(meta: DatasetMeta) -> dict:
    """What a run depends on in one dataset: its shape and counts, and which file it is (the sidecar's
    fingerprint of the .beton, ``None`` for sidecars older than fingerprints)."""
    return {"num_classes": meta.num_classes, "channels": meta.channels, "num_samples": meta.num_samples,
            "image_shape": list(meta.image_shape) if meta.image_shape else None,
            "label_counts": list(meta.label_counts), "fingerprint": meta.beton_fingerprint}


def data_differences(saved: Optional[dict], meta: DatasetMeta, flag_name: str, path_now: str,
                     path_saved: Optional[str]) -> List[str]:
    """What differs between a checkpoint's facts of one dataset (``saved``) and ``meta``, as one phrase naming
    the file, or none. Facts an older checkpoint lacks are not compared."""
    if saved is None:
        return []
    facts = data_facts(meta)
    changed = [key for key, value in facts.items() if key in saved and saved[key] != value]
    if not changed:
        return []
    shown = [f"{key} {saved[key]!r} then, {facts[key]!r} now" for key in changed
             if key not in ("label_counts", "fingerprint")]
    shown += ["other label counts"] * ("label_counts" in changed) + ["other content (fingerprint)"] * (
        "fingerprint" in changed)
    where = f"the run used {path_saved}" if path_saved and path_saved != path_now else "the run used other data"
    return [f"{flag_name} {path_now} is not the file this run was trained with ({where}; {', '.join(shown)})"]


def computation_facts(node: Node) -> dict:
    """What decides the computation besides the options: the number of processes sets each rank's share of
    every epoch (FFCV's distributed order) and the batch BatchNorm normalises over; the device type sets the
    kernels and the RNG streams."""
    return {"world_size": node.world_size, "device_type": node.device.type}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def settings_before_they_existed(train_meta: DatasetMeta) -> dict:
    """What each setting of ``Config`` was in a checkpoint written before the setting existed: its default (the
    run had none of it), except ``exact_decode`` on a file holding JPEGs, which an ffmix without the region
    decoder always decoded whole, as ``exact_decode=True`` does now (so such a run resumes only with
    ``--exact-decode``, and continues with the same pixels)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    if train_meta.write_options.get("write_mode", "raw") != "raw":
        defaults["exact_decode"] = True
    return defaults


def load_checkpoint(run_dir: Path, config: Config, train_meta: DatasetMeta, val_meta: DatasetMeta,
                    node: Node) -> dict:
    """last.pt of ``run_dir``, checked against this run's settings, data (training and validation), processes
    and device; raises FfmixError naming every difference, so a resumed run never silently continues a
    different one."""
    path = run_dir / "last.pt"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises assorted errors on truncated or foreign files
        raise FfmixError(f"--resume: {path} is not a readable ffmix checkpoint ({type(exc).__name__}); "
                         "start a new run with another --out") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise FfmixError(f"--resume: {path} is not an ffmix checkpoint of format {CHECKPOINT_FORMAT} (an older "
                         "ffmix may have written it); start a new run with another --out")
    defaults = settings_before_they_existed(train_meta)
    saved = {k: checkpoint["config"].get(k, defaults[k]) for k in defaults if k not in RUNTIME_KEYS}
    wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_KEYS}
    differences = [f"--{flag(k)} {saved.get(k)!r} in the checkpoint but {wanted[k]!r} now"
                   for k in wanted if saved.get(k) != wanted[k]]
    saved_config = checkpoint["config"]
    differences += data_differences(checkpoint["data"], train_meta, "--train", config.train,
                                    saved_config.get("train"))
    differences += data_differences(checkpoint.get("val_data"), val_meta, "--val", config.val,
                                    saved_config.get("val"))
    saved_facts = checkpoint["computation"]
    if saved_facts["world_size"] != node.world_size:
        differences.append(f"{saved_facts['world_size']} process(es) in the checkpoint but {node.world_size} now "
                           f"(resume with --nproc {saved_facts['world_size']})")
    if saved_facts["device_type"] != node.device.type:
        differences.append(f"device {saved_facts['device_type']} in the checkpoint but {node.device.type} now "
                           f"(resume with --device {saved_facts['device_type']})")
    if differences:
        raise FfmixError(f"--resume: the run in {run_dir} is incompatible with these options: "
                         f"{'; '.join(differences)}. Resume with the run's options, or choose another --out")
    return checkpoint


def restore(checkpoint: dict, model, optimizer, scheduler, node: Node) -> None:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if node.device.type == "cuda" and "cuda" in checkpoint["rng"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


def describe_run(config: Config, node: Node, model: nn.Module, train_meta: DatasetMeta,
                 val_meta: DatasetMeta) -> dict:
    """config.json: the resolved options, plus the facts needed to compare runs."""
    from importlib.metadata import version  # FFCV's own __version__ is stale (1.0.2 says 0.0.3rc1)

    return {"config": dataclasses.asdict(config), "command": shlex.join(["ffmix", *config_to_argv(config)]),
            "world_size": node.world_size, "device": str(node.device), "precision": config.precision,
            "threads_per_process": node.threads, "parameters": count_parameters(model),
            "train_data": dataclasses.asdict(train_meta), "val_data": dataclasses.asdict(val_meta),
            "versions": {name: version(name) for name in ("ffmix", "torch", "ffcv", "numpy", "numba")}
            | {"python": sys.version.split()[0]}}


def resume_hint(run_dir: Path, history: List[dict]) -> str:
    if not history:
        return "no epoch finished, so there is nothing to resume"
    return f"{run_dir / 'last.pt'} holds epoch {len(history)}: continue with the same options plus --resume"
