"""The sections of ``ffmix bench``, one record each (``SECTIONS``, in the order they run and print).

A section says which datasets it needs, how many progress steps it takes, how it runs (to a list of result
rows, or ``None`` when it has nothing to measure, saying why in ``plan.skipped``) and how its rows print.
``ffmix bench`` (``__init__.run``) prepares the datasets the chosen sections need and runs them in turns; the
report prints each section's rows with its ``text``. What the sections measure is in their own modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from . import report

if TYPE_CHECKING:
    import torch

    from .data import BenchDataset


@dataclass
class Plan:
    """What one ``ffmix bench`` run measures with (``settings``: the parsed options, see ``__init__._settings``)
    and what it has prepared so far: the datasets by name, their probe twins, the sections' skip notes."""

    settings: Dict[str, object]
    device: "torch.device"
    fmnist: Path
    datasets: Dict[str, "BenchDataset"] = field(default_factory=dict)
    probes: Dict[str, "BenchDataset"] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.settings["quick"])

    @property
    def workers(self) -> int:
        return int(self.settings["workers"])

    @property
    def runs(self) -> int:
        return int(self.settings["runs"])

    def batch_size_for(self, spec) -> int:
        return int(self.settings["jpeg_batch_size"] if spec.jpeg else self.settings["batch_size"])

    # scaling: 1, 2 and all workers, two batch sizes; --quick: ffmix only, one batch size
    @property
    def scaling_workers(self) -> List[int]:
        return sorted({1, min(2, self.workers), self.workers})

    @property
    def scaling_batches(self) -> List[int]:
        batch_size = int(self.settings["batch_size"])
        return [batch_size] if self.quick else sorted({128, batch_size})

    def scaling_pipelines(self):
        """(grid pipelines, dataset-size pipelines) of the scaling section."""
        from . import e2e

        return (("ffmix",), ("ffmix",)) if self.quick else (e2e.GRID_PIPELINES, e2e.SIZE_PIPELINES)


@dataclass(frozen=True)
class Section:
    """One part of ``ffmix bench``: ``run(plan, progress)`` gives its rows (or ``None``: nothing measured, the
    reason in ``plan.skipped``), ``steps(plan)`` its progress steps, ``text(rows)`` its tables;
    ``datasets(plan)``: the names of the datasets it reads, ``probes``: whether it checks values on their
    probe twins."""

    name: str
    run: Callable[[Plan, object], Optional[List[dict]]]
    steps: Callable[[Plan], int]
    text: Callable[[List[dict]], str]
    datasets: Callable[[Plan], Sequence[str]] = lambda plan: ()
    probes: bool = False


# ------------------------------------------------------------------------------------------------ runs

def _run_ops(plan: Plan, progress) -> List[dict]:
    from . import ops

    # one batch in memory is steady from the second call: shorter runs suffice
    return ops.run_ops(quick=plan.quick, threads=plan.workers, runs=plan.runs,
                       min_run_s=min(plan.settings["min_run_s"], 0.2), progress=progress)


def _ops_steps(plan: Plan) -> int:
    from . import ops

    return ops.progress_steps(plan.quick)


def _run_augment_ops(plan: Plan, progress) -> List[dict]:
    from . import augment_ops

    # one batch in memory is steady from the second call: shorter runs suffice (as for ops)
    return augment_ops.run_augment_ops(quick=plan.quick, threads=plan.workers, runs=plan.runs,
                                       min_run_s=min(plan.settings["min_run_s"], 0.2), progress=progress)


def _augment_ops_steps(plan: Plan) -> int:
    from . import augment_ops

    return augment_ops.progress_steps(plan.quick)


def _augment_ops_text(rows: List[dict]) -> str:
    from .augment_ops import augment_ops_text

    return augment_ops_text(rows)


def _e2e_datasets(plan: Plan) -> Sequence[str]:
    return list(plan.settings["datasets"])


def _run_e2e(plan: Plan, progress) -> List[dict]:
    from . import e2e

    chosen = [plan.datasets[name] for name in plan.settings["datasets"]]
    batch_sizes = {d.name: plan.batch_size_for(d.spec) for d in chosen}
    return e2e.run_e2e(chosen, pipelines=plan.settings["pipelines"], batch_sizes=batch_sizes, workers=plan.workers,
                       runs=plan.runs, min_run_s=plan.settings["min_run_s"], device=plan.device, progress=progress,
                       probes=plan.probes)


def _e2e_steps(plan: Plan) -> int:
    from . import e2e

    return e2e.e2e_steps(plan.settings["datasets"], plan.settings["pipelines"], plan.runs, probes=True)


def _run_scaling(plan: Plan, progress) -> List[dict]:
    from . import e2e

    grid, sizes = plan.scaling_pipelines()
    return e2e.run_scaling(plan.datasets["rgb32"], worker_counts=plan.scaling_workers,
                           batch_sizes=plan.scaling_batches, size_batch=plan.settings["batch_size"],
                           max_workers=plan.workers, runs=min(plan.runs, 3), min_run_s=plan.settings["min_run_s"],
                           device=plan.device, progress=progress, grid_pipelines=grid, size_pipelines=sizes)


def _scaling_steps(plan: Plan) -> int:
    from . import e2e

    grid, sizes = plan.scaling_pipelines()
    return e2e.scaling_steps(plan.scaling_workers, plan.scaling_batches, min(plan.runs, 3), grid, sizes)


def _run_startup(plan: Plan, progress) -> Optional[List[dict]]:
    import sys

    from . import startup

    warm, cold = plan.settings["warm_runs"], plan.settings["cold_runs"]
    if warm + cold == 0:
        plan.skipped["startup"] = "--warm-runs 0 and --cold-runs 0"
        return None
    rgb = plan.datasets["rgb32"]
    rows = startup.run_startup(beton=rgb.beton, batch_size=plan.settings["batch_size"], workers=plan.workers,
                               num_classes=rgb.num_classes, warm_runs=warm, cold_runs=cold, progress=progress,
                               fill="ffmix.ops.batch" not in sys.modules)  # this process filled the cache already
    if cold == 0:
        plan.skipped["startup, cold cache"] = "--cold-runs 0 (the --quick default: a cold ffmix compile takes " \
                                              "tens of seconds)"
    return rows


def _startup_steps(plan: Plan) -> int:
    from . import startup

    return startup.startup_steps(plan.settings["warm_runs"], plan.settings["cold_runs"])


def _run_collate(plan: Plan, progress) -> List[dict]:
    from . import collate

    return collate.run_collate(quick=plan.quick, fmnist=plan.fmnist, batch_size=plan.settings["batch_size"],
                               workers=plan.workers, runs=plan.runs, min_run_s=plan.settings["min_run_s"],
                               progress=progress)


def _collate_steps(plan: Plan) -> int:
    from . import collate

    return collate.collate_steps(plan.runs)


def _photos_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def _recipe_datasets(plan: Plan) -> Sequence[str]:
    from .recipe import DATASET

    return (DATASET,) if _photos_installed() and plan.device.type == "cpu" else ()


def _run_recipe(plan: Plan, progress) -> Optional[List[dict]]:
    from . import recipe

    if plan.device.type != "cpu":
        plan.skipped["recipe"] = "ffmix erases on the CPU float path only; run it without --device"
        return None
    if not _photos_installed():
        plan.skipped["recipe"] = "the photo set needs scikit-image (pip install scikit-image, or ffmix's bench extra)"
        return None
    for key, pipeline in recipe.PIPELINES.items():
        if not pipeline.available():
            plan.skipped[f"recipe {key}"] = f"{pipeline.requires} is not installed ({pipeline.install_hint})"
    dataset = plan.datasets[recipe.DATASET]
    return recipe.run_recipe(dataset, batch_size=plan.batch_size_for(dataset.spec), workers=plan.workers,
                             runs=plan.runs, min_run_s=plan.settings["min_run_s"], device=plan.device,
                             progress=progress)


def _recipe_steps(plan: Plan) -> int:
    from . import recipe

    return recipe.recipe_steps(plan.runs) if _recipe_datasets(plan) else 0


def _recipe_text(rows: List[dict]) -> str:
    from .recipe import recipe_text

    return recipe_text(rows)


SECTIONS = (
    Section("ops", run=_run_ops, steps=_ops_steps, text=report.ops_text),
    Section("augment_ops", run=_run_augment_ops, steps=_augment_ops_steps, text=_augment_ops_text),
    Section("e2e", run=_run_e2e, steps=_e2e_steps, text=report.e2e_text, datasets=_e2e_datasets, probes=True),
    Section("scaling", run=_run_scaling, steps=_scaling_steps, text=report.scaling_text,
            datasets=lambda plan: ("rgb32",)),
    Section("startup", run=_run_startup, steps=_startup_steps, text=report.startup_text,
            datasets=lambda plan: ("rgb32",)),
    Section("collate", run=_run_collate, steps=_collate_steps, text=report.collate_text),
    Section("recipe", run=_run_recipe, steps=_recipe_steps, text=_recipe_text, datasets=_recipe_datasets),
)
NAMES = tuple(section.name for section in SECTIONS)
