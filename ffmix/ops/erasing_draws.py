"""RandomErasing's draws as a table that travels with the batch, for images normalised on the device.

On the CPU float path ``erasing.RandomErasing`` draws and writes in one pass. When uint8 batches go to a GPU
and are normalised there, the writing must happen there too (``erasing_device.erase_on_device``), but the
draws stay here, in the pipeline's worker threads, from the same code (``erasing.draw_erasures``) and the
same per-sample streams (seed, epoch, sample index): a few numbers per sample, so the device path erases the
same boxes with the same values as the CPU path.

``EraseDraws`` is the operation of an extra Loader output whose source is the last image operation (as
``decoder.stand_in_pipeline`` branches off the decoder): FFCV runs it in the same batch and reads the image
size from the state it branches off, so a ``set_image_size`` rebuild draws for the new size.

The table, int64 (N, 1 + max_count * (SLOT_FIXED + channels)), one row per sample:

    column 0                     boxes used (0 .. max_count)
    per slot b, from 1 + b * (SLOT_FIXED + channels):
      TOP, LEFT, HEIGHT, WIDTH   the box, pixels
      NOISE_KEY                  the box's pixel-noise stream key ("pixel"), its uint64 bits
      channels colours           the box's colour per channel ("rand"), each float32's 32 bits (sign-extended)
    unused slots are 0

Every address the C entry point reads or writes, and its owner (whose lifetime covers the compiled code):

===========  ===============================================  =============================================
argument     what it points at                                owner
===========  ===============================================  =============================================
table_at     the batch's table (above), written               FFCV's preallocated buffers (this op's output)
indices_at   the batch's sample indices as uint64             FFCV's preallocated buffers (index scratch),
                                                              filled by the closure
control_at   the epoch (``control.ControlBlock``)             the ``ControlBlock`` passed in (the Mixing's),
                                                              held by the op (``self.control``)
erase_at     the settings (``settings.ERASE_SETTINGS``)       the op (``self.record``, made in ``__init__``,
                                                              never replaced; written once, then only read)
===========  ===============================================  =============================================
"""
from __future__ import annotations

from dataclasses import replace
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
from .erasing import ERASE_STREAM, MODES, draw_erasures
from .settings import ERASE_RECORD, ERASE_SETTINGS, entry_point, named_fields, read_settings

USED = 0
TOP, LEFT, HEIGHT, WIDTH, NOISE_KEY = range(5)
SLOT_FIXED = 5   # columns of a slot before its colours


def table_columns(max_count: int, channels: int) -> int:
    """The width of the draw table for ``max_count`` boxes of ``channels`` colours."""
    return 1 + max_count * (SLOT_FIXED + channels)


def slot_start(slot: int, channels: int) -> int:
    """The first column of box slot ``slot``."""
    return 1 + slot * (SLOT_FIXED + channels)


@njit(cache=True, parallel=True, nogil=True)
def draw_table(table, indices, epoch, channels, height, width, settings):
    """Fill the int64 table (see the module docstring) of the samples ``indices`` of ``epoch`` for images of
    ``channels`` x ``height`` x ``width`` under ``settings`` (an ``ERASE_SETTINGS`` record). Python reference:
    ``erasing_reference.sample_erasures`` (``tests/test_erasing_device.py`` compares every row with it)."""
    seed, probability, mode = settings.seed, settings.probability, settings.mode
    min_count, max_count = settings.min_count, settings.max_count
    min_area, max_area = settings.min_area, settings.max_area
    log_aspect_low, log_aspect_high = settings.log_aspect_low, settings.log_aspect_high
    keys_view = table.view(np.uint64)   # the noise keys are written as their bits
    for i in prange(indices.shape[0]):
        key = sample_key(seed, epoch, indices[i], ERASE_STREAM)
        boxes, used, colours, noise_keys = draw_erasures(
            key, channels, height, width, probability=probability, mode=mode, min_count=min_count,
            max_count=max_count, min_area=min_area, max_area=max_area, log_aspect_low=log_aspect_low,
            log_aspect_high=log_aspect_high)
        table[i, :] = 0
        table[i, USED] = used
        colour_bits = colours.view(np.int32)
        for b in range(used):
            start = 1 + b * (SLOT_FIXED + channels)
            for field in range(4):
                table[i, start + field] = boxes[b, field]
            keys_view[i, start + NOISE_KEY] = noise_keys[b]
            for c in range(channels):
                table[i, start + SLOT_FIXED + c] = colour_bits[b, c]
    return table


@entry_point
def erase_draws_batch(table_at, indices_at, count, columns, channels, height, width, control_at, erase_at):
    """Write the draw table (count, columns) of the committed epoch's samples under the ``ERASE_SETTINGS``
    record at ``erase_at``."""
    control = read_control(control_at)
    table = carray(as_pointer(table_at), (count, columns), np.int64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    draw_table(table, indices, control[EPOCH], channels, height, width, read_settings(erase_at, ERASE_RECORD))
    return count


class EraseDraws(Operation):
    """FFCV operation: each batch's RandomErasing draw table (module docstring), for a pipeline whose source is
    the last image operation before ``ToTensor`` (``PipelineSpec(image_op, transforms=[EraseDraws(...),
    ToTensor(), ...])``); its images (N, H, W, 3) uint8 give the size, ``channels`` the channels erased.

    settings: an ``ERASE_SETTINGS`` record (copied); control: the ``ControlBlock`` whose epoch it reads. Build it
    from the CPU path's op with ``EraseDraws.like(random_erasing, channels)``: the same draws.
    """

    def __init__(self, settings: np.ndarray, channels: int, control: Optional[ControlBlock] = None):
        super().__init__()
        if channels not in (1, 3):
            raise FfmixError(f"channels must be 1 or 3, got {channels!r}")
        # The ERASE_SETTINGS record the compiled code reads: a copy owned by this op, never replaced.
        self.record = np.array(settings, ERASE_SETTINGS).reshape(1).copy()
        self.channels = int(channels)
        self.control = control if control is not None else ControlBlock()
        self.columns = table_columns(int(self.record[0]["max_count"]), self.channels)

    @classmethod
    def like(cls, erasing, channels: int) -> "EraseDraws":
        """The draws ``erasing`` (a ``RandomErasing``) would make, for a batch of ``channels`` channels."""
        return cls(erasing.record, channels, control=erasing.control)

    @property
    def settings(self) -> np.record:
        return named_fields(self.record)

    @property
    def mode(self) -> str:
        """"const", "rand" or "pixel"."""
        return {code: name for name, code in MODES.items()}[int(self.record[0]["mode"])]

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, Tuple[AllocationQuery, ...]]:
        if len(previous_state.shape) != 3:
            raise FfmixError("EraseDraws branches off an image operation of (H, W, C) images; got "
                             f"{previous_state.dtype} {previous_state.shape}")
        # the size the draws are for: the images this op branches off (again after a rebuild), read by
        # generate_code, which FFCV calls after this
        self.image_size = tuple(int(v) for v in previous_state.shape[:2])
        int64 = np.dtype(np.int64)
        return (replace(previous_state, jit_mode=True, shape=(self.columns,), dtype=int64),
                (AllocationQuery((self.columns,), int64), index_scratch()))

    def generate_code(self):
        control_at = np.uint64(self.control.address)
        erase_at = np.uint64(self.record.ctypes.data)
        columns, channels = np.int64(self.columns), np.int64(self.channels)
        height, width = (np.int64(v) for v in self.image_size)

        def erase_draws_op(images, buffers, indices):
            tables, scratch = buffers
            count = images.shape[0]
            table = tables[:count]
            sample_ids = copy_indices(indices, scratch)
            erase_draws_batch(table.ctypes.data, sample_ids.ctypes.data, count, columns, channels, height, width,
                              control_at, erase_at)
            return table

        erase_draws_op.with_indices = True
        return erase_draws_op

