"""Images that arrive as encoded bytes (a parquet cell, a tar member, a Python dataset's item): decode them, or
hand their bytes to the JPEG pass-through, with the limits the file sources apply.

The pass-through stores a JPEG's bytes without decoding, so Pillow's pixel limit (the guard against a header
that claims a huge image, e.g. 60000 x 60000 in a few hundred bytes) never runs for it. ``refuse_huge_jpeg``
applies the same limit to the header instead (``ffmix.convert`` calls it for every source's JPEG), so a hostile
image is refused on both paths.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np

from ..errors import FfmixError
from .base import BadSampleError, as_image
from .imagefolder import decode_image
from .jpeg import SOI, JpegHeader


def pixel_limit() -> int:
    """The most pixels an image may have: the size at which Pillow refuses to decode (twice its warning size)."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else 1 << 62


def decode_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W)`` or ``(H, W, 3)`` uint8; raises ``BadSampleError`` naming ``name``."""
    if not data:
        raise BadSampleError(name, "the image is empty (0 bytes)")
    image = decode_image(io.BytesIO(data), name=name)
    try:
        return as_image(image, name)
    except FfmixError as exc:
        raise BadSampleError(name, str(exc)) from None


def jpeg_for_passthrough(data: bytes) -> Optional[bytes]:
    """``data`` when it is a JPEG (start-of-image marker) to offer to the pass-through, else ``None``."""
    return data if data.startswith(SOI) else None


def refuse_huge_jpeg(header: JpegHeader, name: str) -> None:
    """Raise ``BadSampleError`` naming ``name`` when a JPEG header claims more pixels than ``pixel_limit()``."""
    if header.height * header.width > pixel_limit():
        raise BadSampleError(name, f"the JPEG header claims {header.width}x{header.height} pixels, over the "
                                   f"limit of {pixel_limit()} (PIL.Image.MAX_IMAGE_PIXELS x 2); a damaged or "
                                   "hostile file")
