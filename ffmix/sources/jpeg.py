"""What a JPEG file's header says, read without decoding: is it one FFCV's decoder takes as it is, and its size.

FFCV decodes with libjpeg-turbo's TurboJPEG API into RGB. ffmix stores a source JPEG's bytes unchanged only when
its header shows the kinds that path reads: Huffman-coded baseline, extended or progressive (SOF0/1/2), 8-bit
samples, one (gray) or three (YCbCr/RGB) components, and an end-of-image marker after the scan data (a cut-off
file has none). Anything else (CMYK/YCCK, 12-bit, lossless, arithmetic-coded, height defined later by a DNL
marker, a damaged header) is decoded and re-encoded instead, or reported when it cannot be decoded at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
STORABLE_FRAMES = (0xC0, 0xC1, 0xC2)            # baseline, extended sequential, progressive; Huffman coding
OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = set(range(0xD0, 0xD8)) | {0x01}    # markers without a length field


@dataclass(frozen=True)
class JpegHeader:
    height: int
    width: int
    components: int     # 1 gray, 3 colour
    storable: bool      # FFCV's decoder reads the bytes as they are
    reason: str = ""    # why not, when not storable


def read_jpeg_header(data: bytes) -> Optional[JpegHeader]:
    """The frame header of ``data``, or ``None`` when ``data`` is not a JPEG (no start-of-image marker)
    or its header is damaged. Walks the marker segments up to the first scan, a few dozen bytes of Python."""
    if not data.startswith(SOI):
        return None
    size = len(data)
    position = 2
    frame = None
    while position + 4 <= size:
        if data[position] != 0xFF:
            return None                                  # garbage between segments: damaged
        marker = data[position + 1]
        if marker == 0xFF:                               # fill byte
            position += 1
            continue
        if marker in STANDALONE:
            position += 2
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        if length < 2 or position + 2 + length > size:
            return None
        if marker in STORABLE_FRAMES or marker in OTHER_FRAMES:
            if length < 8:
                return None
            precision = data[position + 4]
            height = (data[position + 5] << 8) | data[position + 6]
            width = (data[position + 7] << 8) | data[position + 8]
            components = data[position + 9]
            reasons = []
            if marker not in STORABLE_FRAMES:
                reasons.append(f"frame type SOF{marker - 0xC0} (lossless or arithmetic coding)")
            if precision != 8:
                reasons.append(f"{precision}-bit samples")
            if components not in (1, 3):
                reasons.append(f"{components} components (CMYK?)")
            if height == 0 or width == 0:
                reasons.append("size given after the scan (DNL)")
            frame = (height, width, components, "; ".join(reasons))
        elif marker == 0xDA:                             # start of scan: the header is over
            if frame is None:
                return None
            height, width, components, reason = frame
            if not reason and data.rfind(EOI, position) < 0:
                reason = "no end-of-image marker (cut off?)"
            return JpegHeader(height, width, components, storable=not reason, reason=reason)
        position += 2 + length
    return None
