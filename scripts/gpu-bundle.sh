#!/usr/bin/env bash
# Everything `scripts/gpu-check.sh --offline` needs from outside the checkout, for a GPU machine that reaches
# no package registry, in one ignored folder (default gpu-bundle/, at most 50 MiB) to carry beside the tree:
#   ffcv/            FFCV 1.0.2's source distribution (pip download --no-binary :all:), built there
#   debs/            Debian's OpenCV core/imgproc and libjpeg-turbo packages, headers and shared libraries,
#                    with the libraries those need (apt-get download: the archive's files, not this machine's)
#   prebuilt/        _libffcv.abi3.so, the fallback when the build fails there (stable ABI, built here)
#   fashion-mnist/   the four IDX files of Fashion-MNIST (the GPU machine has no dataset package)
#   MANIFEST         what each file is, why it is there, its size and sha256
# Needs network (PyPI and the Debian archive), apt-get, dpkg-deb, readelf and a C++ compiler. The folder is
# written beside its final place and renamed when complete; the last line gives its size.
#   scripts/gpu-bundle.sh [DIR]      (DIR relative to the checkout; default gpu-bundle)
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${1:-gpu-bundle}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LIMIT_MIB=50
FFCV=ffcv==1.0.2

# Debian package -> why it is in the bundle. The target is assumed to have libc6, libstdc++6, libgcc-s1 and
# zlib1g (any machine with Python and a C++ toolchain); the closure check below fails if anything else is
# needed and not here.
declare -A WHY=(
    [libopencv-core406]="libopencv_core.so.406: FFCV's _libffcv links it (cv::Mat)"
    [libopencv-imgproc406]="libopencv_imgproc.so.406: FFCV's _libffcv links it (cv::resize)"
    [libopencv-core-dev]="OpenCV core headers and the libopencv_core.so name the linker wants"
    [libopencv-imgproc-dev]="OpenCV imgproc headers and the libopencv_imgproc.so name the linker wants"
    [libturbojpeg0]="libturbojpeg.so.0: FFCV's JPEG decoder"
    [libturbojpeg0-dev]="turbojpeg.h and the libturbojpeg.so name the linker wants"
    [libjpeg62-turbo]="libjpeg.so.62: ffmix's JPEG region decoder (ffmix/native) links it"
    [libjpeg62-turbo-dev]="jpeglib.h and the libjpeg.so name ffmix's region decoder is built against"
    [libtbb12]="libtbb.so.12: libopencv_core's threads"
    [liblapack3]="liblapack.so.3: libopencv_core links it"
    [libblas3]="libblas.so.3: liblapack and libopencv_core link it"
    [libgfortran5]="libgfortran.so.5: liblapack and libblas link it"
    [libquadmath0]="libquadmath.so.0: libgfortran links it"
    [libglx0]="libGLX.so.0: Debian's libopencv_core links OpenGL's GLX"
    [libglvnd0]="libGLdispatch.so.0: libGLX links it"
    [libx11-6]="libX11.so.6: libGLX links it"
    [libxcb1]="libxcb.so.1: libX11 links it"
    [libxau6]="libXau.so.6: libxcb links it"
    [libxdmcp6]="libXdmcp.so.6: libxcb links it"
    [libbsd0]="libbsd.so.0: libXdmcp links it"
    [libmd0]="libmd.so.0: libbsd links it"
)
ASSUMED_ON_TARGET="libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libz.so.1 ld-linux-x86-64.so.2 libpthread.so.0 libdl.so.2 librt.so.1"

fail() { echo "gpu-bundle: $*" >&2; exit 1; }
for tool in apt-get dpkg-deb readelf sha256sum; do
    command -v "$tool" >/dev/null || fail "needs $tool (a Debian machine with binutils)"
done
[ -d "$FMNIST" ] || fail "Fashion-MNIST not found at $FMNIST (apt-get install dataset-fashion-mnist, or set FMNIST=DIR)"

parent=$(dirname "$BUNDLE")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.gpu-bundle.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{ffcv,debs,prebuilt,fashion-mnist}

echo "gpu-bundle: FFCV's source distribution ($FFCV)"
# (pip prints one warning per missing local index folder on some machines: noise here)
"$PY" -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check "$FFCV" -d "$work/ffcv" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; } || true
[ -f "$work/ffcv/ffcv-1.0.2.tar.gz" ] || fail "pip download $FFCV failed (no network?)"

echo "gpu-bundle: ${#WHY[@]} Debian packages"
# as root, apt's download sandbox user cannot write into a mktemp folder; the files are checked below anyway
sandbox=(); [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
(cd "$work/debs" && apt-get -q "${sandbox[@]}" download "${!WHY[@]}" >/dev/null) \
    || fail "apt-get download failed (no network, or run apt-get update first)"

echo "gpu-bundle: Fashion-MNIST from $FMNIST"
cp "$FMNIST"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$work/fashion-mnist/" \
    || fail "$FMNIST lacks one of the four IDX files"

echo "gpu-bundle: the stable-ABI fallback _libffcv.abi3.so, against the bundle's headers"
python3 scripts/ffcv_offline.py prebuilt --bundle "$work" --out "$work/prebuilt/_libffcv.abi3.so"

# Every library the bundle's libraries (and the fallback) need is in the bundle or assumed on the target.
unpacked=$(mktemp -d)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$unpacked"; done
provided=$(find "$unpacked" -name '*.so*' -printf '%f\n' | sort -u)
needed=$(find "$unpacked" "$work/prebuilt" -name '*.so*' -type f -exec readelf -d {} + 2>/dev/null \
    | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
rm -rf "$unpacked"
for lib in $needed; do
    grep -qxF "$lib" <<<"$provided" || [[ " $ASSUMED_ON_TARGET " == *" $lib "* ]] \
        || fail "$lib is needed by a bundled library but neither bundled nor assumed on the target; add its package"
done

why_of() {   # a bundle file -> why it is there
    case "$1" in
        ffcv/*) echo "FFCV $FFCV source; gpu-check --offline builds its _libffcv there" ;;
        prebuilt/*) echo "_libffcv built here with Py_LIMITED_API (abi3): the fallback if the build there fails" ;;
        fashion-mnist/*) echo "Fashion-MNIST IDX file: gpu-check trains on it (no dataset package there)" ;;
        debs/*) local name; name=$(basename "$1"); echo "${WHY[${name%%_*}]}" ;;
    esac
}
{
    echo "# gpu-bundle for scripts/gpu-check.sh --offline, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -n1)"
    echo "# the prebuilt fallback needs a glibc at least this new; libraries assumed on the target: $ASSUMED_ON_TARGET"
    echo "# bytes  sha256  path  why"
    (cd "$work" && find . -type f ! -name MANIFEST | sed 's|^\./||' | sort) | while read -r file; do
        printf '%s  %s  %s  %s\n' "$(stat -c %s "$work/$file")" "$(sha256sum "$work/$file" | cut -c1-64)" \
            "$file" "$(why_of "$file")"
    done
} > "$work/MANIFEST"

bytes=$(du -sb "$work" | cut -f1)
((bytes <= LIMIT_MIB * 1024 * 1024)) || fail "the bundle is $((bytes / 1024 / 1024)) MiB, over $LIMIT_MIB MiB"
chmod 755 "$work"     # mktemp made it private
rm -rf "$BUNDLE"
mv "$work" "$BUNDLE"
trap - EXIT
echo "gpu-bundle: $BUNDLE holds $(($(wc -l < "$BUNDLE/MANIFEST") - 3)) files, $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB (limit $LIMIT_MIB MiB)"
