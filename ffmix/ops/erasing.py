"""RandomErasing (Zhong et al. 2017, as timm applies it after mixing and normalising) as an FFCV operation on
the float32 batch the CPU float path writes, in place, seeded per sample.

    pipeline = [decoder, mixing.image_op(FloatOutput(mean, std)), RandomErasing(0.25, mode="pixel",
                control=mixing.control, seed=mixing.seed), ToTensor()]

Per sample, from its own stream keyed by (seed, epoch, sample index, ``ERASE_STREAM``), as timm's ``_erase``:
with chance ``probability`` it erases ``count`` boxes, ``count`` uniform in [min_count, max_count]; each box
tries up to ten times: area fraction uniform in [min_area, max_area] divided by ``count``, log aspect uniform,
sides ``round(sqrt(area * aspect))`` (h) and ``round(sqrt(area / aspect))`` (w), accepted when ``h < H`` and
``w < W``, top and left uniform over the positions that fit. The box takes, in normalised units: 0 ("const",
the mean colour), one standard-normal value per channel ("rand"), or one per pixel and channel ("pixel").
Labels are not touched (as in timm). ``draw_erasures`` makes every random choice; ``erase_images`` only writes.

Every address the C entry point reads or writes, and its owner (whose lifetime covers the compiled code):

===========  ===============================================  =============================================
argument     what it points at                                owner
===========  ===============================================  =============================================
images_at    the float32 batch, erased in place               FFCV's preallocated buffers (the output of the
                                                              mixing op before this one)
indices_at   the batch's sample indices as uint64             FFCV's preallocated buffers (index scratch),
                                                              filled by the closure
control_at   the epoch (``control.ControlBlock``)             the ``ControlBlock`` passed in, held by the op
                                                              (``self.control``, set in ``__init__``)
erase_at     the op's settings (``settings.ERASE_SETTINGS``)  the op (``self.record``, made in ``__init__``,
                                                              never replaced; written once, then only read)
===========  ===============================================  =============================================

The batch's shape travels by value; the parameters and their order come from ``settings.ENTRY_POINTS``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import carray, njit, prange

from ..errors import FfmixError
from .augment import sample_key
from .batch import copy_indices, index_scratch
from .control import EPOCH, ControlBlock, as_pointer, read_control
from .rng import next_u64, standard_normal, uniform
from .settings import ERASE_RECORD, ERASE_SETTINGS, entry_point, make_record, named_fields, read_settings

ERASE_STREAM = np.uint64(0x2545F4914F6CDD1D)
MODES = {"const": 0, "rand": 1, "pixel": 2}
MODE_CONST, MODE_RAND, MODE_PIXEL = 0, 1, 2
TRIES = 10

@njit(cache=True)
def draw_erasures(key, channels, height, width, probability, mode, min_count, max_count, min_area, max_area,
                  log_aspect_low, log_aspect_high):
    """One sample's boxes (the settings as ``ERASE_SETTINGS`` names them; ``erase_images`` passes them by
    keyword): int64 (max_count, 4) rows ``(top, left, h, w)`` (unused rows 0), the number used, float32
    (max_count, channels) colours ("rand"; else 0) and uint64 (max_count,) keys of each box's pixel noise
    ("pixel": ``box_noise`` expands them). NumPy reference: ``erasing_reference.sample_erasures``."""
    boxes = np.zeros((max_count, 4), np.int64)
    colours = np.zeros((max_count, channels), np.float32)
    noise_keys = np.zeros(max_count, np.uint64)
    state = np.empty(1, np.uint64)
    state[0] = key
    if uniform(state) >= probability:
        return boxes, 0, colours, noise_keys
    count = min_count + np.int64(next_u64(state) % np.uint64(max_count - min_count + 1))
    used = 0
    area = np.float64(height * width)
    for _ in range(count):
        for _attempt in range(TRIES):
            target_area = (min_area + (max_area - min_area) * uniform(state)) * area / count
            aspect = math.exp(log_aspect_low + (log_aspect_high - log_aspect_low) * uniform(state))
            box_h = np.int64(np.rint(math.sqrt(target_area * aspect)))
            box_w = np.int64(np.rint(math.sqrt(target_area / aspect)))
            if box_w < width and box_h < height:
                top = np.int64(next_u64(state) % np.uint64(height - box_h + 1))
                left = np.int64(next_u64(state) % np.uint64(width - box_w + 1))
                boxes[used, 0], boxes[used, 1], boxes[used, 2], boxes[used, 3] = top, left, box_h, box_w
                if mode == MODE_RAND:
                    for c in range(channels):
                        colours[used, c] = standard_normal(state)
                elif mode == MODE_PIXEL:
                    noise_keys[used] = next_u64(state)
                used += 1
                break
    return boxes, used, colours, noise_keys


@njit(cache=True)
def box_noise(noise_key, channels, box_h, box_w):
    """float32 (channels, box_h, box_w) standard normals from stream ``noise_key``, in (c, y, x) order, two per
    Box-Muller step (its cosine and sine halves: half the logarithms and uniforms of one per step)."""
    state = np.empty(1, np.uint64)
    state[0] = noise_key
    noise = np.empty((channels, box_h, box_w), np.float32)
    flat = noise.reshape(-1)
    for k in range(0, flat.shape[0], 2):
        radius = np.sqrt(-2.0 * np.log(1.0 - uniform(state)))
        angle = 2.0 * np.pi * uniform(state)
        flat[k] = radius * np.cos(angle)
        if k + 1 < flat.shape[0]:
            flat[k + 1] = radius * np.sin(angle)
    return noise


@njit(cache=True)
def erase_boxes(image, boxes, used, colours, noise_keys, mode, channels_last):
    """Write the drawn boxes into one float32 image, (C, H, W), or (H, W, C) if ``channels_last``."""
    channels = image.shape[2] if channels_last else image.shape[0]
    for b in range(used):
        top, left, box_h, box_w = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
        noise = (box_noise(noise_keys[b], channels, box_h, box_w) if mode == MODE_PIXEL
                 else np.zeros((0, 0, 0), np.float32))
        for c in range(channels):
            for y in range(box_h):
                for x in range(box_w):
                    value = noise[c, y, x] if mode == MODE_PIXEL else colours[b, c]
                    if channels_last:
                        image[top + y, left + x, c] = value
                    else:
                        image[c, top + y, left + x] = value


@njit(cache=True, parallel=True, nogil=True)
def erase_images(images, indices, epoch, settings):
    """Erase boxes of the float32 (N, C, H, W) (or (N, H, W, C)) batch in place under ``settings`` (an
    ``ERASE_SETTINGS`` record); sample ``i``'s boxes come from the stream of (seed, epoch, indices[i]).
    NumPy reference: ``erasing_reference.erase_reference``."""
    n = images.shape[0]
    # Every field read by name here, outside the loop: Numba cannot hand a record to a prange body.
    seed, probability, mode = settings.seed, settings.probability, settings.mode
    min_count, max_count = settings.min_count, settings.max_count
    min_area, max_area = settings.min_area, settings.max_area
    channels_last = settings.channels_last != 0
    log_aspect_low, log_aspect_high = settings.log_aspect_low, settings.log_aspect_high
    if channels_last:
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    else:
        channels, height, width = images.shape[1], images.shape[2], images.shape[3]
    for i in prange(n):
        key = sample_key(seed, epoch, indices[i], ERASE_STREAM)
        boxes, used, colours, noise_keys = draw_erasures(
            key, channels, height, width, probability=probability, mode=mode, min_count=min_count,
            max_count=max_count, min_area=min_area, max_area=max_area, log_aspect_low=log_aspect_low,
            log_aspect_high=log_aspect_high)
        erase_boxes(images[i], boxes, used, colours, noise_keys, mode, channels_last)
    return images


@entry_point
def erase_batch(images_at, indices_at, count, dim_1, dim_2, dim_3, control_at, erase_at):
    """Erase, in place, the float32 (count, dim_1, dim_2, dim_3) batch as the committed epoch's draws under the
    ``ERASE_SETTINGS`` record at ``erase_at`` say."""
    control = read_control(control_at)
    images = carray(as_pointer(images_at), (count, dim_1, dim_2, dim_3), np.float32)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    erase_images(images, indices, control[EPOCH], read_settings(erase_at, ERASE_RECORD))
    return count


class RandomErasing(Operation):
    """FFCV operation: timm's RandomErasing on the normalised float32 images the mixing op writes (place it right
    after ``mixing.image_op(FloatOutput(...))``, before ``ToTensor``); works in place.

    probability: chance a sample is erased; mode: "const" | "rand" | "pixel"; max_count: boxes per erased
    sample, uniform in [min_count, max_count]; min_area, max_area: the box area as a fraction of the image
    (split over the boxes); min_aspect: the aspect range is [min_aspect, 1 / min_aspect]; channels_last: the
    float images are (H, W, C). control / seed: as the other ops (pass the ``Mixing``'s control).
    Raises ``FfmixError`` for out-of-range values.
    """

    def __init__(self, probability: float = 0.5, *, mode: str = "const", max_count: int = 1, min_count: int = 1,
                 min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3, channels_last: bool = False,
                 control: Optional[ControlBlock] = None, seed: int = 0):
        super().__init__()
        if not (isinstance(probability, (int, float)) and 0.0 <= probability <= 1.0):
            raise FfmixError(f"re_prob (erasing probability) must be in [0, 1], got {probability!r}")
        if mode not in MODES:
            raise FfmixError(f"re_mode must be one of {sorted(MODES)}, got {mode!r}")
        for name, value in (("re_count (max_count)", max_count), ("min_count", min_count)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise FfmixError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise FfmixError(f"seed must be a non-negative integer, got {seed!r}")
        if min_count > max_count:
            raise FfmixError(f"min_count={min_count} is above max_count={max_count}")
        if not 0.0 < min_area <= max_area <= 1.0 or not 0.0 < min_aspect <= 1.0:
            raise FfmixError(f"need 0 < min_area <= max_area <= 1 and 0 < min_aspect <= 1, got min_area={min_area}, "
                             f"max_area={max_area}, min_aspect={min_aspect}")
        # The ERASE_SETTINGS record the compiled code reads: owned by this op, never replaced.
        self.record = make_record(
            ERASE_SETTINGS, seed=int(seed), probability=float(probability), mode=MODES[mode],
            min_count=int(min_count), max_count=int(max_count), min_area=float(min_area), max_area=float(max_area),
            log_aspect_low=math.log(min_aspect), log_aspect_high=math.log(1.0 / min_aspect),
            channels_last=int(bool(channels_last)))
        self.control = control if control is not None else ControlBlock()

    @property
    def settings(self) -> np.record:
        """The settings record, fields readable by name (``op.settings.mode``); a view of ``self.record``."""
        return named_fields(self.record)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        if (not previous_state.jit_mode or np.dtype(previous_state.dtype) != np.float32
                or len(previous_state.shape) != 3):
            raise FfmixError("RandomErasing needs the float32 images of the mixing op's float output: place it "
                             f"right after it, before ToTensor (it got {previous_state.dtype} {previous_state.shape})")
        return previous_state, index_scratch()

    def generate_code(self):
        control_at = np.uint64(self.control.address)
        erase_at = np.uint64(self.record.ctypes.data)

        def random_erasing_op(images, index_scratch, indices):
            count, dim_1, dim_2, dim_3 = images.shape
            sample_ids = copy_indices(indices, index_scratch)
            erase_batch(images.ctypes.data, sample_ids.ctypes.data, count, dim_1, dim_2, dim_3, control_at,
                        erase_at)
            return images

        random_erasing_op.with_indices = True
        return random_erasing_op
