"""``scripts/gpu-check.sh --offline`` before a GPU machine is lent: its dry run, the unpacking of the bundle's
Debian packages (made up here, damaged too), and the rehearsal: FFCV built from gpu-bundle/ in a fresh virtual
environment that cannot see the installed FFCV, in a network namespace with no network and with this
machine's OpenCV and libjpeg-turbo files hidden, then imported and made to decode a JPEG."""
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "gpu-check.sh"
OFFLINE = REPO / "scripts" / "ffcv_offline.py"
ATTEMPTS = ("pip", "compile", "prebuilt")


def _offline_module():
    spec = importlib.util.spec_from_file_location("ffcv_offline", OFFLINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the dry run

def test_offline_dry_run_prints_every_step(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "GPU_BUNDLE": str(tmp_path / "no-bundle"),
           "PY": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(CHECK), "--offline", "--dry-run"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    limits = {name: int(s) for name, s in re.findall(r"^  (\w+) \(limit (\d+) s\)", out, re.M)}
    assert list(limits) == ["prepare", "tests", "data", "bench", "train"]
    assert sum(limits.values()) <= 480 - 10          # the build included; room for the GPU probe and summary
    assert "MISSING" in out and "scripts/gpu-bundle.sh" in out      # says how to make the absent bundle
    assert f"{sys.executable} (" in out and "gpu probe" in out
    attempts = re.findall(r"^    attempt (\w+): (.*)$", out, re.M)
    assert [name for name, _ in attempts] == list(ATTEMPTS)           # tried in this order
    pip, compile_, prebuilt = (command for _, command in attempts)
    assert "--no-index" in pip and "--no-build-isolation" in pip and "--target" in pip
    assert "-lopencv_core" in compile_ and "/usr/include" not in compile_ and "$ORIGIN/../../sysroot/lib" in compile_
    assert "_libffcv.abi3.so" in prebuilt
    assert f"PYTHONPATH={REPO}:{tmp_path / 'out'}/ffcv/site" in out  # ffmix from the checkout, then FFCV
    assert f"convert {tmp_path / 'no-bundle'}/fashion-mnist" in out   # the bundle's IDX files
    assert "bench e2e --device cuda" in out and "timm_fast_collate" in out
    assert "--device cuda" in out.split("train (limit")[1]
    assert "logs.tar.gz" in out and "(when OUT is set)" in out
    assert not (tmp_path / "out").exists()


def test_default_dry_run_is_unchanged_by_offline(tmp_path):
    done = subprocess.run(["bash", str(CHECK), "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "d")})
    assert done.returncode == 0, done.stderr
    assert "prepare" not in done.stdout and "ffcv_offline" not in done.stdout and ".venv/bin/python" in done.stdout


# ------------------------------------------------------------------ the bundle's .deb files, made up here

def _ar(members):
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in members:
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode())
        out.write(body + (b"\n" if len(body) % 2 else b""))
    return out.getvalue()


def _deb(path, files, links=()):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]))
    return path


def test_debs_unpack_into_headers_and_one_flat_library_folder(tmp_path):
    offline = _offline_module()
    layout = offline.Layout(tmp_path / "dest")
    debs = [
        _deb(tmp_path / "a.deb", {"./usr/include/opencv4/opencv2/core.hpp": b"// core",
                                  "./usr/lib/x86_64-linux-gnu/libfoo.so.1.2": b"\x7fELF foo",
                                  "./usr/share/doc/foo/copyright": b"text"},
             links=[("./usr/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1.2"),
                    ("./usr/include/escape.h", "/etc/passwd")]),
        # Debian's alternatives: lapack in a subfolder, its link relative inside it
        _deb(tmp_path / "b.deb", {"./usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3.11.0": b"\x7fELF lapack",
                                  "./usr/include/../../evil.h": b"x"},
             links=[("./usr/lib/x86_64-linux-gnu/lapack/liblapack.so.3", "liblapack.so.3.11.0")]),
    ]
    names = offline.unpack_debs(debs, layout)
    assert names == ["libfoo.so.1", "libfoo.so.1.2", "liblapack.so.3", "liblapack.so.3.11.0"]
    assert (layout.lib / "liblapack.so.3").read_bytes() == b"\x7fELF lapack"      # through the flat link
    assert (layout.lib / "libfoo.so.1").read_bytes() == b"\x7fELF foo"
    assert (layout.include / "opencv4" / "opencv2" / "core.hpp").read_bytes() == b"// core"
    assert not (layout.include / "escape.h").exists() and not (tmp_path / "evil.h").exists()
    assert not list(layout.dest.rglob("copyright"))


@pytest.mark.parametrize("damage", ["truncated", "not ar", "no data member", "dangling link"])
def test_a_damaged_deb_is_named(tmp_path, damage):
    offline = _offline_module()
    deb = _deb(tmp_path / "libbar.deb", {"./usr/lib/libbar.so.1": bytes(range(256)) * 64},
               links=[("./usr/lib/libbar.so", "libbar.so.9" if damage == "dangling link" else "libbar.so.1")])
    body = deb.read_bytes()
    if damage == "truncated":
        deb.write_bytes(body[:len(body) // 2])
    elif damage == "not ar":
        deb.write_bytes(b"PK" + body[2:])
    elif damage == "no data member":
        deb.write_bytes(_ar([("debian-binary", b"2.0\n")]))
    with pytest.raises(offline.BundleError, match="libbar.deb is damaged|dangling library links after unpacking: libbar.so$"):
        offline.unpack_debs([deb], offline.Layout(tmp_path / "dest"))


def test_prepare_refuses_a_damaged_bundle_in_one_message(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "debs").mkdir(parents=True)
    (bundle / "MANIFEST").write_text("# made up\n")
    (bundle / "debs" / "libbar.deb").write_bytes(b"!<arch>\nshort")
    done = subprocess.run([sys.executable, str(OFFLINE), "prepare", "--bundle", str(bundle), "--dest",
                           str(tmp_path / "dest")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "libbar.deb is damaged" in done.stderr and "scripts/gpu-bundle.sh" in done.stderr
    missing = subprocess.run([sys.executable, str(OFFLINE), "prepare", "--bundle", str(tmp_path / "none"),
                              "--dest", str(tmp_path / "dest")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no bundle" in missing.stderr


# ------------------------------------------------------------------ the rehearsal

SYSTEM_LIBS = "/usr/lib/x86_64-linux-gnu"


def _hidden_system_files(bundle: Path, scratch: Path) -> list:
    """What this machine has and the GPU machine lacks, to put out of reach inside the namespace: the
    OpenCV and libjpeg-turbo headers and pkg-config files, and this machine's copy of every library the
    bundle carries (else one already loaded, such as numba's TBB, would stand in for the bundle's)."""
    offline = _offline_module()
    carried = offline.unpack_debs(sorted((bundle / "debs").glob("*.deb")), offline.Layout(scratch))
    files = ["/usr/include/turbojpeg.h", f"{SYSTEM_LIBS}/pkgconfig/opencv4.pc", f"{SYSTEM_LIBS}/pkgconfig/libturbojpeg.pc"]
    files += [os.path.realpath(f"{SYSTEM_LIBS}/{name}") for name in carried]
    files += [os.path.realpath(path) for path in glob.glob(f"{SYSTEM_LIBS}/lapack/*") + glob.glob(f"{SYSTEM_LIBS}/blas/*")]
    return sorted({path for path in files if os.path.isfile(path)})


# stdlib only, so that any Python can run it: FFCV's imdecode through ctypes on a JPEG, against a reference
CTYPES_DECODE = r"""
import ctypes, sys
library, jpeg_path, reference_path, height, width = sys.argv[1:6]
height, width = int(height), int(width)
lib = ctypes.CDLL(library)
lib.imdecode.argtypes = [ctypes.c_void_p, ctypes.c_uint64, *[ctypes.c_uint32] * 2, ctypes.c_void_p,
                         *[ctypes.c_uint32] * 6, ctypes.c_bool, ctypes.c_bool]
jpeg = open(jpeg_path, "rb").read()
source = ctypes.create_string_buffer(jpeg, len(jpeg))
out = ctypes.create_string_buffer(height * width * 3)
status = lib.imdecode(source, len(jpeg), height, width, out, height, width, 0, 0, 1, 1, False, False)
reference = open(reference_path, "rb").read()
errors = [abs(a - b) for a, b in zip(out.raw, reference)]
print(f"status {status} worst {max(errors)} mean {sum(errors) / len(errors):.2f}")
"""

# the full path: import ffcv (numba, torch) from the path entries, decode through ffcv.libffcv, and name the
# files the OpenCV and libjpeg-turbo code was mapped from
FFCV_DECODE = r"""
import sys, numpy as np, importlib.metadata as metadata
import ffcv, ffcv.libffcv as libffcv
jpeg = np.fromfile(sys.argv[1], dtype=np.uint8)
height, width = int(sys.argv[3]), int(sys.argv[4])
out = np.zeros((height, width, 3), np.uint8)
status = libffcv.imdecode(jpeg, out, height, width, height, width, 0, 0, 1, 1, False, False)
errors = np.abs(out.astype(int) - np.fromfile(sys.argv[2], np.uint8).reshape(out.shape))
names = ("libopencv_core.so", "libopencv_imgproc.so", "libturbojpeg.so", "libtbb.so", "liblapack.so", "libblas.so")
maps = sorted({l.split()[-1] for l in open("/proc/self/maps") if l.split()[-1].rsplit("/", 1)[-1].startswith(names)})
print(f"ffcv {metadata.version('ffcv')} from {ffcv.__file__}; status {status} worst {errors.max()} mean {errors.mean():.2f}")
print("\n".join(maps))
"""


def _namespace_command():
    """unshare with no network and a private mount table (a user namespace too when not root), or None."""
    if not shutil.which("unshare"):
        return None
    command = ["unshare", "-n", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-n", "-m"]
    probe = subprocess.run(command + ["true"], capture_output=True, text=True)
    return command if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """gpu-bundle/ when it is there, else one made now (needs network: skipped without it)."""
    if (REPO / "gpu-bundle" / "MANIFEST").is_file():
        return REPO / "gpu-bundle"
    made = tmp_path_factory.mktemp("bundle") / "gpu-bundle"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-bundle.sh"), str(made)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip("the rehearsal needs gpu-bundle/, and scripts/gpu-bundle.sh cannot make it here "
                    f"(no network or no apt?): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return made


def _fresh_venv(root: Path) -> Path:
    """A new venv that sees this one's packages (torch, numba, numpy, setuptools, ...) except FFCV and ffmix,
    as the GPU machine's Python does; returns its python."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(root / "venv")], check=True, timeout=120)
    deps = root / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not re.match(r"(ffcv|ffmix|__editable__.*ffmix|__pycache__)", entry.name):
            (deps / entry.name).symlink_to(entry)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir, not a plain path line, so the .pth files there (setuptools' distutils shim) work as at home
    (Path(purelib) / "deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    return python


def _jpeg(root: Path, height: int, width: int) -> None:
    """A JPEG whose channels differ and whose rows and columns differ, and its RGB pixels from OpenCV."""
    import cv2
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 6, y * 10, 255 - x * 3 - y * 2], axis=-1).clip(0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    (root / "image.jpg").write_bytes(encoded.tobytes())
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    assert np.abs(decoded.astype(int) - rgb).max() <= 12           # close to the image (chroma subsampling)
    (root / "image.rgb").write_bytes(np.ascontiguousarray(decoded).tobytes())


def _rehearsal_script(tmp_path: Path, bundle: Path, hidden: list, other_python) -> str:
    """The namespace's bash: hide this machine's files, then FFCV from the bundle three ways. With another
    Python (3.12, as on the GPU machine), its leg runs the default chain and the prebuilt fallback."""
    decode = f"{tmp_path / 'image.jpg'} {tmp_path / 'image.rgb'} 24 40"
    prepare = f"{OFFLINE} prepare --bundle {bundle} --no-import-check"
    hide = "".join(f"mount --bind /dev/null {shlex.quote(path)}\n" for path in hidden)
    other = f"""(
    "{other_python}" {prepare} --dest {tmp_path}/other
    "{other_python}" {tmp_path}/ctypes_decode.py $(ls {tmp_path}/other/site/ffcv/_libffcv*.so) {decode}
    PYTHONPATH=$(cat {tmp_path}/other/pythonpath) "{other_python}" -c "import distutils.log as l; l.warn('%s', 'x')" \\
        && echo "distutils.log imports"
    "{other_python}" {prepare} --dest {tmp_path}/prebuilt --attempts prebuilt
    "{other_python}" {tmp_path}/ctypes_decode.py {tmp_path}/prebuilt/site/ffcv/_libffcv.abi3.so {decode}
) > {tmp_path}/other.log 2>&1""" if other_python else f"""python3 {prepare} --dest {tmp_path}/prebuilt --attempts prebuilt
python3 {tmp_path}/ctypes_decode.py {tmp_path}/prebuilt/site/ffcv/_libffcv.abi3.so {decode}"""
    return f"""set -eu
[ ! -d /usr/include/opencv4 ] || mount -t tmpfs none /usr/include/opencv4
{hide}
export PATH={tmp_path}/venv/bin:$PATH
python3 -c "import socket; s = socket.socket(); s.settimeout(3); s.connect(('1.1.1.1', 53))" 2>/dev/null \\
    && echo "NETWORK REACHABLE" || echo "no network"
test ! -e /usr/include/opencv4/opencv2 && test ! -s /usr/include/turbojpeg.h && echo "system files hidden"
{other}
python3 {prepare} --dest {tmp_path}/build
PYTHONPATH=$(cat {tmp_path}/build/pythonpath) python3 {tmp_path}/ffcv_decode.py {decode}
echo "=== other Python"
cat {tmp_path}/other.log 2>/dev/null || true
"""


def test_rehearsal_builds_ffcv_from_the_bundle_offline(bundle, tmp_path):
    namespace = _namespace_command()
    if namespace is None:
        pytest.skip("unshare -n -m is not permitted here (no network namespace for the rehearsal)")
    python = _fresh_venv(tmp_path)
    sees = subprocess.run([str(python), "-c", "import ffcv"], capture_output=True, text=True)
    assert sees.returncode != 0 and "No module named 'ffcv'" in sees.stderr    # the installed FFCV is not seen
    _jpeg(tmp_path, 24, 40)
    (tmp_path / "ctypes_decode.py").write_text(CTYPES_DECODE)
    (tmp_path / "ffcv_decode.py").write_text(FFCV_DECODE)
    others = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    script = _rehearsal_script(tmp_path, bundle, _hidden_system_files(bundle, tmp_path / "carried"),
                               others[-1] if others else None)
    done = subprocess.run(namespace + ["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "no network" in out and "system files hidden" in out
    ours, other = out.split("=== other Python")
    assert re.search(r"attempt pip: ok .* loaded; " + re.escape(f"{tmp_path}/build/sysroot/lib/"), ours), out
    assert f"ffcv 1.0.2 from {tmp_path}/build/site/ffcv/__init__.py; status 0" in ours
    # FFCV decodes with libjpeg-turbo's fast DCT, OpenCV with the exact one: close, not equal
    errors = [(int(worst), float(mean)) for worst, mean in re.findall(r"status 0 worst (\d+) mean ([\d.]+)", out)]
    assert len(errors) == 2 + bool(others), out
    assert all(worst <= 12 and mean <= 2.0 for worst, mean in errors), errors
    mapped = [line for line in ours.splitlines() if line.startswith("/") and ".so" in line]
    assert mapped and all(line.startswith(f"{tmp_path}/build/sysroot/lib/") for line in mapped), mapped
    assert {Path(line).name.split(".so")[0] for line in mapped} >= {"libopencv_core", "libopencv_imgproc",
                                                                  "libturbojpeg", "libtbb", "liblapack"}
    assert "attempt prebuilt: ok" in out
    if others:      # Python 3.12 here has no setuptools: pip fails, and the one compiler call takes over
        assert re.search(r"attempt (pip|compile): ok", other) and "distutils.log imports" in other, other


# ------------------------------------------------------------------ the summary's row for the build

@pytest.mark.parametrize("attempts, imported, shown, ok", [
    ([("pip", False, "exit 1: error: command 'x86_64-linux-gnu-gcc' failed"), ("compile", True, "loaded")],
     "ok: ffcv 1.0.2 /m/ffcv/site/ffcv/__init__.py", "pip failed (exit 1: error: command", True),
    ([(name, False, "exit 1") for name in ATTEMPTS], "not tried", "every attempt failed", False),
    ([("pip", True, "loaded")], "FAILED: ModuleNotFoundError: No module named 'numba'", "No module named", False),
])
def test_summary_row_of_the_offline_build(tmp_path, attempts, imported, shown, ok):
    from ffmix.bench import gpucheck
    folder = tmp_path / "gc"
    (folder / "ffcv").mkdir(parents=True)
    (folder / "steps.tsv").write_text(f"prepare\t{0 if ok else 1}\t6.5\n")
    used = next((name for name, worked, _ in attempts if worked), None)
    report = {"python": "3.12.3", "attempts": [{"name": n, "ok": w, "detail": d, "seconds": 1.0}
                                               for n, w, d in attempts],
              "used": used, "import": imported, "distutils": "as installed"}
    (folder / "ffcv" / "ffcv-build.json").write_text(json.dumps(report))
    row = next(r for r in gpucheck.summarize(folder)["rows"] if r["step"] == "prepare")
    assert row["ok"] is ok and shown in row["figures"] and "Python 3.12.3" in row["figures"]
    if ok:
        assert "compile worked" in row["figures"]
    no_build = tmp_path / "plain"
    no_build.mkdir()
    assert all(r["step"] != "prepare" for r in gpucheck.summarize(no_build)["rows"])   # make gpu-check's table
