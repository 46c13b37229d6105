"""C-callable entry points that the FFCV operations call once per batch.

Why C callbacks and not plain calls into the jitted kernels? When Numba compiles a function that calls
another jitted function, it links the callee's code into the caller and optimises it again. FFCV compiles
each operation's closure in every process, so calling the kernels directly re-optimised the whole
parallel kernel at every start (seconds before the first batch). A ``cfunc`` is compiled once per machine
(``cache=True``) and called through its address, so the closure that FFCV compiles stays tiny.

Arrays cross the boundary as addresses plus shapes; the callers pass C-contiguous arrays. The compiler no
longer checks lifetimes across that boundary, so here is every address these functions read or write, and
what keeps it alive for as long as the compiled code can run:

============  ===============================================  ============================================
argument      what it points at                                owner (outlives the compiled pipeline)
============  ===============================================  ============================================
images_at     the decoded uint8 batch (the decoder's output)   FFCV's preallocated batch buffers, held by
                                                               the Loader for all epochs
out_at        the op's output slot (uint8, float32 images,      FFCV's preallocated buffers (the op's
              or float32 targets)                              AllocationQuery)
indices_at    the batch's sample indices as uint64             FFCV's preallocated buffers (index scratch
                                                               query): ``copy_indices`` fills it, because a
                                                               temporary array could be freed before the call
labels_at     the batch's labels as contiguous int64           FFCV's preallocated buffers (label scratch)
control_at    epoch and on/off (``control.ControlBlock``)      the ``ControlBlock`` of the ``Mixing``, made in
                                                               ``Mixing.__init__``, never replaced; both ops
                                                               hold the ``Mixing``
mix_at        the mixing settings (``settings.MIX_SETTINGS``)  the ``Mixing`` (made in ``__post_init__``, never
                                                               replaced; its settings are fixed)
target_at     num_classes, smoothing, soft or pair             the ``MixLabels`` op (made in ``__init__``)
              (``settings.TARGET_SETTINGS``)
float_at      normalisation and layout                         the ``MixImages`` op (made in ``__init__``)
              (``settings.FLOAT_SETTINGS``)
============  ===============================================  ============================================

The settings records are written once, before FFCV compiles the pipeline, and only read afterwards; counts
and sizes travel by value. Parameters and their order come from ``settings.ENTRY_POINTS``.
"""
from __future__ import annotations

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from numba import carray, njit

from .control import ENABLED, EPOCH, as_pointer, read_control
from .kernels import mix_images, mix_normalize, pair_targets, soft_targets
from .params import draw_mix_params, unmixed_params
from .rng import batch_key
from .settings import FLOAT_RECORD, MIX_RECORD, TARGET_RECORD, entry_point, read_settings


MIXED, UNCHANGED, BAD_LABEL = 1, 0, -1


def index_scratch() -> AllocationQuery:
    """The FFCV buffer ``copy_indices`` fills: one uint64 per sample of the batch."""
    return AllocationQuery((1,), np.dtype(np.uint64))


@njit(cache=True, nogil=True)
def copy_indices(indices, scratch):
    """The batch's sample indices as contiguous uint64, in FFCV-owned memory.

    The C entry points take addresses, and Numba frees a temporary array right after its last use, which
    would be before the call; FFCV's preallocated buffers stay alive, so inputs are copied there.
    """
    count = indices.shape[0]
    sample_ids = scratch[:count, 0]
    for position in range(count):
        sample_ids[position] = indices[position]
    return sample_ids


@njit(cache=True, nogil=True)
def batch_mix_params(control_at, indices, settings):
    """The batch's ``(partner, weight, box, lam)`` under ``settings`` (a ``MIX_SETTINGS`` record): drawn from
    (seed, the committed epoch, the sample indices), or, while mixing is switched off, the identity (own
    partner, full weight, no box, λ = 1)."""
    control = read_control(control_at)
    count = indices.shape[0]
    if control[ENABLED] == 0:
        return unmixed_params(count)
    key = batch_key(settings.seed, control[EPOCH], indices)
    return draw_mix_params(key, count, settings)


@entry_point
def mix_image_batch(images_at, out_at, indices_at, count, height, width, channels, control_at, mix_at):
    """Mix ``count`` uint8 (H, W, C) images into ``out``; returns UNCHANGED when mixing is switched off."""
    if read_control(control_at)[ENABLED] == 0:
        return UNCHANGED
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    out = carray(as_pointer(out_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    partner, weight, box, _ = batch_mix_params(control_at, indices, read_settings(mix_at, MIX_RECORD))
    mix_images(images, out, partner, weight, box)
    return MIXED


@njit(cache=True, inline="always")
def float_output(out_at, count, height, width, float_at):
    """The float32 output batch at ``out_at`` as the ``FLOAT_SETTINGS`` record at ``float_at`` lays it out,
    (count, C', H, W) or (count, H, W, C') if ``channels_last``, with the record's per-channel ``scale`` and
    ``shift`` for its C' <= 3 channels: (out, scale, shift, channels_last)."""
    output = read_settings(float_at, FLOAT_RECORD)
    out_channels = output.out_channels
    scale = output.scale.copy()[:out_channels]
    shift = output.shift.copy()[:out_channels]
    if output.channels_last:
        out = carray(as_pointer(out_at), (count, height, width, out_channels), np.float32)
    else:
        out = carray(as_pointer(out_at), (count, out_channels, height, width), np.float32)
    return out, scale, shift, output.channels_last != 0


@entry_point
def mix_normalize_batch(images_at, out_at, indices_at, count, height, width, channels, control_at, mix_at,
                        float_at):
    """Mix ``count`` uint8 (H, W, C) images and write them as normalised float32 to ``out`` ((count, C', H, W),
    or (count, H, W, C') if ``channels_last``), ``pixel * scale_c + shift_c`` for the C' <= 3 channels of the
    ``FLOAT_SETTINGS`` record at ``float_at``. With mixing switched off the images are only converted."""
    images = carray(as_pointer(images_at), (count, height, width, channels), np.uint8)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    out, scale, shift, channels_last = float_output(out_at, count, height, width, float_at)
    partner, weight, box, _ = batch_mix_params(control_at, indices, read_settings(mix_at, MIX_RECORD))
    mix_normalize(images, out, partner, weight, box, scale, shift, channels_last)
    return MIXED


@entry_point
def mix_label_batch(labels_at, out_at, indices_at, count, control_at, mix_at, target_at):
    """Targets of ``count`` int64 labels into ``out`` (float32 (count, C) if ``soft``, else (count, 3)), as the
    ``TARGET_SETTINGS`` record at ``target_at`` says; returns BAD_LABEL, leaving ``out`` unspecified, if a label
    is outside [0, num_classes)."""
    target = read_settings(target_at, TARGET_RECORD)
    labels = carray(as_pointer(labels_at), (count,), np.int64)
    indices = carray(as_pointer(indices_at), (count,), np.uint64)
    partner, _, _, lam = batch_mix_params(control_at, indices, read_settings(mix_at, MIX_RECORD))
    if target.soft:
        num_classes = target.num_classes
        out = carray(as_pointer(out_at), (count, num_classes), np.float32)
        return MIXED if soft_targets(labels, partner, lam, num_classes, target.label_smoothing, out) else BAD_LABEL
    out = carray(as_pointer(out_at), (count, 3), np.float32)
    pair_targets(labels, partner, lam, out)
    return MIXED
