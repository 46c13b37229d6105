"""Set-up shared by every test module.

Many tests call ``gc.collect()`` between batches (allocation churn: memory that compiled code should no longer
read is freed and reused). A full collection walks every object the collector tracks, and once torch, numba,
FFCV and the test modules are imported that is over 300,000 objects: about 0.17 s a call, most of the time of
tests that read a few dozen batches. Those imported objects live as long as the process anyway, so after
collection they are moved out of the collector's sight with ``gc.freeze()``. Everything a test builds (loaders,
pipelines, buffers, module fixtures) is made after that and is collected as before, so each ``gc.collect()``
frees exactly what it freed before, only without re-walking the imports.

Wall time on few cores (``make test`` runs ``pytest -n auto``: two workers on a 2-core CI machine):

- OpenMP threads that wait for work sleep instead of spinning. Each worker trains with torch on every core
  while the other worker does too; spinning threads then steal the cores the other process's threads need
  (on a loaded 2-core machine, two processes training the tiny model each took 1.5x as long). Thread counts
  stay as they were, so every result is the same.
- The long tests start first and each worker takes one test at a time. xdist hands out tests in collection
  order, in chunks of up to an eighth of the suite: the long training tests (``test_train.py`` sorts last)
  came last, and whichever worker drew the last of them ran on alone.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from ffmix import kernel_cache

# Read by libgomp when torch (or numba's OpenMP layer) loads it, which is after this file is imported; the
# subprocesses tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests' own cached Numba helpers (e.g. test_auto_augment._apply_each) compile ffmix's kernels into their
# cache: it is refreshed when ffmix or the tests change, as ffmix refreshes its own (ffmix/kernel_cache.py).
_TESTS = Path(__file__).resolve().parent
kernel_cache.refresh(_TESTS, kernel_cache.sources_digest([kernel_cache.PACKAGE, _TESTS]))

# The longest tests, longest first (``pytest --durations``, 2026-12-02). A module holding one of them runs
# before modules that do not, in the order of its longest test, so a module's tests stay together (its
# module-scoped fixtures are built once per worker); inside a module the listed tests go first.
LONG_TESTS = [
    "tests/test_core.py::test_a_program_that_exits_mid_epoch_exits_cleanly",
    "tests/test_gpu_offline.py::test_rehearsal_builds_ffcv_from_the_bundle_offline",
    "tests/test_collate.py::test_bench_collate_quick_runs_and_checks_every_path",
    "tests/test_train.py::test_resume_with_another_nproc_is_refused_by_every_rank",
    "tests/test_train.py::test_two_processes_share_each_epoch_and_end_with_the_same_weights",
    "tests/test_train.py::test_short_training_lowers_the_loss_and_beats_chance",   # builds full_run
    "tests/test_train.py::test_interrupted_and_resumed_run_ends_with_the_same_weights",
    "tests/test_train.py::test_defaults_learn_in_the_first_epoch",
    "tests/test_train.py::test_other_losses_and_optimizers_learn",
    "tests/test_train.py::test_resumed_jpeg_run_of_varying_sizes_ends_with_the_same_weights",
    "tests/test_train.py::test_compare_mixing_writes_one_table_with_both_runs",
    "tests/test_bench.py::test_jpeg_section_writes_only_its_own_lines_to_stderr",
    "tests/test_collate.py::test_spawned_worker",
    "tests/test_res_schedule.py::test_resumed_run_in_the_middle_of_a_schedule_ends_with_the_same_weights",
    "tests/test_res_schedule.py::test_a_size_change_is_deterministic_and_equals_a_loader_made_at_that_size",
]


def long_test_rank(nodeid: str) -> int:
    """The place of ``nodeid`` (parameters included) in LONG_TESTS, or len(LONG_TESTS) when not listed."""
    name = nodeid.split("[", 1)[0]
    return LONG_TESTS.index(name) if name in LONG_TESTS else len(LONG_TESTS)


@pytest.hookimpl(trylast=True)   # after -k and -m have deselected
def pytest_collection_modifyitems(items) -> None:
    module_rank: dict = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_rank[module] = min(module_rank.get(module, len(LONG_TESTS)), long_test_rank(item.nodeid))
    position = {module: index for index, module in enumerate(module_rank)}   # collection order
    # a stable sort: every worker sorts the same collection to the same order, as xdist requires
    items.sort(key=lambda item: (module_rank[item.nodeid.split("::", 1)[0]], position[item.nodeid.split("::", 1)[0]],
                                 long_test_rank(item.nodeid)))


def pytest_configure(config) -> None:
    # One test at a time to each xdist worker (each keeps one more queued): with the long tests first, whichever
    # worker is free takes the next longest. Only when the run did not choose a chunk size itself.
    if getattr(config.option, "dist", "no") == "load" and getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


def pytest_collection_finish(session) -> None:
    gc.collect()    # what is already garbage is freed, not frozen
    gc.freeze()
