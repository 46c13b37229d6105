"""The two values Python may change after FFCV has compiled a pipeline: the epoch and mixing on/off.

Numba freezes what a compiled closure captures, so an epoch captured by value would never move. Instead the
closure captures the *address* of a small int64 array, owned by a ``ControlBlock``, and reads it through
``read_control`` each batch.

When is it written? Python's changes (``set_epoch``, ``enabled``) are *pending* until ``commit``; the loader
commits once per epoch, after the previous epoch's thread has stopped and before the next one starts. So no
batch can see a change half-way (mixed pixels with one-hot targets, or an image op and a label op that read
different epochs), whatever the consumer does while an epoch runs.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EPOCH, ENABLED = range(2)
SIZE = 2


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
    """Owner of the values compiled code reads by address (``address`` stays valid as long as this object).

    ``values`` is allocated once here and never replaced, so an address captured at compile time stays
    valid; the operations that capture it hold a reference to this block through their ``Mixing``.
    """

    def __init__(self):
        self.values = np.zeros(SIZE, np.int64)
        self.values[ENABLED] = 1
        self.address = int(self.values.ctypes.data)
        self.pending_epoch = 0
        self.pending_enabled = True

    def commit(self, epoch: Optional[int] = None) -> None:
        """Hand the pending values (``epoch`` overrides the pending epoch) to the compiled code.

        Call only while no pipeline thread runs (the loader does, at each ``iter()``).
        """
        if epoch is not None:
            self.pending_epoch = int(epoch)
        self.values[EPOCH] = self.pending_epoch
        self.values[ENABLED] = int(self.pending_enabled)

    @property
    def committed_epoch(self) -> int:
        return int(self.values[EPOCH])

    @property
    def committed_enabled(self) -> bool:
        return bool(self.values[ENABLED])
