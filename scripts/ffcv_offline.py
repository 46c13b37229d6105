#!/usr/bin/env python3
"""FFCV 1.0.2 made importable from the GPU bundle on a machine with no network and no system OpenCV or
libjpeg-turbo, with that machine's Python as it is (standard library only: it runs before anything else).

    python3 scripts/ffcv_offline.py prepare --bundle gpu-bundle --dest DIR [--dry-run]
        Unpacks the bundle's Debian packages into DIR/sysroot (headers in include/, every shared library in
        one flat lib/), then tries, in order, until one loads:
          pip       FFCV's own setup.py through `pip install --no-index --no-deps --no-build-isolation
                    --target DIR/site`, with a stand-in `pkg-config` that answers from DIR/sysroot only;
          compile   one compiler call on libffcv/libffcv.cpp (no setuptools, no distutils);
          prebuilt  the bundle's `_libffcv.abi3.so`, built where the bundle was made (stable ABI, so any
                    Python >= 3.8 loads it; it needs a glibc at least as new as the one it was built with).
        Each attempt's outcome and output go to DIR/ffcv-build.log and DIR/ffcv-build.json. Then, if this
        Python cannot `import distutils.log` (3.12 without setuptools' shim), DIR/shim gets a small stand-in,
        and `import ffcv` is tried with the path entries, which are written to DIR/pythonpath.
    python3 scripts/ffcv_offline.py prebuilt --bundle gpu-bundle --out FILE
        The `prebuilt` fallback, built here by scripts/gpu-bundle.sh with the bundle's own headers.

Every compiled file finds the bundle's libraries through an RPATH relative to itself
($ORIGIN/../../sysroot/lib, DT_RPATH so that their own dependencies are found there too): nothing needs
LD_LIBRARY_PATH and nothing reads /usr/include/opencv4 or the system's libopencv/libturbojpeg.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

FFCV_VERSION = "1.0.2"
SDIST = f"ffcv-{FFCV_VERSION}.tar.gz"
PREBUILT = "_libffcv.abi3.so"
ATTEMPTS = ("pip", "compile", "prebuilt")
# seconds for one attempt's command by default (the build takes 2-4 s on an idle machine, 15 s or more on
# a busy one; gpu-check --offline passes a tighter --attempt-limit) and for `import ffcv` (torch and numba
# from a cold disk)
ATTEMPT_LIMIT_S = 60
IMPORT_LIMIT_S = 30
# the stable ABI of Python 3.8: PyModuleDef and PyModule_Create are all libffcv.cpp takes from Python.h
LIMITED_API = "0x03080000"
# <opencv2/opencv.hpp> includes every module Debian built (calib3d, dnn, ...); FFCV uses cv::Mat and
# cv::resize only, so the bundle carries core and imgproc and this header stands in for the umbrella.
OPENCV_UMBRELLA = """// written by ffmix's scripts/ffcv_offline.py: FFCV's libffcv.cpp uses cv::Mat and cv::resize only
#pragma once
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
"""
PACKAGES = {   # what the stand-in pkg-config answers: FFCV's setup.py asks for these two
    "opencv4": "-lopencv_core -lopencv_imgproc",
    "libturbojpeg": "-lturbojpeg",
}
DISTUTILS_LOG = '''"""A stand-in for distutils.log (gone in Python 3.12), written by ffmix's scripts/ffcv_offline.py:
FFCV 1.0.2 imports `warn` from it (ffcv/pipeline/graph.py) and nothing else."""
import warnings


def warn(msg, *args):
    warnings.warn(msg % args if args else msg)
'''


class BundleError(Exception):
    """The bundle is incomplete or damaged: make it again with scripts/gpu-bundle.sh."""


class Layout:
    """The folders under --dest that the steps below fill."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.sysroot = dest / "sysroot"
        self.include = self.sysroot / "include"
        self.overlay = self.sysroot / "overlay"     # searched first: the OpenCV umbrella header
        self.lib = self.sysroot / "lib"
        self.bin = dest / "bin"                     # the stand-in pkg-config
        self.src = dest / "src"
        self.site = dest / "site"                   # the path entry that holds ffcv/
        self.shim = dest / "shim"
        self.log = dest / "ffcv-build.log"
        self.report = dest / "ffcv-build.json"

    def cflags(self) -> list:
        return [f"-I{self.overlay}", f"-I{self.include / 'opencv4'}", f"-I{self.include}"]

    def ldflags(self) -> list:
        # DT_RPATH (not RUNPATH) so that libopencv_core's own needs (tbb, lapack, ...) are looked up there too
        return ["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../../sysroot/lib",
                f"-Wl,-rpath-link,{self.lib}", f"-L{self.lib}"]


# ---------------------------------------------------------------- the bundle's Debian packages

def ar_members(data: bytes):
    """(name, bytes) of each member of an ar archive (a .deb is one)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, data[offset + 60:offset + 60 + size]
        offset += 60 + size + (size & 1)


def deb_payload(path: Path) -> tarfile.TarFile:
    """The data.tar.* of a .deb, open for reading."""
    for name, body in ar_members(path.read_bytes()):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise ValueError(f"{path.name}: {name} is zstd, which Python's tarfile cannot read; "
                                 "make the bundle from Debian packages (xz)")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
    raise ValueError(f"{path.name}: no data.tar member")


def unpack_debs(debs: list, layout: Layout) -> list:
    """Headers under usr/include -> sysroot/include (same tree); every shared library under usr/lib ->
    sysroot/lib, flat (Debian puts lapack and blas in subfolders for its alternatives). Returns the
    libraries' names."""
    links = {}
    for deb in debs:
        try:
            unpack_deb(deb, layout, links)
        except (ValueError, EOFError, tarfile.TarError, UnicodeDecodeError) as exc:
            raise BundleError(f"{deb.name} is damaged ({exc})") from exc
    for link, points_to in links.items():
        if not link.exists():
            link.symlink_to(points_to)
    missing = [link.name for link in links if not link.exists()]
    if missing:
        raise BundleError(f"dangling library links after unpacking: {', '.join(sorted(missing))}")
    return sorted(path.name for path in layout.lib.iterdir())


def unpack_deb(deb: Path, layout: Layout, links: dict) -> None:
    """One package's headers and libraries (see unpack_debs); its symlinks go into links, made later."""
    with deb_payload(deb) as payload:
        for member in payload.getmembers():
            parts = [part for part in PurePosixPath(member.name).parts if part not in (".", "/")]
            if ".." in parts or not (member.isfile() or member.issym()):
                continue
            if parts[:2] == ["usr", "include"]:
                target = layout.include.joinpath(*parts[2:])
            elif parts[:2] == ["usr", "lib"] and ".so" in parts[-1]:
                target = layout.lib / parts[-1]
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.issym():
                # libraries: the flat folder holds the target under its own name; headers: relative links only
                points_to = PurePosixPath(member.linkname)
                if target.parent == layout.lib:
                    links[target] = points_to.name
                elif not points_to.is_absolute() and ".." not in points_to.parts:
                    links[target] = str(points_to)
            else:
                target.write_bytes(payload.extractfile(member).read())


def write_build_helpers(layout: Layout) -> None:
    """The OpenCV umbrella stand-in and a pkg-config that knows the two packages FFCV asks for, from the
    sysroot only (the machine may have no pkg-config, and must not answer with its own OpenCV)."""
    (layout.overlay / "opencv2").mkdir(parents=True, exist_ok=True)
    (layout.overlay / "opencv2" / "opencv.hpp").write_text(OPENCV_UMBRELLA)
    layout.bin.mkdir(parents=True, exist_ok=True)
    cflags = " ".join(layout.cflags())
    cases = "\n".join(f"        {name}) echo \"{cflags} -L{layout.lib} {libs}\"; exit 0 ;;"
                      for name, libs in PACKAGES.items())
    script = layout.bin / "pkg-config"
    script.write_text(f"""#!/bin/sh
# written by ffmix's scripts/ffcv_offline.py: answers FFCV's setup.py from {layout.sysroot} only
for arg in "$@"; do
    case "$arg" in
        --*) ;;
{cases}
        *) echo "Package $arg was not found in the pkg-config search path (ffmix offline stand-in)"; exit 1 ;;
    esac
done
""")
    script.chmod(0o755)


def unpack_sdist(bundle: Path, layout: Layout) -> Path:
    try:
        with tarfile.open(bundle / "ffcv" / SDIST) as sdist:
            members = [m for m in sdist.getmembers() if m.isfile() or m.isdir()]
            for member in members:
                if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
                    raise BundleError(f"{SDIST}: refusing the member path {member.name!r}")
            sdist.extractall(layout.src, members=members)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BundleError(f"{SDIST} is missing or damaged ({exc})") from exc
    return layout.src / f"ffcv-{FFCV_VERSION}"


# ---------------------------------------------------------------- the three ways to a loadable _libffcv

def compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise RuntimeError("no C++ compiler (CXX, c++, g++ or clang++) on PATH")


def compile_command(source: Path, out: Path, layout: Layout, limited_api: bool) -> list:
    python_include = sysconfig.get_paths()["include"]
    defines = [f"-DPy_LIMITED_API={LIMITED_API}"] if limited_api else []
    return [compiler(), "-O3", "-std=c++17", "-shared", "-fPIC", *defines, f"-I{python_include}",
            *layout.cflags(), str(source), "-o", str(out), *layout.ldflags(),
            "-lopencv_core", "-lopencv_imgproc", "-lturbojpeg", "-lpthread"]


def copy_package(src: Path, layout: Layout) -> Path:
    """FFCV's Python files into site/ with a dist-info, so importlib.metadata reads 1.0.2 (ffmix checks it)."""
    package = layout.site / "ffcv"
    shutil.copytree(src / "ffcv", package)
    info = layout.site / f"ffcv-{FFCV_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ffcv\nVersion: {FFCV_VERSION}\n")
    (info / "INSTALLER").write_text("ffmix scripts/ffcv_offline.py\n")
    return package


def attempt_commands(name: str, src: Path, bundle: Path, layout: Layout) -> list:
    if name == "pip":
        return [[sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                 "--no-cache-dir", "--disable-pip-version-check", "--target", str(layout.site), str(src)]]
    if name == "compile":
        out = layout.site / "ffcv" / ("_libffcv" + sysconfig.get_config_var("EXT_SUFFIX"))
        return [compile_command(src / "libffcv" / "libffcv.cpp", out, layout, limited_api=False)]
    return [["cp", str(bundle / "prebuilt" / PREBUILT), str(layout.site / "ffcv" / PREBUILT)]]


def build_env(layout: Layout) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{layout.bin}{os.pathsep}{env.get('PATH', '')}"
    env["LDFLAGS"] = " ".join(layout.ldflags())     # setuptools appends LDFLAGS to its link line
    env.pop("PKG_CONFIG_PATH", None)
    return env


VERIFY = r"""
import ctypes, importlib.util, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("ffcv._libffcv", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)                      # the Python side: PyInit__libffcv under this Python
lib = ctypes.CDLL(path)
for symbol in ("imdecode", "resize", "my_memcpy"):
    getattr(lib, symbol)
with open("/proc/self/maps") as maps:
    found = sorted({line.split()[-1] for line in maps if "libopencv_core" in line or "libturbojpeg" in line})
print("loaded; " + ", ".join(found))
"""


def run_logged(command: list, log, env: dict, cwd: Path, limit_s: float):
    """Run, with its output in the log; a command past limit_s comes back as exit 124 'timed out'."""
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as exc:
        output = exc.output or ""
        log.write((output if isinstance(output, str) else output.decode(errors="replace"))
                  + f"\n[timed out after {limit_s} s]\n")
        return subprocess.CompletedProcess(command, 124, f"timed out after {limit_s} s")
    log.write(done.stdout)
    return done


def try_attempt(name: str, src: Path, bundle: Path, layout: Layout, log, limit_s: float) -> dict:
    """One attempt from a clean site/: its commands, then the loaded-library check. Never raises."""
    started = time.monotonic()
    shutil.rmtree(layout.site, ignore_errors=True)
    layout.site.mkdir(parents=True)
    log.write(f"\n=== attempt {name}\n")
    try:
        if name != "pip":
            copy_package(src, layout)
        for command in attempt_commands(name, src, bundle, layout):
            done = run_logged(command, log, build_env(layout), src, limit_s)
            if done.returncode != 0:
                tail = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
                raise RuntimeError(f"exit {done.returncode}: {tail[0][:200]}")
        built = sorted((layout.site / "ffcv").glob("_libffcv*.so"))
        if not built:
            raise RuntimeError("no ffcv/_libffcv*.so was produced")
        check = run_logged([sys.executable, "-c", VERIFY, str(built[0])], log, dict(os.environ), layout.dest,
                           IMPORT_LIMIT_S)
        if check.returncode != 0:
            tail = [line for line in check.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
            raise RuntimeError(f"built, but does not load: {tail[0][:200]}")
        outcome = {"ok": True, "detail": check.stdout.strip().splitlines()[-1], "library": built[0].name}
    except Exception as exc:   # each attempt's failure is an outcome to log; the next one is tried
        outcome = {"ok": False, "detail": str(exc)}
    outcome.update(name=name, seconds=round(time.monotonic() - started, 1))
    log.write(f"=== attempt {name}: {'ok' if outcome['ok'] else 'FAILED'} ({outcome['detail']})\n")
    return outcome


# ---------------------------------------------------------------- after the build: distutils and the import

def distutils_entry(layout: Layout, log) -> tuple:
    """([path entry] or [], how `distutils.log` is found): setuptools' shim where this Python has it."""
    probe = subprocess.run([sys.executable, "-c", "import distutils.log"], capture_output=True, text=True)
    if probe.returncode == 0:
        log.write("distutils.log imports as it is (the standard library, or setuptools' shim)\n")
        return [], "as installed"
    (layout.shim / "distutils").mkdir(parents=True, exist_ok=True)
    (layout.shim / "distutils" / "__init__.py").write_text('"""ffmix offline stand-in: see log.py."""\n')
    (layout.shim / "distutils" / "log.py").write_text(DISTUTILS_LOG)
    log.write("distutils.log does not import here; wrote the stand-in in shim/\n")
    return [str(layout.shim)], "ffmix stand-in (shim/distutils/log.py)"


def import_check(entries: list, log) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(entries + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = "import ffcv, ffcv.libffcv, importlib.metadata as m; print('ffcv', m.version('ffcv'), ffcv.__file__)"
    done = run_logged([sys.executable, "-c", code], log, env, Path.cwd(), IMPORT_LIMIT_S)
    lines = [line for line in done.stdout.splitlines() if line.strip()] or ["(no output)"]
    return "ok: " + lines[-1] if done.returncode == 0 else "FAILED: " + lines[-1][:200]


def describe(args, layout: Layout) -> None:
    """--dry-run: every step prepare would take, with its commands."""
    debs = sorted((args.bundle / "debs").glob("*.deb")) if (args.bundle / "debs").is_dir() else []
    print(f"ffcv-offline --dry-run: Python {sys.version.split()[0]} at {sys.executable}; bundle {args.bundle}"
          + ("" if (args.bundle / "MANIFEST").is_file() else " (MISSING: run scripts/gpu-bundle.sh first)"))
    print(f"  unpack {len(debs) or 'the'} .deb files -> {layout.include} (headers), {layout.lib} (libraries)")
    print(f"  write {layout.overlay}/opencv2/opencv.hpp (core + imgproc only) and {layout.bin}/pkg-config")
    print(f"  unpack {args.bundle / 'ffcv' / SDIST} -> {layout.src}")
    src = layout.src / f"ffcv-{FFCV_VERSION}"
    for name in args.attempts:
        try:
            commands = attempt_commands(name, src, args.bundle, layout)
        except RuntimeError as exc:
            commands = [[f"<{exc}>"]]
        for command in commands:
            print(f"  attempt {name}: {shlex.join(command)}")
    print("  each attempt: load its ffcv/_libffcv*.so under this Python and name the libraries it mapped")
    print(f"  distutils.log: as installed, else a stand-in in {layout.shim}")
    print(f"  import ffcv with the path entries; write them to {layout.dest / 'pythonpath'}")


def prepare(args) -> int:
    layout = Layout(args.dest.resolve())
    args.bundle = args.bundle.resolve()
    if args.dry_run:
        describe(args, layout)
        return 0
    if not (args.bundle / "MANIFEST").is_file():
        print(f"ffcv-offline: no bundle at {args.bundle} (MANIFEST missing); make it with scripts/gpu-bundle.sh "
              "on a machine with network, and carry it", file=sys.stderr)
        return 2
    shutil.rmtree(layout.dest, ignore_errors=True)
    layout.dest.mkdir(parents=True)
    report = {"python": sys.version.split()[0], "executable": sys.executable, "attempts": [], "used": None,
              "import": "not tried"}
    with open(layout.log, "w") as log:
        started = time.monotonic()
        try:
            libraries, src = unpack_bundle(args.bundle, layout)
        except BundleError as exc:
            print(f"ffcv-offline: the bundle {args.bundle} is damaged: {exc}; make it again with "
                  "scripts/gpu-bundle.sh", file=sys.stderr)
            return 2
        log.write(f"unpacked {len(libraries)} libraries and the headers, {SDIST} "
                  f"({time.monotonic() - started:.1f} s)\n")
        for name in args.attempts:
            outcome = try_attempt(name, src, args.bundle, layout, log, args.attempt_limit)
            report["attempts"].append(outcome)
            print(f"ffcv-offline: attempt {name}: {'ok' if outcome['ok'] else 'FAILED'} "
                  f"({outcome['seconds']} s) {outcome['detail']}")
            if outcome["ok"]:
                report["used"] = name
                break
        entries = [str(layout.site)]
        if report["used"]:
            shim, report["distutils"] = distutils_entry(layout, log)
            entries += shim
            report["import"] = "skipped" if args.no_import_check else import_check(entries, log)
            print(f"ffcv-offline: distutils.log {report['distutils']}; import ffcv {report['import']}")
        report["pythonpath"] = entries
    (layout.dest / "pythonpath").write_text(os.pathsep.join(entries) + "\n")
    layout.report.write_text(json.dumps(report, indent=2) + "\n")
    if not report["used"]:
        print(f"ffcv-offline: every attempt failed; see {layout.log}", file=sys.stderr)
        return 1
    return 0 if report["import"].startswith(("ok", "skipped")) else 1


def unpack_bundle(bundle: Path, layout: Layout) -> tuple:
    """The sysroot, the build helpers and FFCV's source from the bundle: (library names, source folder)."""
    debs = sorted((bundle / "debs").glob("*.deb"))
    if not debs:
        raise BundleError(f"no .deb files in {bundle / 'debs'}")
    libraries = unpack_debs(debs, layout)
    write_build_helpers(layout)
    return libraries, unpack_sdist(bundle, layout)


def build_prebuilt(args) -> int:
    """The stable-ABI _libffcv for the bundle, against the bundle's own headers and libraries."""
    with tempfile.TemporaryDirectory() as work:
        layout = Layout(Path(work))
        _, src = unpack_bundle(args.bundle, layout)
        command = compile_command(src / "libffcv" / "libffcv.cpp", args.out.resolve(), layout, limited_api=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"ffcv-offline: building {args.out.name} failed:\n{shlex.join(command)}\n{done.stderr}",
                  file=sys.stderr)
            return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    prep = verbs.add_parser("prepare", help="make FFCV importable from the bundle")
    prep.add_argument("--bundle", type=Path, required=True)
    prep.add_argument("--dest", type=Path, required=True)
    prep.add_argument("--attempts", type=lambda text: text.split(","), default=list(ATTEMPTS),
                      help=f"comma-separated, in order (default {','.join(ATTEMPTS)})")
    prep.add_argument("--attempt-limit", type=float, default=ATTEMPT_LIMIT_S, metavar="SECONDS",
                      help=f"the most one attempt's build may take before the next is tried (default {ATTEMPT_LIMIT_S})")
    prep.add_argument("--no-import-check", action="store_true",
                      help="stop after the extension loads (a Python without numba or torch)")
    prep.add_argument("--dry-run", action="store_true", help="print the steps; touch nothing")
    pre = verbs.add_parser("prebuilt", help="build the bundle's stable-ABI fallback")
    pre.add_argument("--bundle", type=Path, required=True)
    pre.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.verb == "prepare":
        unknown = [name for name in args.attempts if name not in ATTEMPTS]
        if unknown:
            parser.error(f"unknown attempt {unknown[0]!r}; choose from {', '.join(ATTEMPTS)}")
        return prepare(args)
    return build_prebuilt(args)


if __name__ == "__main__":
    sys.exit(main())
