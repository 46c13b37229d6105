"""FFCV's internals stay in one module, which refuses an FFCV it was not tested with."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ffmix import ffcv_compat

PACKAGE = Path(__file__).resolve().parents[1] / "ffmix"
# Attributes of FFCV objects that are not its public API (Loader/EpochIterator internals, the writer's
# shared table and allocator, the Reader's raw tables).
PRIVATE = re.compile(r"\.(graph|memory_manager|next_epoch|pipeline_specs|metadata_sm|metadata_type|"
                     r"data_region_start|alloc_table|handlers|traversal_order|_args)\b|\breader\.metadata\b|"
                     r"\b(handle_sample|MemoryAllocator|EpochIterator|allocate_memory)\b"
                     # FFCV's constants, written down or read from FFCV
                     r"|\bIMAGE_MODES\b|\b[A-Z]+_MODES? *= *\d")
# libffcv's C signatures, written down; ffmix's own C function (ffmix/native/jpeg_region.c) has its signature in
# the module that calls it
C_SIGNATURE = re.compile(r"\bFunctionType\(")
OWN_C_CALLERS = {"ops/jpeg_region.py"}


def test_only_ffcv_compat_touches_ffcv_internals():
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        if source.name == "ffcv_compat.py":
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            own_c = source.relative_to(PACKAGE).as_posix() in OWN_C_CALLERS
            if PRIVATE.search(code) or (C_SIGNATURE.search(code) and not own_c):
                offenders.append(f"{source.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert offenders == [], "FFCV internals outside ffmix/ffcv_compat.py:\n" + "\n".join(offenders)


def test_an_untested_ffcv_is_refused_with_a_message(monkeypatch):
    monkeypatch.delenv("FFMIX_ANY_FFCV", raising=False)
    monkeypatch.setattr(ffcv_compat._metadata, "version", lambda name: "1.1.0")
    with pytest.raises(ImportError, match=r"tested with FFCV 1\.0\.2 only .* FFCV 1\.1\.0 is installed.*"
                                          r"pip install ffcv==1\.0\.2"):
        ffcv_compat._check_version()
    monkeypatch.setenv("FFMIX_ANY_FFCV", "1")
    ffcv_compat._check_version()


def test_the_pinned_ffcv_is_the_tested_one():
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert f'"ffcv=={ffcv_compat.TESTED_FFCV}"' in pyproject
    ffcv_compat._check_version()
