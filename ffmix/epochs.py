"""The epoch engine: FFCV's compiled pipeline run one epoch at a time in a thread, over one set of buffers.

ffmix's subtlest concurrency code lives here: who writes which batch slot when, how a failure or an abandoned
epoch ends its thread, and the single moment per epoch at which Python's settings reach the compiled code.
FFCV's internals it needs (the loader's epoch counter, read schedule, compiled stages and buffers) come
through ``ffcv_compat.PipelineLoader``'s named methods.
"""
from __future__ import annotations

import atexit
import queue
import threading
import weakref
from contextlib import nullcontext
from typing import Dict, Optional

import numpy as np
import torch
from ffcv.loader import OrderOption

from .ffcv_compat import PipelineLoader, set_pipeline_threads

_LIVE_EPOCHS: "weakref.WeakSet[EpochThread]" = weakref.WeakSet()
_POLL_S = 0.05


class EpochThread(threading.Thread):
    """One epoch of an FFCV pipeline, computed ahead in a thread into a ring of preallocated batch slots.

    It replaces FFCV's epoch iterator (same inputs and buffers) for three reasons:

    * a failure inside the pipeline is handed to the consumer and re-raised there (FFCV's thread dies and the
      consumer waits forever);
    * ``stop()`` ends the thread within one batch (FFCV's checks its stop flag only while its queue is full),
      so an abandoned epoch never keeps writing into buffers the next epoch uses;
    * it starts its ring at ``first_slot``, so the next epoch does not first overwrite the batch the consumer
      may still hold from the previous one.

    Batch lifetime: with ``S = batches_ahead + 2`` slots and at most ``batches_ahead`` batches waiting in the
    queue, the slot of the batch just returned is written again only after the consumer has asked for the
    next one. On CUDA a slot is reused only after the work the consumer queued on it has finished.
    """

    def __init__(self, loader: "ResilientLoader", order: np.ndarray, first_slot: int, buffers: Dict):
        super().__init__(daemon=True, name="ffmix-epoch")
        self.loader = loader
        self.batch_size = loader.batch_size
        self.slots = loader.batches_ahead + 2
        self.batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        self.buffers = buffers
        self.next_slot = first_slot % self.slots   # where the batch after the last one returned will go
        self.output_queue: "queue.Queue" = queue.Queue(loader.batches_ahead)
        self.stop_event = threading.Event()
        self.failure: Optional[BaseException] = None
        self.finished = False          # the consumer has seen the end (or the thread was stopped and joined)
        self.memory_context = loader.schedule_epoch(self.batches)
        self.memory_context.__enter__()
        self._closed_memory = False
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            self.consumer_stream = torch.cuda.current_stream()
            self.streams = [torch.cuda.Stream() for _ in range(self.slots)]
        _LIVE_EPOCHS.add(self)
        self.start()

    # -- producer side (the thread)
    def run(self):
        try:
            set_pipeline_threads(self.loader.num_workers)
            slot_done = [None] * self.slots      # CUDA events: the consumer's work on each slot
            slot = self.next_slot
            for batch_number, sample_ids in enumerate(self.batches):
                if self.stop_event.is_set():
                    return
                result = self._run_pipeline(batch_number, sample_ids, slot, slot_done[slot])
                if not self._put((slot, result)):
                    return
                if self.cuda:
                    # Batch b is queued, so the consumer has taken b - batches_ahead: everything it queued on
                    # slots up to then is submitted. Mark the slot that will be written next-but-one round.
                    finished_slot = (slot - self.slots + 1) % self.slots
                    event = torch.cuda.Event()
                    event.record(self.consumer_stream)
                    slot_done[finished_slot] = event
                slot = (slot + 1) % self.slots
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self.failure = exc
            self._put(None)

    def _put(self, item) -> bool:
        while not self.stop_event.is_set():
            try:
                self.output_queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run_pipeline(self, batch_number: int, sample_ids: np.ndarray, slot: int, slot_done):
        self.memory_context.start_batch(batch_number)
        count = len(sample_ids)
        stream_context = torch.cuda.stream(self.streams[slot]) if self.cuda else nullcontext()
        with stream_context:
            if slot_done is not None:
                slot_done.wait()
            args = {"batch_indices": sample_ids, "storage_state": self.memory_context.state,
                    "metadata": self.loader.sample_metadata}
            for kind, prefix in (("operation", "memory_"), ("shared", "shared_memory_")):
                for node_id, buffer in self.buffers[kind].items():
                    args[f"{prefix}{node_id}"] = _select_slot(buffer, slot, count)
            stages, outputs = self.loader.pipeline_stages()
            for stage_code, stage_outputs in stages:
                for node_id, value in zip(stage_outputs, stage_code(**args)):
                    args[f"result_{node_id}"] = value
            return tuple(args[f"result_{node_id}"] for node_id in outputs)

    # -- consumer side
    def __iter__(self):
        return self

    def __next__(self):
        if self.finished:
            raise StopIteration
        while True:
            try:
                item = self.output_queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self.is_alive() and self.output_queue.empty():
                    item = None   # stopped from elsewhere
                    break
        if item is None:
            self.stop()
            if self.failure is not None:
                raise RuntimeError(f"the data pipeline failed: {type(self.failure).__name__}: "
                                   f"{self.failure}") from self.failure
            raise StopIteration
        slot, result = item
        self.next_slot = (slot + 1) % self.slots
        if self.cuda:
            torch.cuda.current_stream().wait_stream(self.streams[slot])
        return result

    def stop(self) -> None:
        """End the thread (within one batch) and release the epoch's read schedule; idempotent."""
        self.stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        self.finished = True
        if not self._closed_memory:
            self._closed_memory = True
            self.memory_context.__exit__(None, None, None)
        _LIVE_EPOCHS.discard(self)


def _select_slot(buffer, slot: int, count: int):
    if buffer is None:
        return None
    if isinstance(buffer, tuple):
        return tuple(_select_slot(part, slot, count) for part in buffer)
    return buffer[slot][:count]


@atexit.register
def _stop_live_epochs() -> None:
    # A pipeline thread still running compiled code while the interpreter tears down can crash the exit;
    # a program that leaves an epoch midway must still exit cleanly (status 0).
    for epoch in list(_LIVE_EPOCHS):
        epoch.stop()


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for epoch ``epoch`` of run ``seed``, hashed so that no two (seed, epoch) pairs share an
    order. FFCV seeds its shuffle with ``seed + epoch``, so seeds s and s + 1 would share all but one epoch."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class ResilientLoader(PipelineLoader):
    """FFCV's ``Loader`` running epochs in ``EpochThread`` over one set of batch buffers for all epochs.

    FFCV allocates fresh buffers for every epoch (batches_ahead + 2 batches, pinned where possible: about
    190 MB at 256 x 224 x 224 x 3). Here ``iter()`` first stops the previous epoch's thread (finished or
    abandoned), then reuses its buffers, so memory stays flat however epochs end. ``start_epoch`` is the
    single moment at which the caller's per-epoch values are handed to the compiled code: ``before_start``
    runs after the previous thread has stopped and before the new one begins.

    Orders differ from FFCV's in two documented ways: the shuffle of epoch e is seeded by a hash of
    (seed, e), not seed + e; and with ``distributed=True`` every rank gets ``len // world_size`` samples of
    the epoch's permutation (interleaved), the remainder being left out of that epoch, so the shares are
    disjoint; FFCV (like ``DistributedSampler``) pads the shares with repeats instead.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._buffers = None
        self._current: Optional[EpochThread] = None
        self._next_slot = 0

    def epoch_order(self) -> np.ndarray:
        option = self.order_option
        if option == OrderOption.QUASI_RANDOM:
            return super().epoch_order()
        if option == OrderOption.RANDOM:
            rng = np.random.default_rng(epoch_seed(self.seed, self.upcoming_epoch))
            order = rng.permutation(self.indices)
        else:
            order = np.asarray(self.indices)
        if not self.distributed:
            return order
        world_size, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        per_rank = len(order) // world_size
        return order[:per_rank * world_size][rank::world_size]

    def start_epoch(self, before_start=None) -> EpochThread:
        self.stop_epoch()
        if before_start is not None:
            before_start(self.upcoming_epoch)
        set_pipeline_threads(self.num_workers)
        order = self.epoch_order()
        selected = order[:len(self) * self.batch_size]
        self.advance_epoch()
        self.pipeline_stages()   # compiled before the thread starts, so a compile error surfaces here
        if self._buffers is None:
            self._buffers = self.allocate_batch_buffers(self.batches_ahead + 2)
        if torch.cuda.is_available():
            # The new thread writes slots whose last batches the consumer may still have work queued on.
            torch.cuda.current_stream().synchronize()
        self._current = EpochThread(self, selected, self._next_slot, self._buffers)
        return self._current

    def rebuild(self) -> None:
        """Have the next ``start_epoch`` generate the pipeline's code and allocate its buffers afresh (the
        operations' output shapes changed). Call between epochs. Batches already handed out keep their old
        buffers alive (their tensors hold them); the new epoch starts a new ring of slots."""
        self.stop_epoch()
        self.discard_pipeline()
        self._buffers = None
        self._next_slot = 0

    def stop_epoch(self, epoch: Optional[EpochThread] = None) -> None:
        """Stop the running epoch (only if it is ``epoch``, when given); the next one starts its ring of
        slots after the last batch this one returned."""
        current = self._current
        if current is None or (epoch is not None and epoch is not current):
            return
        current.stop()
        self._next_slot = current.next_slot
        self._current = None

    def __iter__(self):
        return self.start_epoch()
