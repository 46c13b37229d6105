"""ffmix's own C code: the JPEG region decoder (``jpeg_region.c``), built on first use and loaded with ctypes.

The shared object is compiled from the checkout's ``jpeg_region.c`` with the system C compiler against the
system libjpeg (Debian: ``libjpeg-dev``, i.e. libjpeg62-turbo-dev) into this package's folder, when it is
missing or older than the source; ``scripts/setup.sh`` does it once at set-up. The compile writes a temporary
name and renames it, so two processes building at once each see a whole library or none.

``FFMIX_JPEG_SYSROOT`` names a folder with the libjpeg headers under ``include/`` and its libraries under
``lib/`` (the sysroot ``scripts/ffcv_offline.py`` unpacks from the GPU bundle's Debian packages): the compile
then uses those and records their folder as the library's run path.

When it cannot be built (no compiler, no libjpeg headers, a read-only checkout) ``jpeg_region_function``
returns None and ``unavailable_reason`` says why and how to fix it: the decoders then decode as FFCV does
(libffcv's full-image decode), with one ``FfmixWarning`` (``ops/decoders.py``), never silently.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

FOLDER = Path(__file__).resolve().parent
SOURCE = FOLDER / "jpeg_region.c"
LIBRARY = FOLDER / "_jpeg_region.so"
VERSION = 1          # ffmix_region_version() of the source this Python side was written for
FIX = ("install a C compiler and the libjpeg headers (Debian/Ubuntu: `apt-get install gcc libjpeg-dev`; "
       "`make setup` does it), then run ffmix again")


def sysroot_flags() -> list:
    """Include and library flags for ``$FFMIX_JPEG_SYSROOT`` (see above); none when it is unset."""
    root = os.environ.get("FFMIX_JPEG_SYSROOT")
    if not root:
        return []
    include, lib = Path(root) / "include", Path(root) / "lib"
    # jconfig.h lives in the multiarch folder (include/x86_64-linux-gnu/) on Debian
    folders = [include] + sorted({path.parent for path in include.glob("*/jconfig.h")})
    return [f"-I{folder}" for folder in folders] + [f"-L{lib}", f"-Wl,-rpath,{lib}"]


def compile_command(output: Path) -> list:
    """The compiler call that builds ``jpeg_region.c`` into ``output`` ($CC, else cc)."""
    compiler = os.environ.get("CC") or "cc"
    # --no-undefined: a libjpeg without the libjpeg-turbo calls used here fails now, not at load time
    return [compiler, "-O2", "-shared", "-fPIC", "-Werror=implicit-function-declaration", "-Wl,--no-undefined",
            *sysroot_flags(), "-o", str(output), str(SOURCE), "-ljpeg"]


def library_path() -> Path:
    """Where the library is (or goes): beside the source, or, when this package's folder is read-only (an
    installed ffmix), in the user's cache under a name that holds the source's hash (so it is never stale)."""
    if os.access(FOLDER, os.W_OK) or LIBRARY.exists():
        return LIBRARY
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ffmix"
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache / f"_jpeg_region-{digest}.so"


def build(force: bool = False) -> Path:
    """Compile ``jpeg_region.c`` to ``library_path()`` if it is missing or older than the source (or
    ``force``); returns the library's path. Raises OSError (no compiler) or CalledProcessError (it failed)."""
    library = library_path()
    if not force and library.exists() and library.stat().st_mtime >= SOURCE.stat().st_mtime:
        return library
    compiler = compile_command(library)[0]
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler ({compiler!r} is not on PATH)")
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix="._jpeg_region.", suffix=".so", dir=library.parent)
    os.close(handle)
    try:
        subprocess.run(compile_command(Path(temporary)), check=True, capture_output=True, text=True)
        os.replace(temporary, library)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return library


@lru_cache(maxsize=None)
def _load() -> Tuple[Optional[ctypes.CDLL], str]:
    try:
        library = ctypes.CDLL(str(build()))
    except subprocess.CalledProcessError as failure:
        detail = (failure.stderr or "").strip().splitlines()
        return None, f"compiling {SOURCE.name} failed ({detail[-1] if detail else failure})"
    except OSError as failure:
        return None, f"{SOURCE.name} could not be built or loaded ({failure})"
    if library.ffmix_region_version() != VERSION:
        return None, (f"{library_path()} is version {library.ffmix_region_version()}, ffmix wants {VERSION} "
                      "(delete it)")
    return library, ""


def jpeg_region_function() -> Optional[int]:
    """The address of ``ffmix_decode_region`` (see ``jpeg_region.c``), or None when the library cannot be
    built or loaded (``unavailable_reason`` says why). The library stays loaded for the life of the process
    (held here), so compiled code may keep the address."""
    library, _ = _load()
    if library is None:
        return None
    return int(ctypes.cast(library.ffmix_decode_region, ctypes.c_void_p).value)


def unavailable_reason() -> str:
    """Why ``jpeg_region_function`` is None, with the fix; "" when it is available."""
    library, reason = _load()
    return "" if library is not None else f"{reason}; {FIX}"
