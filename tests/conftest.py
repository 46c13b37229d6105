"""Set-up shared by every test module.

Many tests call ``gc.collect()`` between batches (allocation churn: memory that compiled code should no longer
read is freed and reused). A full collection walks every object the collector tracks, and once torch, numba,
FFCV and the test modules are imported that is over 300,000 objects: about 0.17 s a call, most of the time of
tests that read a few dozen batches. Those imported objects live as long as the process anyway, so after
collection they are moved out of the collector's sight with ``gc.freeze()``. Everything a test builds (loaders,
pipelines, buffers, module fixtures) is made after that and is collected as before, so each ``gc.collect()``
frees exactly what it freed before, only without re-walking the imports.
"""
from __future__ import annotations

import gc


def pytest_collection_finish(session) -> None:
    gc.collect()    # what is already garbage is freed, not frozen
    gc.freeze()
