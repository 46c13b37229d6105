"""The two values Python may change after FFCV has compiled a pipeline: the epoch and mixing on/off.

Numba freezes what a compiled closure captures, so an epoch captured by value would never move. Instead the
closure captures the *address* of a small int64 array, owned by a ``ControlBlock``, and reads it through
``read_control`` each batch.

When is it written? Python's changes (``set_epoch``, ``enabled``) are *pending* until ``commit``; the loader
commits once per epoch, after the previous epoch's thread has stopped and before the next one starts. So no
batch can see a change half-way (mixed pixels with one-hot targets, or an image op and a label op that read
different epochs), whatever the consumer does while an epoch runs. Without a loader (``MixCollate``, your own
FFCV pipeline) a change is committed at once.

The values live in shared memory, so DataLoader workers that received the block (forked, or pickled by
``torch.multiprocessing``, persistent or not) read the epoch the main process set.
"""
from __future__ import annotations

import weakref
from typing import Optional

import numpy as np
import torch
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

    ``values`` is allocated once here (in shared memory) and never replaced, so an address captured at
    compile time stays valid; the operations that capture it hold a reference to this block through their
    ``Mixing``.
    """

    def __init__(self):
        self._shared = torch.zeros(SIZE, dtype=torch.int64).share_memory_()
        self._shared[ENABLED] = 1
        self._view_values()
        self.pending_epoch = 0
        self.pending_enabled = True
        self._manager = None   # a weak reference to the loader that commits, if one does

    def _view_values(self) -> None:
        self.values = self._shared.numpy()
        self.address = int(self.values.ctypes.data)

    def __getstate__(self):
        # The shared tensor travels (torch.multiprocessing shares its memory); the view, its address and
        # the committing loader belong to this process.
        return {"_shared": self._shared, "pending_epoch": self.pending_epoch,
                "pending_enabled": self.pending_enabled}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._view_values()
        self._manager = None

    @property
    def managed(self) -> bool:
        """Whether a live loader commits the pending values (else they apply at once)."""
        return self._manager is not None and self._manager() is not None

    def claim(self, owner) -> bool:
        """Make ``owner`` the one that commits; False if another live owner already does. Held weakly, so a
        loader that is gone frees the block for the next one and no reference cycle keeps it alive."""
        current = self._manager() if self._manager is not None else None
        if current is not None and current is not owner:
            return False
        self._manager = weakref.ref(owner)
        return True

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
