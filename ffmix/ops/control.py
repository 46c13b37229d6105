"""A few int64 values that Python can change after FFCV has compiled its pipeline.

Numba freezes the arrays a compiled closure captures, so an epoch counter captured by value would never
move. Instead the closure captures the *address* of a small NumPy array and views it through
``read_control`` each batch; the owning ``ControlBlock`` keeps that array alive.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EPOCH, ENABLED, HEIGHT, WIDTH = range(4)
SIZE = 4


@intrinsic
def as_pointer(typingctx, address):
    """An integer address as a ``void*`` (for ``numba.carray``)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(address), codegen


@njit(cache=True, inline="always")
def read_control(address):
    """The control array living at ``address`` (int64, length ``SIZE``)."""
    return carray(as_pointer(address), (SIZE,), np.int64)


class ControlBlock:
    """Owner of the shared values: epoch, mixing on/off, and the image size the image op saw."""

    def __init__(self):
        self.values = np.zeros(SIZE, np.int64)
        self.values[ENABLED] = 1
        self.address = int(self.values.ctypes.data)

    def __getitem__(self, slot):
        return int(self.values[slot])

    def __setitem__(self, slot, value):
        self.values[slot] = value
