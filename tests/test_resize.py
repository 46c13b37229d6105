"""ffmix.ops.resize_kernels.resize_box against its float64 oracle (resize_reference) and OpenCV's INTER_AREA.

The kernel's weights are fixed point (2**12 horizontally, 2**11 vertically, rounded cumulatively so each
output's sum is exact) and it rounds once at the end, so it may differ from the exact float64 filter by one
level where the exact value lies near a half: never more.
"""
import numpy as np
import pytest

from ffmix.ops.resize_kernels import (BAD_BOX, RESIZED, SHORT_WORK, resize_array, resize_box,
                                      resize_work_bytes)
from ffmix.ops.resize_reference import axis_weights, resize_box_reference

GUARD = 64
GUARD_BYTE = 0xA5


def random_image(rng, height, width, smooth):
    """Noise, or (``smooth``) noise averaged over neighbours, like a photo's gentle gradients."""
    image = rng.integers(0, 256, (height, width, 3)).astype(np.float64)
    if smooth:
        for axis in (0, 1):
            image = (image + np.roll(image, 1, axis) + np.roll(image, -1, axis)) / 3
    return np.round(image).astype(np.uint8)


def random_box(rng, height, width, kind):
    """(top, left, box_height, box_width) inside the image: fractional, integer, touching the edges, 1 px."""
    if kind == "integer":
        box_height, box_width = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        return (int(rng.integers(0, height - box_height + 1)), int(rng.integers(0, width - box_width + 1)),
                box_height, box_width)
    if kind == "edges":
        return 0.0, 0.0, float(height), float(width)
    if kind == "one_pixel":
        return float(rng.integers(0, height)), float(rng.integers(0, width)), 1.0, 1.0
    box_height, box_width = rng.uniform(0.05, height), rng.uniform(0.05, width)
    top, left = rng.uniform(0, height - box_height), rng.uniform(0, width - box_width)
    if kind == "fraction_to_edge":       # ends exactly at the bottom right corner
        top, left = height - box_height, width - box_width
    return top, left, box_height, box_width


def out_size(rng, box_side, direction):
    if direction == "down":
        return int(rng.integers(1, max(1, int(box_side)) + 1))
    return int(rng.integers(max(1, int(np.ceil(box_side))), int(np.ceil(3 * box_side)) + 2))


def guarded_resize(image, box, out_height, out_width, work_bytes=None):
    """resize_box into a buffer with guard bytes before and after the output and after the work area.
    Returns (status, output, output guards intact, work guard intact)."""
    height, width = image.shape[:2]
    out_bytes = out_height * out_width * 3
    out = np.full(out_bytes + 2 * GUARD, GUARD_BYTE, np.uint8)
    if work_bytes is None:
        work_bytes = resize_work_bytes(height, width, out_height, out_width)
    work = np.full(work_bytes + GUARD, GUARD_BYTE, np.uint8)
    status = resize_box(image.ctypes.data, image.strides[0], height, width, *map(float, box),
                        out.ctypes.data + GUARD, out_height, out_width, work.ctypes.data, work_bytes)
    guards = (out[:GUARD] == GUARD_BYTE).all() and (out[GUARD + out_bytes:] == GUARD_BYTE).all()
    return (status, out[GUARD:GUARD + out_bytes].reshape(out_height, out_width, 3), guards,
            (work[work_bytes:] == GUARD_BYTE).all())


DIRECTIONS = [("down", "down"), ("up", "up"), ("down", "up"), ("up", "down")]
KINDS = ["fractional", "integer", "edges", "one_pixel", "fraction_to_edge"]


@pytest.mark.parametrize("directions", DIRECTIONS, ids=lambda d: "-".join(d))
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_within_one_level(kind, directions):
    rng = np.random.default_rng([KINDS.index(kind), DIRECTIONS.index(directions)])
    for trial in range(25):
        height, width = (int(v) for v in rng.integers(1, 70, 2))
        image = random_image(rng, height, width, smooth=trial % 2 == 1)
        box = random_box(rng, height, width, kind)
        out_height, out_width = out_size(rng, box[2], directions[0]), out_size(rng, box[3], directions[1])
        status, out, guards, work_guard = guarded_resize(image, box, out_height, out_width)
        assert status == RESIZED
        assert guards and work_guard, "wrote outside the output or past the work area"
        expected = resize_box_reference(image, *box, out_height, out_width)
        difference = np.abs(out.astype(np.int32) - expected)
        assert difference.max() <= 1, (kind, directions, image.shape, box, out_height, out_width)


def test_output_one_pixel_and_padded_rows():
    rng = np.random.default_rng(5)
    for trial in range(40):
        height, width = (int(v) for v in rng.integers(1, 60, 2))
        padded = random_image(rng, height, width + 7, smooth=False)
        image = padded[:, :width]                                  # rows of (width + 7) * 3 bytes
        box = random_box(rng, height, width, "fractional")
        for out_height, out_width in ((1, 1), (1, int(rng.integers(1, 50))), (int(rng.integers(1, 50)), 1)):
            out = resize_array(image, *box, out_height, out_width)
            expected = resize_box_reference(np.ascontiguousarray(image), *box, out_height, out_width)
            assert np.abs(out.astype(np.int32) - expected).max() <= 1


def test_constant_images_stay_constant():
    rng = np.random.default_rng(6)
    for value in (0, 1, 127, 128, 254, 255):
        for trial in range(12):
            height, width = (int(v) for v in rng.integers(1, 80, 2))
            image = np.full((height, width, 3), value, np.uint8)
            box = random_box(rng, height, width, KINDS[trial % len(KINDS)])
            out_height, out_width = (int(v) for v in rng.integers(1, 120, 2))
            assert (resize_array(image, *box, out_height, out_width) == value).all()


def test_each_axis_weights_sum_to_one_in_the_reference():
    """The oracle's own premise: every output's footprint is covered exactly once."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        size = int(rng.integers(1, 100))
        length = rng.uniform(0.01, size)
        lo = rng.uniform(0, size - length)
        weights = axis_weights(lo, length, size, int(rng.integers(1, 300)))
        assert np.allclose(weights.sum(axis=1), 1.0)


def test_short_work_and_bad_boxes_write_nothing():
    rng = np.random.default_rng(8)
    image = random_image(rng, 40, 50, smooth=False)
    needed = resize_work_bytes(40, 50, 30, 20)
    for work_bytes in (0, 16, 200):
        status, out, guards, work_guard = guarded_resize(image, (1.5, 2.5, 30.0, 40.0), 30, 20, work_bytes)
        assert status == SHORT_WORK and guards and work_guard and (out == GUARD_BYTE).all()
    for box in ((-1.0, 0.0, 10.0, 10.0), (0.0, 0.0, 41.0, 10.0), (0.0, 45.0, 10.0, 6.0), (0.0, 0.0, 0.0, 10.0),
                (0.0, 0.0, 10.0, -1.0), (np.nan, 0.0, 10.0, 10.0)):
        status, out, guards, work_guard = guarded_resize(image, box, 30, 20, needed)
        assert status == BAD_BOX and guards and work_guard and (out == GUARD_BYTE).all()


def test_work_bytes_bound_covers_every_box():
    """resize_work_bytes(H, W, ...) is enough for every box of every image up to H x W, the bound's worst
    cases (tiny outputs, boxes whose footprints straddle an extra pixel) included."""
    rng = np.random.default_rng(9)
    for _ in range(300):
        max_height, max_width = (int(v) for v in rng.integers(1, 90, 2))
        height, width = int(rng.integers(1, max_height + 1)), int(rng.integers(1, max_width + 1))
        image = random_image(rng, height, width, smooth=False)
        box = random_box(rng, height, width, ["fractional", "integer", "edges"][_ % 3])
        out_height, out_width = (int(v) for v in rng.integers(1, 12, 2))
        work_bytes = resize_work_bytes(max_height, max_width, out_height, out_width)
        status, _, guards, work_guard = guarded_resize(image, box, out_height, out_width, work_bytes)
        assert status == RESIZED and guards and work_guard


# ------------------------------------------------------------------------------------------------ OpenCV

# Agreement with cv2.resize(crop, INTER_AREA) on integer boxes, per kind of box (measured 2026-12-02 with
# opencv-python 5.1.0, 600 boxes each, half noise and half smoothed noise; the bounds are those figures with a
# margin, so a filter that drifts from OpenCV fails):
#   both axes shrink: max 1 level, mean 0.011 (OpenCV's float weights, its 1e-3 sliver cut-off)
#   both grow:        mean 0.11; 0.17 % of values differ by more than 1 (OpenCV computes an output's first
#                     pixel as floor(dx * (1 / inv_scale)), which lands one pixel short where dx * scale is an
#                     integer: e.g. 24 -> 74 px at dx = 37 takes pixel 11, not 12; the oracle agrees with
#                     this kernel there)
#   one of each:      mean 5.7, 30 % of values off by more than 1: OpenCV samples the shrinking axis with its
#                     two enlarging taps; this kernel averages it (by design: no aliasing)
CV2_BOUNDS = {"down": (1, 0.02, 0.0), "up": (255, 0.2, 0.004), "mixed": (255, 8.0, 0.45)}


def opencv_agreement(kind, trials=600):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(["down", "up", "mixed"].index(kind) + 100)
    worst, sums, count, far = 0, 0.0, 0, 0
    for trial in range(trials):
        height, width = (int(v) for v in rng.integers(2, 90, 2))
        image = random_image(rng, height, width, smooth=trial % 2 == 1)
        top, left, box_height, box_width = random_box(rng, height, width, "integer")
        directions = {"down": ("down", "down"), "up": ("up", "up"), "mixed": DIRECTIONS[2 + trial % 2]}[kind]
        out_height, out_width = out_size(rng, box_height, directions[0]), out_size(rng, box_width, directions[1])
        crop = np.ascontiguousarray(image[top:top + box_height, left:left + box_width])
        expected = cv2.resize(crop, (out_width, out_height), interpolation=cv2.INTER_AREA).reshape(
            out_height, out_width, 3).astype(np.int32)
        difference = np.abs(resize_array(image, top, left, box_height, box_width, out_height, out_width)
                            .astype(np.int32) - expected)
        worst, sums, count = max(worst, int(difference.max())), sums + difference.sum(), count + difference.size
        far += int((difference > 1).sum())
    return worst, sums / count, far / count


@pytest.mark.parametrize("kind", ["down", "up", "mixed"])
def test_agrees_with_opencv_inter_area(kind):
    worst, mean, far = opencv_agreement(kind)
    max_bound, mean_bound, far_bound = CV2_BOUNDS[kind]
    print(f"{kind}: max {worst}, mean {mean:.4f}, share > 1: {far:.4%}")
    assert worst <= max_bound and mean <= mean_bound and far <= far_bound, (worst, mean, far)


def test_kernel_allocates_nothing():
    """No Numba heap allocation inside resize_box (NRT statistics, in a fresh process that enables them)."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np
from numba.core.runtime import rtsys
from ffmix.ops.resize_kernels import resize_box, resize_work_bytes
image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
out = np.empty((224, 224, 3), np.uint8)
work = np.empty(resize_work_bytes(300, 400, 224, 224), np.uint8)
boxes = [(1.5, 2.5, 100.0, 120.0), (1.5, 2.5, 290.0, 390.0), (0.0, 0.0, 300.0, 400.0), (3.0, 4.0, 9.0, 9.5)]
def run(box):
    return resize_box(image.ctypes.data, 1200, 300, 400, *box, out.ctypes.data, 224, 224, work.ctypes.data,
                      work.nbytes)
for box in boxes:
    assert run(box) == 0
before = rtsys.get_allocation_stats()
for box in boxes:
    run(box)
after = rtsys.get_allocation_stats()
print(after.alloc - before.alloc, after.mi_alloc - before.mi_alloc)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, NUMBA_NRT_STATS="1", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0"]


def test_callable_from_parallel_compiled_code():
    """The decoders call resize_box from a prange loop, one scratch buffer per worker: same pixels as one by
    one from Python."""
    from numba import njit, prange

    @njit(parallel=True)
    def resize_all(sources, boxes, out, work, work_bytes):
        for i in prange(sources.shape[0]):
            resize_box(sources[i, 0], sources[i, 1], sources[i, 2], sources[i, 3], boxes[i, 0], boxes[i, 1],
                       boxes[i, 2], boxes[i, 3], np.int64(out[i].ctypes.data), out.shape[1], out.shape[2],
                       np.int64(work[i].ctypes.data), work_bytes)

    rng = np.random.default_rng(10)
    images = [random_image(rng, int(rng.integers(20, 90)), int(rng.integers(20, 90)), smooth=True)
              for _ in range(12)]
    boxes = [random_box(rng, *image.shape[:2], "fractional") for image in images]
    sources = np.array([(image.ctypes.data, image.strides[0], *image.shape[:2]) for image in images], np.int64)
    work_bytes = resize_work_bytes(90, 90, 40, 50)
    out = np.zeros((len(images), 40, 50, 3), np.uint8)
    resize_all(sources, np.array(boxes, np.float64), out, np.zeros((len(images), work_bytes), np.uint8),
               work_bytes)
    for image, box, got in zip(images, boxes, out):
        assert (got == resize_array(image, *box, 40, 50)).all()
