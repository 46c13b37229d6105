"""The settings compiled code reads, as records with named fields, and the table of C entry-point signatures.

Why records? The mixing settings used to travel as a 10-tuple unpacked by position in several places and
through argument lists up to 27 long; two swapped floats there would compile and be silently wrong. Now each
group of settings is one NumPy structured record, filled by name from its Python object
(``Mixing.settings_record``, ``MixLabels``, ``FloatOutput.settings_record``, ``AutoAugment``,
``RandomErasing``) and read by name in the kernels (``settings.mixup_alpha``). Adding an option is: a field
here, the line that fills it, the line that reads it.

Who owns a record's memory? The Python object that filled it, for as long as a compiled pipeline can run:
the ``Mixing`` (its mixing record, made in ``__post_init__``, never replaced; frozen, so never stale) or the
FFCV operation (its output, augment or erase record, made in ``__init__``, never replaced). The records are
written once, before any pipeline is compiled, and only read afterwards.

The C entry points' parameters come from ``ENTRY_POINTS``: ``entry_point`` checks that the decorated
function's parameter names are the table's, and derives its Numba signature from the names (``*_at`` is an
address, everything else an int64), so a signature cannot drift from its function.
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
from numba import carray, cfunc, from_dtype, njit, types
from numba.extending import intrinsic
from numba.np.ufunc import parallel as _parallel

# A cached cfunc holding parallel code needs Numba's thread pool started before it is loaded; every module
# that defines C entry points imports this one, so this is the one place that starts it.
_parallel._launch_threads()

# name, NumPy type, (shape): the mixing draw, identical for the image and the label op of one Mixing.
MIX_FIELDS = (
    ("seed", np.int64),
    ("mixup_alpha", np.float64),
    ("cutmix_alpha", np.float64),
    ("mix_prob", np.float64),
    ("switch_prob", np.float64),
    ("mode", np.int64),          # params.MODES
    ("lam_low", np.float64),
    ("lam_high", np.float64),
    ("box_height", np.int64),    # the size CutMix boxes are cut in (0: unknown, CutMix leaves samples unmixed)
    ("box_width", np.int64),
)
# What the label op writes: soft rows (num_classes wide, smoothed) or (y_a, y_b, λ) pairs.
TARGET_FIELDS = (
    ("num_classes", np.int64),
    ("label_smoothing", np.float64),
    ("soft", np.int64),
)
# How the image op writes float32: ``pixel * scale[c] + shift[c]`` for the first ``out_channels`` channels.
FLOAT_FIELDS = (
    ("out_channels", np.int64),
    ("channels_last", np.int64),
    ("scale", np.float32, (3,)),
    ("shift", np.float32, (3,)),
)

# How a crop decoder picks and decodes each sample's box (``decoders._CropDecoder``).
CROP_FIELDS = (
    ("seed", np.int64),
    ("kind", np.int64),            # decode_kernels.CROP_RANDOM or CROP_CENTER
    ("scale_low", np.float64),     # random boxes: area fraction range
    ("scale_high", np.float64),
    ("log_ratio_low", np.float64),  # random boxes: log aspect-ratio range
    ("log_ratio_high", np.float64),
    ("center_ratio", np.float64),  # centre boxes: the limiting side's share
    ("max_dct", np.int64),         # largest DCT scaling denominator allowed (1: full-size decode)
    ("exact", np.int64),           # 1: decode the whole JPEG with libffcv, as FFCV does; 0: only the box's region
    ("policy", np.int64),          # decode_kernels.RAISE or STAND_IN_POLICY
)
# Which samples a ``RandomFlip`` flips.
FLIP_FIELDS = (
    ("seed", np.int64),
    ("probability", np.float64),
)
# RandAugment / TrivialAugmentWide (``auto_augment.py``): torchvision's op choice and magnitude, timm's extras.
AUGMENT_FIELDS = (
    ("seed", np.int64),
    ("policy", np.int64),          # auto_augment_draws.RAND_AUGMENT or TRIVIAL_AUGMENT
    ("num_ops", np.int64),         # op slots per image (TrivialAugment: 1)
    ("magnitude_bin", np.int64),   # torchvision's ``magnitude``
    ("num_bins", np.int64),        # torchvision's ``num_magnitude_bins``
    ("apply_prob", np.float64),    # chance each slot applies (timm's ``p``)
    ("magnitude_std", np.float64),  # timm's magnitude noise in bins (0: none, inf: uniform)
    ("max_bin", np.int64),         # the noisy magnitude's upper clip
    ("gray", np.int64),            # 1: a grayscale file's three equal channels (ops act as on one channel)
)
# RandomErasing (``erasing.py``), as timm's ``_erase`` draws it.
ERASE_FIELDS = (
    ("seed", np.int64),
    ("probability", np.float64),   # chance a sample is erased
    ("mode", np.int64),            # erasing.MODES: const, rand, pixel
    ("min_count", np.int64),       # boxes per erased sample, uniform in [min_count, max_count]
    ("max_count", np.int64),
    ("min_area", np.float64),      # box area as a fraction of the image, split over the boxes
    ("max_area", np.float64),
    ("log_aspect_low", np.float64),   # log aspect ratio range
    ("log_aspect_high", np.float64),
    ("channels_last", np.int64),   # 1: the float images are (H, W, C)
)

MIX_SETTINGS = np.dtype(list(MIX_FIELDS), align=True)
CROP_SETTINGS = np.dtype(list(CROP_FIELDS), align=True)
FLIP_SETTINGS = np.dtype(list(FLIP_FIELDS), align=True)
TARGET_SETTINGS = np.dtype(list(TARGET_FIELDS), align=True)
FLOAT_SETTINGS = np.dtype(list(FLOAT_FIELDS), align=True)
AUGMENT_SETTINGS = np.dtype(list(AUGMENT_FIELDS), align=True)
ERASE_SETTINGS = np.dtype(list(ERASE_FIELDS), align=True)
MIX_RECORD, TARGET_RECORD, FLOAT_RECORD, CROP_RECORD, FLIP_RECORD, AUGMENT_RECORD, ERASE_RECORD = (
    from_dtype(d) for d in (MIX_SETTINGS, TARGET_SETTINGS, FLOAT_SETTINGS, CROP_SETTINGS, FLIP_SETTINGS,
                            AUGMENT_SETTINGS, ERASE_SETTINGS))


def make_record(dtype: np.dtype, **values) -> np.ndarray:
    """A one-element array of ``dtype`` with every field set by name; a missing or unknown name raises.

    The array is the owner of the record's memory (``record.ctypes.data`` is what compiled code reads).
    """
    missing, unknown = set(dtype.names) - set(values), set(values) - set(dtype.names)
    if missing or unknown:
        raise TypeError(f"settings record {dtype.names}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    record = np.zeros(1, dtype)
    for name, value in values.items():
        record[0][name] = value
    return record


def named_fields(record: np.ndarray) -> np.record:
    """The one element of ``record`` (from ``make_record``) with its fields readable as attributes
    (``settings.seed``); a view of the same memory, so it shows what the compiled code reads. Jitted kernels
    take it as a Numba record, the same type ``read_settings`` returns."""
    return record.view(np.recarray)[0]


def python_values(settings) -> SimpleNamespace:
    """A record's fields as Python ints and floats, by name: for the pure-Python references, where NumPy's
    int64 arithmetic would overflow (``np.int64 + 2**64 - 1``) instead of growing as Python's does.
    Values already converted are returned as they are."""
    if isinstance(settings, SimpleNamespace):
        return settings
    return SimpleNamespace(**{name: settings[name].item() for name in settings.dtype.names})


@intrinsic
def record_pointer(typingctx, address, record_type):
    """An integer address as a typed pointer to ``record_type`` (for ``numba.carray``)."""
    record = record_type.instance_type

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(record)))
    return types.CPointer(record)(address, record_type), codegen


@njit(cache=True, inline="always")
def read_settings(address, record):
    """The settings record of Numba type ``record`` (``MIX_RECORD`` ... ``ERASE_RECORD``) living at ``address``."""
    return carray(record_pointer(address, record), (1,))[0]


# Every C entry point ffmix's operations call by address, and its parameters in order. ``*_at`` parameters
# are addresses (see each module's ownership table); the others are int64 counts and sizes.
ENTRY_POINTS = {
    "mix_image_batch": ("images_at", "out_at", "indices_at", "count", "height", "width", "channels",
                        "control_at", "mix_at"),
    "mix_normalize_batch": ("images_at", "out_at", "indices_at", "count", "height", "width", "channels",
                            "control_at", "mix_at", "float_at"),
    "mix_label_batch": ("labels_at", "out_at", "indices_at", "count", "control_at", "mix_at", "target_at"),
    "mix_raw_batch": ("sources_at", "indices_at", "count", "height", "width", "channels", "out_at", "control_at",
                      "mix_at"),
    "mix_normalize_raw_batch": ("sources_at", "indices_at", "count", "height", "width", "channels", "out_at",
                                "control_at", "mix_at", "float_at"),
    "decode_crop_batch": ("table_at", "count", "out_at", "out_height", "out_width", "scratch_at", "scratch_bytes",
                          "work_bytes", "slots", "workers", "control_at", "crop_at", "imdecode_at", "resize_at", "region_at",
                          "report_at"),
    "stand_in_rows_batch": ("rows_at", "count", "report_at"),
    "flip_batch": ("images_at", "indices_at", "count", "height", "width", "channels", "control_at", "flip_at"),
    "augment_batch": ("images_at", "scratch_at", "indices_at", "count", "height", "width", "channels", "control_at",
                      "augment_at"),
    "erase_batch": ("images_at", "indices_at", "count", "dim_1", "dim_2", "dim_3", "control_at", "erase_at"),
    "erase_draws_batch": ("table_at", "indices_at", "count", "columns", "channels", "height", "width", "control_at",
                          "erase_at"),
}


def entry_signature(name: str):
    """The Numba signature of entry point ``name``: int64 result, ``*_at`` as addresses, the rest int64."""
    return types.int64(*(types.uintp if arg.endswith("_at") else types.int64 for arg in ENTRY_POINTS[name]))


def entry_point(function):
    """Compile ``function`` as a cached C entry point with the signature ``ENTRY_POINTS`` gives its name.

    Raises TypeError at import if the function's parameters are not the table's, in the table's order.
    """
    expected = ENTRY_POINTS[function.__name__]
    found = tuple(inspect.signature(function).parameters)
    if found != expected:
        raise TypeError(f"entry point {function.__name__} takes {found}, ENTRY_POINTS says {expected}")
    return cfunc(entry_signature(function.__name__), cache=True, nogil=True)(function)
