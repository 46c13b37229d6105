"""The one home of what ffmix uses from FFCV beyond its public API.

ffmix leans on a few private parts of FFCV 1.0.2: the Loader's epoch thread and its buffer allocation
(``Loader.graph.allocate_memory``, ``EpochIterator``'s queue and slots), the Reader's tables, and the
``DatasetWriter``'s shared per-sample table and page allocator (``convert`` runs its own writer processes).
They change without notice between FFCV releases, so they are used from this module only, and importing it
on an FFCV that was not tested fails at once with a message that says what to install.

FFCV's own ``ffcv.__version__`` still reads "0.0.3rc1" in 1.0.2, so the installed distribution is asked.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import metadata as _metadata
from typing import Dict, Optional

import numpy as np

from .errors import FfmixError

TESTED_FFCV = "1.0.2"


def _check_version() -> None:
    try:
        installed = _metadata.version("ffcv")
    except _metadata.PackageNotFoundError:
        raise ImportError(f"ffmix needs FFCV {TESTED_FFCV} (`pip install ffcv=={TESTED_FFCV}`); it is not installed")
    if installed != TESTED_FFCV and not os.environ.get("FFMIX_ANY_FFCV"):
        raise ImportError(f"ffmix is tested with FFCV {TESTED_FFCV} only and uses some of its internals, but FFCV "
                          f"{installed} is installed; run `pip install ffcv=={TESTED_FFCV}` (or set FFMIX_ANY_FFCV=1 "
                          "to try anyway, at your own risk)")


_check_version()

import numba  # noqa: E402
import torch  # noqa: E402  (after the version check: a wrong FFCV must fail with the message above)
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.pipeline.compiler import Compiler  # noqa: E402
from ffcv.reader import Reader  # noqa: E402


# ------------------------------------------------------------------------------------- Numba type hygiene
#
# FFCV 1.0.2's memory managers declare their read-only state by writing ``t.mutable = False`` onto
# ``nb.uint8[::1]`` (and, in the process cache, onto ``nb.uint8[:, ::1]``, ``nb.uint64[::1]`` and
# ``nb.uint32[::1]``). Those are Numba's interned singletons, the very objects that stand for every writable
# array of that kind, and a type's hash is computed from ``mutable``. So each Loader build changes the hash of
# types that are already keys in dispatcher tables: e.g. the ``overloads`` of FFCV's per-loader ``imdecode``
# dispatcher, whose finaliser then cannot find its own keys when the loader is collected and prints
# "Exception ignored in: <finalize ...> KeyError: (Array(uint8, 1, 'C', True, ...), ...)". The replacements
# below build new read-only types instead (the types FFCV meant; the reader's code is FFCV's, unchanged).

def _readonly(dtype, ndim: int):
    return numba.types.Array(dtype, ndim, "C", readonly=True)


def _os_cache_state_type(self):
    return numba.types.Tuple([_readonly(numba.uint8, 1), numba.uint64[::1], numba.uint64[::1]])


def _os_cache_compile_reader(self):
    def read(address, mem_state):
        size = mem_state[2][np.searchsorted(mem_state[1], address)]
        return mem_state[0][address:address + size]

    return Compiler.compile(read, _readonly(numba.uint8, 1)(numba.uint64, self.state_type))


def _process_cache_state_type(self):
    return numba.types.Tuple([_readonly(numba.uint8, 2), _readonly(numba.uint64, 1), _readonly(numba.uint64, 1),
                              _readonly(numba.uint32, 1)])


def _keep_numba_types_intact() -> None:
    from ffcv.memory_managers.os_cache import OSCacheManager
    from ffcv.memory_managers.process_cache.manager import ProcessCacheManager

    OSCacheManager.state_type = property(_os_cache_state_type)
    OSCacheManager.compile_reader = _os_cache_compile_reader
    ProcessCacheManager.state_type = property(_process_cache_state_type)  # unused by FFCV's own code


_keep_numba_types_intact()


# ------------------------------------------------------------------------------------------------ reading

def open_reader(path) -> Reader:
    """FFCV's Reader of ``path``; a file FFCV cannot parse is an ``FfmixError`` that says to re-convert."""
    try:
        reader = Reader(os.fspath(path))
    except (PermissionError, FileNotFoundError):
        raise
    except Exception as exc:  # FFCV asserts on a wrong version and fails variously on other bytes
        raise FfmixError(f"{path} is not a readable FFCV .beton file ({type(exc).__name__}: {exc}); "
                         "re-create it with `ffmix convert`") from None
    if reader.num_samples and len(reader.metadata) != reader.num_samples:
        raise FfmixError(f"{path} is truncated: its header says {reader.num_samples} samples, its table holds "
                         f"{len(reader.metadata)}; re-create it with `ffmix convert`")
    return reader


def field_kinds(reader: Reader) -> Dict[str, str]:
    """Each field's name and FFCV type name (e.g. ``{"image": "RGBImageField", "label": "IntField"}``)."""
    return {name: type(handler).__name__ for name, handler in reader.handlers.items()}


def page_size(reader: Reader) -> int:
    return int(reader.page_size)


def field_table(reader: Reader, name: str) -> np.ndarray:
    """The per-sample metadata column of field ``name`` (FFCV names the columns f0, f1, ... in field order)."""
    return reader.metadata[f"f{reader.field_names.index(name)}"]


def data_extent(reader: Reader) -> int:
    """One past the last byte the file's tables and pages claim: larger than the file means truncated."""
    table = reader.alloc_table
    end = int(reader.header["alloc_table_ptr"])
    if len(table):
        end = max(end, int((table["ptr"] + table["size"]).max()))
    return end


def block_sizes(reader: Reader, pointers: np.ndarray) -> np.ndarray:
    """The byte count of the stored block that starts at each of ``pointers`` (FFCV's allocation table), e.g.
    a JPEG's length from its sample's ``data_ptr``."""
    table = np.sort(reader.alloc_table, order="ptr")
    return table["size"][np.searchsorted(table["ptr"], np.asarray(pointers, np.uint64))].astype(np.int64)


def page_pointers(reader: Reader) -> np.ndarray:
    """Where the file's allocated blocks start (FFCV's allocation table)."""
    return reader.alloc_table["ptr"]


# ------------------------------------------------------------------------------------------------ writing

def prepare_writer(writer, num_samples: int) -> None:
    """Write FFCV's header and field table and create the shared per-sample table for ``num_samples``.

    ``DatasetWriter.from_indexed_dataset`` does this and then runs FFCV's own workers; ffmix runs its own.
    """
    writer.num_samples = num_samples
    writer.prepare()


def writer_state(writer):
    """What a writer process needs: (shared per-sample table, its dtype, the fields, a page allocator)."""
    from ffcv.memory_allocator import MemoryAllocator

    allocator = MemoryAllocator(writer.fname, writer.data_region_start, writer.page_size)
    return writer.metadata_sm, writer.metadata_type, writer.fields, allocator


def write_sample(sample, destination: int, metadata: np.ndarray, allocator, fields) -> None:
    """Encode one sample (a tuple in field order) into row ``destination`` and the allocator's pages."""
    from ffcv.writer import handle_sample

    handle_sample(sample, destination, metadata.dtype.names, metadata, allocator, fields)


def open_allocator(allocator) -> None:
    allocator.__enter__()  # not `with`: after a failure, flushing would wait for pages that never come


def close_allocator(allocator) -> list:
    """Flush the allocator's last page; returns its allocations for ``finalize_writer``."""
    allocator.__exit__(None, None, None)
    return allocator.allocations


def finalize_writer(writer, allocations: list) -> None:
    writer.finalize(allocations)


def release_writer(writer) -> None:
    """Free the writer's shared per-sample table (absent if ``prepare_writer`` failed)."""
    shared = getattr(writer, "metadata_sm", None)
    if hasattr(shared, "unlink"):
        shared.close()
        shared.unlink()


# ------------------------------------------------------------------ writing: JPEG bytes as they are, compaction
#
# FFCV's RGBImageField stores a sample in 'jpg' mode as: mode byte 0 (IMAGE_MODES['jpg']), the decoded height and
# width in the per-sample row, and the JPEG's bytes in one block from the page allocator, whose address goes in
# the row's data_ptr. Its own encode() always re-encodes pixels; write_encoded_jpeg stores a file's bytes in that
# same layout, so FFCV's decoders read them like any JPEG it wrote itself.

JPEG_MODE = 0   # FFCV 1.0.2's IMAGE_MODES['jpg']


@dataclass(frozen=True)
class EncodedJPEG:
    """A JPEG file's bytes with the size its header declares, to be stored without decoding."""

    data: bytes
    height: int
    width: int


def write_encoded_jpeg(sample, destination: int, metadata: np.ndarray, allocator, fields) -> None:
    """Like ``write_sample``, but the values that are ``EncodedJPEG`` are stored as they are (image fields).

    ``sample`` is a tuple in field order. Raises ``ValueError`` (FFCV's "page size" message) when the bytes
    exceed a page, as FFCV's own encode does."""
    names = metadata.dtype.names
    for attempt in range(2):  # FFCV's rule: a sample that does not fit the rest of a page restarts on a new one
        try:
            allocator.set_current_sample(destination)
            for name, field, value in zip(names, fields.values(), sample):
                row = metadata[name][destination:destination + 1]
                if isinstance(value, EncodedJPEG):
                    row["mode"] = JPEG_MODE
                    row["height"], row["width"] = value.height, value.width
                    row["data_ptr"], storage = allocator.malloc(len(value.data))
                    storage[:] = np.frombuffer(value.data, dtype=np.uint8)
                else:
                    field.encode(row, value, allocator.malloc)
            return
        except MemoryError:
            if attempt == 1:
                raise


def decodes_with_ffcv(data: bytes, height: int, width: int) -> bool:
    """Whether FFCV's own JPEG decoder (libjpeg-turbo, through ``ffcv.libffcv.imdecode``) reads ``data``
    without error or warning. Decodes at 1/8 scale: the entropy decoding, where a damaged or unsupported file
    fails, still runs in full, the rest costs little."""
    from ffcv.libffcv import imdecode

    source = np.frombuffer(data, dtype=np.uint8)
    scaled = np.empty(((height + 7) // 8, (width + 7) // 8, 3), dtype=np.uint8)
    return imdecode(source, scaled, height, width, height, width, 0, 0, 1, 8, False, False) == 0


def drop_unwritten_rows(writer, keep: np.ndarray, allocations: list) -> list:
    """Close the gaps a pass left for samples it could not read, so the file is written once.

    ``keep``: sorted row numbers that hold a sample. The kept rows move to the front of the writer's shared
    per-sample table and the header's sample count becomes ``len(keep)`` (the Reader reads that many rows; the
    rest of the table's space stays unused). ``allocations`` ((sample row, ptr, size) triples from all processes) are
    renumbered to match, since FFCV's memory managers map samples to pages through them. Returns them."""
    table = np.frombuffer(writer.metadata_sm.buf, dtype=writer.metadata_type)
    rows = len(table)
    table[:len(keep)] = table[keep]
    del table  # a live view would stop release_writer from closing the shared memory
    writer.num_samples = len(keep)
    writer.header["num_samples"] = len(keep)
    new_row = np.full(rows, -1, dtype=np.int64)
    new_row[keep] = np.arange(len(keep))
    renumbered = []
    for row, pointer, size in allocations:
        if new_row[row] < 0:
            raise RuntimeError(f"sample row {row} was marked unreadable but holds data")
        renumbered.append((int(new_row[row]), pointer, size))
    return renumbered


def fingerprint_regions(path) -> list:
    """The byte ranges of a .beton that identify it: header + field table + per-sample table, and the
    allocation table at the end. Every label, size and data address is in them; they are a few bytes per
    sample, so hashing them is cheap where hashing the pages would not be."""
    reader = open_reader(path)
    table_end = (int(reader.header.dtype.itemsize) + int(reader.field_descriptors.nbytes)
                 + int(reader.metadata.nbytes))
    return [(0, table_end), (int(reader.header["alloc_table_ptr"]), os.path.getsize(path))]


# ------------------------------------------------------------------------------------------------ loading

_LIVE_EPOCHS: "weakref.WeakSet[EpochThread]" = weakref.WeakSet()
_POLL_S = 0.05


class EpochThread(threading.Thread):
    """One epoch of an FFCV pipeline, computed ahead in a thread into a ring of preallocated batch slots.

    It replaces FFCV's ``EpochIterator`` (same inputs and buffers) for three reasons:

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
        self.memory_context = loader.memory_manager.schedule_epoch(self.batches)
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
            Compiler.set_num_threads(self.loader.num_workers)
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
                    "metadata": self.loader.reader.metadata}
            for kind, prefix in (("operation", "memory_"), ("shared", "shared_memory_")):
                for node_id, buffer in self.buffers[kind].items():
                    args[f"{prefix}{node_id}"] = _select_slot(buffer, slot, count)
            code, outputs = self.loader.code
            for stage_code, stage_outputs in code:
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


class ResilientLoader(Loader):
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

    @property
    def upcoming_epoch(self) -> int:
        """The epoch the next ``iter()`` produces."""
        return self.next_epoch

    @upcoming_epoch.setter
    def upcoming_epoch(self, epoch: int) -> None:
        self.next_epoch = int(epoch)

    def next_traversal_order(self):
        option = self._args["order"]
        if option == OrderOption.QUASI_RANDOM:
            return super().next_traversal_order()
        if option == OrderOption.RANDOM:
            rng = np.random.default_rng(epoch_seed(self.seed, self.next_epoch))
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
            before_start(self.next_epoch)
        Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        selected = order[:len(self) * self.batch_size]
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        if self._buffers is None:
            self._buffers = self.graph.allocate_memory(self.batch_size, self.batches_ahead + 2)
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
        self.code = None
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


# ------------------------------------------------------------------------------------------------ decoding
# ffmix's decoders (ops/decoders.py) call FFCV's compiled JPEG decoder and OpenCV resize, so their pixels are
# FFCV's. They are not public API: ``ffcv.libffcv`` loads them from the ``ffcv._libffcv`` extension with ctypes.

def libffcv_functions() -> Dict[str, int]:
    """The addresses of libffcv's C functions ``imdecode`` and ``resize`` (their signatures: FFCV 1.0.2's
    ``libffcv.cpp``). The library stays loaded for the life of the process (``ffcv.libffcv`` holds it)."""
    import ctypes

    from ffcv import libffcv

    return {name: int(ctypes.cast(getattr(libffcv.lib, name), ctypes.c_void_p).value)
            for name in ("imdecode", "resize")}


def image_modes() -> Dict[str, int]:
    """FFCV's image storage modes as stored in the per-sample ``mode`` column (jpg 0, raw 1)."""
    from ffcv.fields.rgb_image import IMAGE_MODES

    return {name: int(IMAGE_MODES[name]) for name in ("jpg", "raw")}
