"""ffmix's JPEG region decoder (ffmix/native/jpeg_region.c) against libffcv's full decode, on clean and damaged
data, and the decoders' fallback when it cannot be built."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from ffcv.libffcv import imdecode

from ffmix import native
from ffmix.errors import FfmixWarning
from ffmix.bench.decode_quality import BoxDecoder
from ffmix.ops import decoders
from ffmix.ops.decoders import region_work_bytes
from ffmix.ops.decode_kernels import DECODED, EOI_SEARCH, ends_with_eoi
from ffmix.ops.jpeg_region import (COL0, COLS, REGION_BAD_ARGS, REGION_FAILED, ROW0, ROWS, SCALED_HEIGHT,
                                   SCALED_WIDTH, decode_region)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SUBSAMPLING = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
               "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}


def photo_like(rng, height, width, gray=False):
    """Smooth noise: a JPEG of it has real chroma and texture, as photos do."""
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (7, 7), 2.5)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image


def encode(image, subsampling="420", progressive=False, quality=90):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE,
                                            int(progressive), cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                            SUBSAMPLING[subsampling]])
    assert ok
    return data.ravel()


def full_decode(data, height, width, denom):
    """libffcv's (FFCV's) decode of the whole JPEG at 1/denom scale: the reference."""
    out = np.zeros(((height + denom - 1) // denom, (width + denom - 1) // denom, 3), np.uint8)
    assert imdecode(data, out, height, width, height, width, 0, 0, 1, denom, False, False) == 0
    return out


def random_box(rng, height, width):
    top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
    return top, left, int(rng.integers(top + 1, height + 1)), int(rng.integers(left + 1, width + 1))


@pytest.mark.parametrize("subsampling", sorted(SUBSAMPLING))
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_region_pixels_equal_a_full_decode_at_every_scale(subsampling, progressive):
    rng = np.random.default_rng(len(subsampling) + progressive)
    for height, width in ((75, 121), (64, 48), (17, 203)):
        data = encode(photo_like(rng, height, width), subsampling, progressive)
        for denom in (1, 2, 4, 8):
            full = full_decode(data, height, width, denom)
            for _ in range(40):
                top, left, bottom, right = random_box(rng, *full.shape[:2])
                status, window, pixels = decode_region(data, denom, top, left, bottom, right)
                assert status == 0
                assert (window[SCALED_HEIGHT], window[SCALED_WIDTH]) == full.shape[:2]
                assert window[ROW0] == top and window[ROWS] == bottom - top
                col0, cols = int(window[COL0]), int(window[COLS])
                assert col0 <= left and right <= col0 + cols <= full.shape[1]     # the iMCU-widened columns
                np.testing.assert_array_equal(pixels[:, left - col0:right - col0], full[top:bottom, left:right])


def test_gray_jpegs_give_three_equal_channels_as_ffcv_does():
    rng = np.random.default_rng(3)
    data = encode(photo_like(rng, 50, 70, gray=True))
    full = full_decode(data, 50, 70, 2)
    status, window, pixels = decode_region(data, 2, 3, 4, 20, 30)
    assert status == 0
    np.testing.assert_array_equal(pixels[:, 4 - window[COL0]:30 - window[COL0]], full[3:20, 4:30])
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_bad_arguments_and_capacity_are_refused_without_writing_past_it():
    import ctypes

    rng = np.random.default_rng(4)
    data = encode(photo_like(rng, 40, 60))
    for denom, box in ((3, (0, 0, 5, 5)), (1, (5, 5, 5, 9)), (1, (0, 0, 41, 10)), (2, (0, 0, 10, 31))):
        assert decode_region(data, denom, *box)[0] == REGION_BAD_ARGS
    function = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, *[ctypes.c_int] * 5,
                                ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)(native.jpeg_region_function())
    out, window = np.full(1000, 7, np.uint8), np.zeros(6, np.int64)
    # rows 0..10 of 40+ columns need far more than 100 bytes: refused before decoding, nothing written
    assert function(data.ctypes.data, data.size, 1, 0, 0, 10, 40, out.ctypes.data, 100, window.ctypes.data) \
        == REGION_BAD_ARGS
    assert (out == 7).all()


def damage(data, kind, rng):
    out = data.copy()
    size = len(out)
    if kind == "flipped":
        out[rng.integers(size // 2, size - 2, 6)] ^= 0xFF
    elif kind == "zeroed":
        out[size // 2:] = 0
    elif kind == "random":
        out[:] = rng.integers(0, 256, size, dtype=np.uint8)
    elif kind == "cut":                      # a cut-off copy: the first part only
        out = out[:int(size * rng.uniform(0.3, 0.95))].copy()
    return out


def decode_sample(data, height, width, box, out_size, exact=False):
    """decode_one on one JPEG as the decoders' kernel calls it: (status, output pixels, 77 where unwritten)."""
    out = np.full((*out_size, 3), 77, np.uint8)
    work = region_work_bytes(np.array([height]), np.array([width]), *out_size)
    return BoxDecoder(height * width, work).decode(data, height, width, box, out, exact), out


@pytest.mark.parametrize("kind", ["zeroed", "random", "cut"])
def test_cut_zeroed_or_random_jpegs_always_fail(kind):
    # No end-of-image marker (a cut-off or zeroed end) or no JPEG header: the sample fails before any
    # decoding, wherever its box lies; the output slot is never written.
    rng = np.random.default_rng(["zeroed", "random", "cut"].index(kind))
    for trial in range(60):
        height, width = int(rng.integers(24, 160)), int(rng.integers(24, 160))
        clean = encode(photo_like(rng, height, width), ("420", "444")[trial % 2], progressive=trial % 3 == 0)
        top, left, bottom, right = random_box(rng, height, width)
        box, out_size = (top, left, bottom - top, right - left), (int(rng.integers(4, 40)), int(rng.integers(4, 40)))
        assert decode_sample(clean, height, width, box, out_size)[0] == DECODED
        status, out = decode_sample(damage(clean, kind, rng), height, width, box, out_size)
        assert status != DECODED and (out == 77).all()


def test_flipped_bytes_fail_or_give_the_damaged_jpegs_own_rows():
    # Bytes flipped inside the entropy-coded data: libjpeg warns when the damage desynchronises the data it
    # reads (a failure); the region decoder stops after the box's last row, so damage below it, or damage
    # libjpeg decodes without noticing, gives the rows a full decode of the same bytes gives: this sample's
    # own pixels, never another's. (ffmix inspect --verify and exact_decode=True read every byte.)
    rng = np.random.default_rng(6)
    failed = 0
    for trial in range(80):
        height, width = int(rng.integers(24, 160)), int(rng.integers(24, 160))
        broken = damage(encode(photo_like(rng, height, width), ("420", "444")[trial % 2]), "flipped", rng)
        denom = int(rng.choice([1, 2, 4, 8]))
        scaled = ((height + denom - 1) // denom, (width + denom - 1) // denom)
        top, left, bottom, right = random_box(rng, *scaled)
        status, window, pixels = decode_region(broken, denom, top, left, bottom, right)
        if status != 0:
            assert status == REGION_FAILED
            failed += 1
            continue
        tolerant = np.zeros((*scaled, 3), np.uint8)      # libffcv's decode, warnings or not
        imdecode(broken, tolerant, height, width, height, width, 0, 0, 1, denom, False, False)
        col0 = int(window[COL0])
        np.testing.assert_array_equal(pixels[:, left - col0:right - col0], tolerant[top:bottom, left:right])
    assert failed > 0


def test_ends_with_eoi_matches_rfind():
    rng = np.random.default_rng(5)
    for _ in range(300):
        size = int(rng.integers(2, 3 * EOI_SEARCH))
        data = rng.choice(np.array([0x00, 0xFF, 0xD9, 0x12], np.uint8), size)
        tail = bytes(data[-EOI_SEARCH:])
        assert ends_with_eoi(data) == (tail.rfind(b"\xff\xd9") >= 0)


def test_without_the_region_decoder_the_decoders_warn_once_and_decode_exactly(monkeypatch):
    monkeypatch.setattr(decoders, "jpeg_region_function", lambda: None)
    monkeypatch.setattr(decoders, "unavailable_reason", lambda: "no C compiler; install gcc")
    monkeypatch.setattr(decoders, "_warned_no_region", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decoders.region_decoder_at(needed=True) == 0
        assert decoders.region_decoder_at(needed=True) == 0
        assert decoders.region_decoder_at(needed=False) == 0
    messages = [str(w.message) for w in caught if issubclass(w.category, FfmixWarning)]
    assert len(messages) == 1 and "install gcc" in messages[0] and "exact_decode=True" in messages[0]


def test_a_read_only_package_folder_builds_into_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "FOLDER", tmp_path / "read-only")
    monkeypatch.setattr(native, "LIBRARY", tmp_path / "read-only" / "_jpeg_region.so")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = native.build()
    assert built.parent == tmp_path / "cache" / "ffmix" and built.name.startswith("_jpeg_region-")
    assert native.build() == built                                   # fresh: not compiled again
    import ctypes
    assert ctypes.CDLL(str(built)).ffmix_region_version() == native.VERSION


def test_build_is_refused_cleanly_without_a_compiler(monkeypatch):
    before = native.LIBRARY.stat().st_mtime_ns
    monkeypatch.setenv("CC", "no-such-compiler-ffmix")
    with pytest.raises(OSError, match="no C compiler"):
        native.build(force=True)
    assert native.LIBRARY.stat().st_mtime_ns == before          # the built library was left alone
    assert native.compile_command(native.LIBRARY)[0] == "no-such-compiler-ffmix"
