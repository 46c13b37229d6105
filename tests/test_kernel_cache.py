"""The kernel cache is refreshed when any source it may depend on changes (Numba itself checks only the cached
function's own file): a real two-module Numba program shows the stale result without ``refresh`` and the right
one with it; and the refresh itself, on fake cache files."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from ffmix import kernel_cache

CALLER = """
from numba import njit
from callee import value

@njit(cache=True)
def twice():
    return 2 * value()
"""
CALLEE = """
from numba import njit

@njit(cache=True)
def value():
    return {value}
"""
RUN = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from ffmix import kernel_cache
if {refresh}:
    kernel_cache.refresh(Path({root!r}), kernel_cache.sources_digest([Path({root!r})]))
from caller import twice
print(twice())
"""


def _twice(root, refresh: bool) -> int:
    code = textwrap.dedent(RUN.format(root=str(root), refresh=refresh))
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def test_a_changed_callee_in_another_file_is_recompiled_only_with_refresh(tmp_path):
    (tmp_path / "caller.py").write_text(CALLER)
    (tmp_path / "callee.py").write_text(CALLEE.format(value=1))
    assert _twice(tmp_path, refresh=True) == 2
    (tmp_path / "callee.py").write_text(CALLEE.format(value=21))
    assert _twice(tmp_path, refresh=False) == 2, "Numba's own check: the caller's cache still holds the old callee"
    assert _twice(tmp_path, refresh=True) == 42
    assert _twice(tmp_path, refresh=True) == 42          # cached again, and kept while nothing changes


def test_refresh_deletes_cached_code_only_when_the_digest_changes(tmp_path):
    cache = tmp_path / "pkg" / "__pycache__"
    cache.mkdir(parents=True)
    (tmp_path / "pkg" / "module.py").write_text("x = 1\n")

    def fake_cache():
        for name in ("module.f-1.py311.nbi", "module.f-1.py311.1.nbc", "module.cpython-311.pyc"):
            (cache / name).write_text("")

    fake_cache()
    digest = kernel_cache.sources_digest([tmp_path / "pkg"])
    assert kernel_cache.refresh(tmp_path / "pkg", digest)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("ffmix-")) == ["module.cpython-311.pyc"]
    fake_cache()
    assert not kernel_cache.refresh(tmp_path / "pkg", digest)
    assert len(list(cache.glob("*.nb?"))) == 2
    (tmp_path / "pkg" / "module.py").write_text("x = 2\n")
    assert kernel_cache.sources_digest([tmp_path / "pkg"]) != digest
    assert kernel_cache.refresh(tmp_path / "pkg", kernel_cache.sources_digest([tmp_path / "pkg"]))
    assert not list(cache.glob("*.nb?"))
