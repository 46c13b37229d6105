"""Calling ffmix's JPEG region decoder (``ffmix/native/jpeg_region.c``) from compiled kernels and from Python.

``call_decode_region`` is the Numba intrinsic the decoders' kernel uses: a call through the function's address
(``native.jpeg_region_function``), as ``ffcv_compat.call_imdecode`` calls libffcv, so the kernel stays
cacheable. ``decode_region`` is the same call from Python (tests, the quality bench).
"""
from __future__ import annotations

import ctypes
from typing import Tuple

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

from ..errors import FfmixError
from ..native import jpeg_region_function, unavailable_reason

# window[...] after a call: the rows and columns decoded (in the scaled image) and the scaled image's size.
ROW0, COL0, ROWS, COLS, SCALED_HEIGHT, SCALED_WIDTH = range(6)
WINDOW_SIZE = 6
REGION_FAILED, REGION_BAD_ARGS = -1, -2     # the C function's statuses besides 0

_I64, _I32 = ir.IntType(64), ir.IntType(32)
_BYTES = ir.IntType(8).as_pointer()


@intrinsic
def call_decode_region(typingctx, function_at, source_at, source_size, denom, top, left, bottom, right,
                       destination_at, capacity, window_at):
    """``ffmix_decode_region`` at ``function_at``: rows [top, bottom) and (at least) columns [left, right) of
    the JPEG at ``source_at`` decoded at 1/``denom`` scale as RGB into ``destination_at`` (at most ``capacity``
    bytes); the window it decoded into the int64[6] at ``window_at``. Returns 0, REGION_FAILED or
    REGION_BAD_ARGS (see jpeg_region.c)."""
    def codegen(context, builder, signature, args):
        fn_at, src, size, d, t, l, b, r, dst, cap, win = [
            context.cast(builder, value, kind, numba.types.int64) for value, kind in zip(args, signature.args)]
        # C: int ffmix_decode_region(const uint8_t*, uint64_t, int, int, int, int, int, uint8_t*, uint64_t,
        #                            int64_t*)
        fnty = ir.FunctionType(_I32, [_BYTES, _I64] + [_I32] * 5 + [_BYTES, _I64, _I64.as_pointer()])
        fn = builder.inttoptr(fn_at, fnty.as_pointer())
        small = [builder.trunc(v, _I32) for v in (d, t, l, b, r)]
        return builder.call(fn, [builder.inttoptr(src, _BYTES), size, *small, builder.inttoptr(dst, _BYTES), cap,
                                 builder.inttoptr(win, _I64.as_pointer())])
    signature = numba.types.int32(function_at, source_at, source_size, denom, top, left, bottom, right,
                                  destination_at, capacity, window_at)
    return signature, codegen


def decode_region(data, denom: int, top: int, left: int, bottom: int, right: int) -> Tuple[int, np.ndarray, np.ndarray]:
    """Python's call of the region decoder: (status, window int64[6], the decoded window uint8 (rows, cols, 3)).

    data: the JPEG's bytes; the box is in the 1/``denom``-scaled image's pixels. On a non-zero status the
    pixels are empty. Raises FfmixError when the decoder cannot be built here."""
    address = jpeg_region_function()
    if address is None:
        raise FfmixError(f"ffmix's JPEG region decoder is not available: {unavailable_reason()}")
    function = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, *[ctypes.c_int] * 5,
                                ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)(address)
    source = np.ascontiguousarray(np.frombuffer(bytes(data), np.uint8))
    # the window: one column more each side, then widened to iMCU boundaries (at most 32 pixels wide)
    capacity = max(bottom - top, 1) * (max(right - left, 1) + 2 + 2 * 32) * 3
    out = np.zeros(capacity, np.uint8)
    window = np.zeros(WINDOW_SIZE, np.int64)
    status = function(source.ctypes.data, source.size, denom, top, left, bottom, right, out.ctypes.data, capacity,
                      window.ctypes.data)
    if status != 0:
        return status, window, np.zeros((0, 0, 3), np.uint8)
    rows, cols = int(window[ROWS]), int(window[COLS])
    return status, window, out[:rows * cols * 3].reshape(rows, cols, 3)
