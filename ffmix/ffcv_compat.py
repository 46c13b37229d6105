"""The one home of what ffmix uses from FFCV beyond its public API.

ffmix leans on a few private parts of FFCV 1.0.2: the Loader's epoch counter, read schedule, compiled stages
and buffer allocation (``PipelineLoader``, for the epoch engine in ``epochs.py``), the Reader's tables, the
``DatasetWriter``'s shared per-sample table and page allocator (``convert`` runs its own writer processes),
and libffcv's compiled functions and FFCV's constants.
They change without notice between FFCV releases, so they are used from this module only, and importing it
on an FFCV that was not tested fails at once with a message that says what to install.

FFCV's own ``ffcv.__version__`` still reads "0.0.3rc1" in 1.0.2, so the installed distribution is asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata as _metadata
from typing import Dict

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
from llvmlite import ir as _ir  # noqa: E402
from numba.extending import intrinsic  # noqa: E402
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

# FFCV 1.0.2's image storage modes (``IMAGE_MODES``) as stored in the per-sample ``mode`` column; compiled
# decoders compare against them, so they are constants here, checked against FFCV's below.
JPEG_MODE, RAW_MODE = 0, 1


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

class PipelineLoader(Loader):
    """FFCV's ``Loader`` with its internals behind named methods, for the epoch engine (``epochs.py``).

    ffmix runs FFCV's compiled pipeline itself, so it needs the loader's epoch counter, order option, read
    schedule, compiled stages, sample table and batch buffers: all internals of FFCV 1.0.2, used only here.
    """

    @property
    def upcoming_epoch(self) -> int:
        """The epoch the next epoch started produces."""
        return self.next_epoch

    @upcoming_epoch.setter
    def upcoming_epoch(self, epoch: int) -> None:
        self.next_epoch = int(epoch)

    @property
    def order_option(self) -> OrderOption:
        return self._args["order"]

    @property
    def sample_metadata(self) -> np.ndarray:
        """The file's per-sample table, which the compiled stages read."""
        return self.reader.metadata

    def next_traversal_order(self):
        # FFCV's hook for an epoch's sample order; ``epoch_order`` is the subclass's.
        return self.epoch_order()

    def epoch_order(self) -> np.ndarray:
        return Loader.next_traversal_order(self)

    def advance_epoch(self) -> None:
        self.next_epoch += 1

    def schedule_epoch(self, batches):
        """The memory manager's read context for these batches (enter it before running them)."""
        return self.memory_manager.schedule_epoch(batches)

    def pipeline_stages(self):
        """``(stages, outputs)``: the compiled stages (compiled now if needed) and the nodes they yield."""
        if self.code is None or self.recompile:
            self.generate_code()
        return self.code

    def allocate_batch_buffers(self, slots: int) -> Dict:
        """Buffers for ``slots`` batches of every operation that asked for memory."""
        return self.graph.allocate_memory(self.batch_size, slots)

    def discard_pipeline(self) -> None:
        """Make the next ``pipeline_stages`` generate the code afresh (the operations' output shapes changed)."""
        self.code = None


def set_pipeline_threads(count: int) -> None:
    """Threads for the compiled pipeline stages (FFCV's ``Compiler`` setting, process-wide)."""
    Compiler.set_num_threads(count)


# ------------------------------------------------------------------------------------------------ decoding
# ffmix's decoders (ops/decoders.py) call FFCV's compiled JPEG decoder and OpenCV resize, so their pixels are
# FFCV's. They are not public API: ``ffcv.libffcv`` loads them from the ``ffcv._libffcv`` extension with ctypes.

# libffcv's C signatures (FFCV 1.0.2's libffcv.cpp), as Numba intrinsics that call a function by its address
# (``libffcv_functions``): a kernel that embedded a ctypes function could not be cached.
_I64, _I32 = _ir.IntType(64), _ir.IntType(32)
_BYTES = _ir.IntType(8).as_pointer()


def _as_i64(context, builder, signature, args):
    return [context.cast(builder, value, kind, numba.types.int64) for value, kind in zip(args, signature.args)]


@intrinsic
def call_imdecode(typingctx, function_at, source_at, source_size, height, width, destination_at, scale_denom):
    """libffcv ``imdecode``: the whole JPEG at ``source_at`` as RGB into ``destination_at``, scaled by
    1/``scale_denom`` (libjpeg-turbo's DCT scaling; 1 = full size: ceil(H / d) x ceil(W / d) pixels).
    Returns libjpeg-turbo's status (0 = clean)."""
    def codegen(context, builder, signature, args):
        fn_at, src, size, h, w, dst, denom = _as_i64(context, builder, signature, args)
        # C: int imdecode(uchar*, uint64, uint32 h, uint32 w, uchar*, uint32 crop_h, uint32 crop_w, uint32 x,
        #                  uint32 y, uint32 num, uint32 denom, bool crop, bool flip); bools passed as int32 0.
        fnty = _ir.FunctionType(_I32, [_BYTES, _I64, _I32, _I32, _BYTES] + [_I32] * 8)
        fn = builder.inttoptr(fn_at, fnty.as_pointer())
        h32, w32 = builder.trunc(h, _I32), builder.trunc(w, _I32)
        zero, one = _ir.Constant(_I32, 0), _ir.Constant(_I32, 1)
        return builder.call(fn, [builder.inttoptr(src, _BYTES), size, h32, w32, builder.inttoptr(dst, _BYTES),
                                 h32, w32, zero, zero, one, builder.trunc(denom, _I32), zero, zero])
    signature = numba.types.int32(function_at, source_at, source_size, height, width, destination_at, scale_denom)
    return signature, codegen


@intrinsic
def call_resize(typingctx, function_at, source_at, height, width, top, bottom, left, right, destination_at,
                out_height, out_width):
    """libffcv ``resize``: OpenCV INTER_AREA resize of rows [top, bottom) x columns [left, right) of the
    contiguous RGB image at ``source_at`` (height x width) into ``out_height`` x ``out_width`` RGB."""
    def codegen(context, builder, signature, args):
        values = _as_i64(context, builder, signature, args)
        fnty = _ir.FunctionType(_ir.VoidType(), [_I64] * 11)
        fn = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(fn, [_ir.Constant(_I64, 0)] + values[1:])
        return context.get_dummy_value()
    return numba.types.none(function_at, source_at, height, width, top, bottom, left, right, destination_at, out_height,
                      out_width), codegen


def libffcv_functions() -> Dict[str, int]:
    """The addresses of libffcv's C functions ``imdecode`` and ``resize`` (their signatures: FFCV 1.0.2's
    ``libffcv.cpp``). The library stays loaded for the life of the process (``ffcv.libffcv`` holds it)."""
    import ctypes

    from ffcv import libffcv

    return {name: int(ctypes.cast(getattr(libffcv.lib, name), ctypes.c_void_p).value)
            for name in ("imdecode", "resize")}


def image_modes() -> Dict[str, int]:
    """FFCV's image storage modes as stored in the per-sample ``mode`` column (jpg 0, raw 1)."""
    return {"jpg": JPEG_MODE, "raw": RAW_MODE}


def _check_image_modes() -> None:
    from ffcv.fields.rgb_image import IMAGE_MODES

    found = {name: int(IMAGE_MODES[name]) for name in ("jpg", "raw")}
    if found != image_modes():
        raise ImportError(f"this FFCV stores image modes {found}; ffmix's decoders expect {image_modes()}")


_check_image_modes()
