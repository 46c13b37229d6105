"""The NumPy float64 oracle of ``resize_kernels.resize_box``: the same filter, written from its definition.

The filter, per axis: output pixel ``o`` of ``n_out`` covers the source interval
``[lo + o * s, lo + (o + 1) * s)`` with ``s = length / n_out`` (the box ``[lo, lo + length)`` cut into equal
footprints); source pixel ``i`` covers ``[i, i + 1)``; the output is the source averaged over the footprint,
each pixel weighted by the length of its overlap with the footprint over ``s``.

That one definition is OpenCV's INTER_AREA along both kinds of axis:

* shrinking (``s >= 1``): the area average (``cv::resize``'s ``resizeArea`` / ``resizeAreaFast``);
* growing (``s < 1``): a footprint touches one or two source pixels, and the second one's weight is the share
  of the footprint past the first one's end. That is OpenCV's "linear" coefficient for INTER_AREA when
  enlarging (``fx = (dx + 1) - (sx + 1) / scale``, clipped to [0, 1)), so an exact 2x enlargement repeats each
  pixel.

Where OpenCV differs: it drops coverage slivers under 1e-3 of a pixel when shrinking, and when one axis grows
and the other shrinks it applies the enlarging formula to both axes (so the shrinking axis is sampled by two
taps, not averaged). Here each axis is averaged over its footprint whatever the other does.

Rounding: half up, once, at the end.
"""
from __future__ import annotations

import numpy as np


def axis_weights(lo: float, length: float, n_src: int, n_out: int) -> np.ndarray:
    """float64 (n_out, n_src): row ``o`` holds each source pixel's share of output ``o``'s footprint."""
    scale = length / n_out
    starts = lo + scale * np.arange(n_out, dtype=np.float64)
    ends = starts + scale
    pixel_lo = np.arange(n_src, dtype=np.float64)
    overlap = np.minimum(ends[:, None], pixel_lo[None, :] + 1) - np.maximum(starts[:, None], pixel_lo[None, :])
    return np.clip(overlap, 0.0, None) / scale


def resize_box_reference(image: np.ndarray, top: float, left: float, height: float, width: float,
                         out_height: int, out_width: int, rounded: bool = True) -> np.ndarray:
    """The box ``[top, top + height) x [left, left + width)`` (source pixels, fractional allowed) of the uint8
    (H, W, 3) ``image`` resized to (out_height, out_width, 3): uint8, or the float64 values before rounding
    when ``rounded`` is False."""
    source = image.astype(np.float64)
    rows = axis_weights(top, height, image.shape[0], out_height)
    columns = axis_weights(left, width, image.shape[1], out_width)
    exact = np.einsum("yi,ijc,xj->yxc", rows, source, columns, optimize=True)
    if not rounded:
        return exact
    return np.clip(np.floor(exact + 0.5), 0, 255).astype(np.uint8)
