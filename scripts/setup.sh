#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system libraries FFCV builds against, the
# Fashion-MNIST package the demo uses, and a .venv with ffmix installed in editable mode.
# A second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc and libjpeg-dev (Debian's libjpeg62-turbo-dev): ffmix's JPEG region decoder (ffmix/native) is built from C
APT_PACKAGES=(pkg-config libopencv-dev libturbojpeg0-dev libjpeg-dev gcc dataset-fashion-mnist)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# pip prints one warning per missing local index folder on some machines; they are noise here.
pip_quiet() {
    .venv/bin/python -m pip -q "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.ffmix-installed
# Reinstall only when the declared dependencies changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing ffmix and its dependencies into .venv (first run: a few minutes)"
    pip_quiet install --upgrade pip setuptools wheel
    # FFCV's setup.py imports numpy and finds OpenCV/libjpeg-turbo through pkg-config, so it
    # is built without build isolation after its build needs are present.
    pip_quiet install numpy
    pip_quiet install --no-build-isolation "ffcv==1.0.2"
    pip_quiet install -e '.[test]'
    touch "$stamp"
fi

# ffmix's JPEG region decoder (ffmix/native/jpeg_region.c): compiled once here against the system libjpeg; ffmix
# would otherwise compile it on first use, or, without a compiler, decode JPEGs whole with a warning.
.venv/bin/python -m ffmix.native || echo "setup: warning: the region decoder was not built (see above)" >&2

# ffmix's kernels are C entry points compiled by Numba with cache=True: compile them once here (about a minute on
# 2 cores; the cache lives beside the sources), so the first loader, demo or test run does not pay for it. When any
# of ffmix's sources changes later, ffmix drops the cache on import and it is compiled again (ffmix/kernel_cache.py:
# Numba alone would keep a kernel whose callee in another file changed).
if ! ls ffmix/ops/__pycache__/*.nbi >/dev/null 2>&1; then
    echo "setup: compiling ffmix's kernels (first run: about a minute)"
    .venv/bin/python -c "import ffmix.ops.batch, ffmix.ops.decode_kernels, ffmix.ops.auto_augment, ffmix.ops.erasing"
fi
