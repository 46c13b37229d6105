"""RandomErasing written on the device: the batch's draw table (``erasing_draws``) applied to normalised images
with a few vectorised torch operations, on any device (the tests run it on the CPU).

Per box slot (``max_count`` of them, usually 1), for the whole batch at once: the box is a mask from the
table's coordinates by broadcasting comparisons ((N, 1, 1, 1) corners against (1, 1, H, 1) rows and
(1, 1, 1, W) columns; samples with fewer boxes are masked out), then the box takes
- "const": 0 (the mean colour);
- "rand": the table's colour per channel;
- "pixel": the normal values the CPU path writes, computed here from the box's noise key. SplitMix64 is
  counter-based: the j-th output of stream ``key`` is ``mix64(key + j * GOLDEN_GAMMA)``, so pair p of the
  box's noise is Box-Muller on outputs ``2p+1`` and ``2p+2`` (cosine half, then sine half), exactly as
  ``erasing.box_noise`` runs through them. Each sample's noise is computed in the box's own (c, y, x) order
  for the longest box the settings allow (``noise_length``: about a third of the image for timm's areas),
  then gathered into place at flat position ``k = (c * h + y) * w + x``. Computed in int64 (two's complement
  wraps as uint64 does; logical shifts are masked arithmetic ones) and float64, then float32: the CPU path's
  values up to the last bit of float64 log/cos/sin (torch's and the C library's may differ by an ulp);
  nothing crosses the bus but one key per box.

No data-dependent shapes, no host synchronisation: the pipeline's stream order is kept on a GPU. Boxes later in
a sample overwrite earlier ones, as on the CPU path. "pixel" works in chunks of samples to bound the int64
temporaries (``PIXEL_CHUNK_ELEMENTS``).
"""
from __future__ import annotations

import math

import torch

from .erasing import MODE_CONST, MODE_PIXEL, MODE_RAND
from .erasing_draws import HEIGHT, LEFT, NOISE_KEY, SLOT_FIXED, TOP, USED, WIDTH, slot_start
from .rng import GOLDEN_GAMMA, _MIX_1, _MIX_2

PIXEL_CHUNK_ELEMENTS = 1 << 24   # samples x channels x pixels per "pixel" chunk (128 MiB per int64 temporary)
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


def _signed(value) -> int:
    """A uint64 constant as the int64 with the same bits."""
    value = int(value)
    return value - (1 << 64) if value >= 1 << 63 else value


GAMMA, MIX_1, MIX_2 = _signed(GOLDEN_GAMMA), _signed(_MIX_1), _signed(_MIX_2)


def _shift_right(values: torch.Tensor, bits: int) -> torch.Tensor:
    """uint64's logical right shift on int64 bits (torch shifts int64 arithmetically)."""
    return (values >> bits) & ((1 << (64 - bits)) - 1)


def mix64(values: torch.Tensor) -> torch.Tensor:
    """``rng.mix64`` on int64 tensors holding uint64 bits."""
    values = (values ^ _shift_right(values, 30)) * MIX_1
    values = (values ^ _shift_right(values, 27)) * MIX_2
    return values ^ _shift_right(values, 31)


def stream_uniform(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """float64 uniforms: output number ``steps`` (1 for the first) of each stream ``keys``, as ``rng.uniform``."""
    return _shift_right(mix64(keys + steps * GAMMA), 11).to(torch.float64) * _TWO_POW_MINUS_53


def box_noise_rows(keys: torch.Tensor, length: int) -> torch.Tensor:
    """float32 (S, length) ``erasing.box_noise`` values, flat, of the noise streams ``keys`` (int64 (S,))."""
    first_steps = torch.arange(0, length + 1, 2, device=keys.device)[:(length + 1) // 2] + 1   # 1, 3, 5, ...
    keys = keys.view(-1, 1)
    radius = torch.sqrt(-2.0 * torch.log(1.0 - stream_uniform(keys, first_steps)))
    angle = (2.0 * math.pi) * stream_uniform(keys, first_steps + 1)
    pairs = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
    return pairs.view(keys.shape[0], -1)[:, :length].to(torch.float32)


def noise_length(channels: int, height: int, width: int, max_area: float) -> int:
    """The most values one box's noise can need: ``channels`` times the largest box ``draw_erasures`` accepts.
    Its sides are ``rint(sqrt(a * r))`` and ``rint(sqrt(a / r))`` with ``a <= max_area * H * W``, each at most
    half a pixel above the root and below the image side, so ``h * w <= a + (H + W) / 2``."""
    largest = min((height - 1) * (width - 1), math.floor(max_area * height * width + (height + width) / 2) + 1)
    return channels * max(largest, 1)


def erase_on_device(images: torch.Tensor, table: torch.Tensor, settings) -> torch.Tensor:
    """Erase, in place, the normalised float (N, C, H, W) ``images`` (any memory format, any device) as the draw
    ``table`` (int64 (N, columns), on the same device) says; ``settings``: the ``ERASE_SETTINGS`` record it was
    drawn under (its mode and largest area). Returns ``images``. Reference: ``erasing_reference.erase_reference``
    (and the CPU kernel, ``erasing.erase_images``)."""
    mode, max_area = int(settings["mode"]), float(settings["max_area"])
    count, channels, height, width = images.shape
    max_count = (table.shape[1] - 1) // (SLOT_FIXED + channels)
    rows = torch.arange(height, device=images.device).view(1, 1, height, 1)
    columns = torch.arange(width, device=images.device).view(1, 1, 1, width)
    for slot in range(max_count):
        start = slot_start(slot, channels)
        top, left, box_h, box_w = (table[:, start + field].view(count, 1, 1, 1)
                                   for field in (TOP, LEFT, HEIGHT, WIDTH))
        inside = ((table[:, USED] > slot).view(count, 1, 1, 1) & (rows >= top) & (rows < top + box_h)
                  & (columns >= left) & (columns < left + box_w))              # (N, 1, H, W)
        if mode == MODE_CONST:
            images.masked_fill_(inside, 0.0)
        elif mode == MODE_RAND:
            colours = table[:, start + SLOT_FIXED:start + SLOT_FIXED + channels].to(torch.int32)
            colours = colours.view(torch.float32).view(count, channels, 1, 1)
            images.copy_(torch.where(inside, colours.to(images.dtype), images))
        elif mode == MODE_PIXEL:
            _erase_pixels(images, inside, table[:, start + NOISE_KEY], (top, left, box_h, box_w),
                          noise_length(channels, height, width, max_area))
        else:
            raise ValueError(f"unknown erasing mode {mode}")
    return images


def _erase_pixels(images, inside, keys, box, length: int) -> None:
    """The "pixel" values of one slot (``box``: (N, 1, 1, 1) top, left, height, width), written where ``inside``;
    in chunks of samples."""
    count, channels, height, width = images.shape
    chunk = max(1, PIXEL_CHUNK_ELEMENTS // (channels * height * width))
    channel_ids = torch.arange(channels, device=images.device).view(1, channels, 1, 1)
    rows = torch.arange(height, device=images.device).view(1, 1, height, 1)
    columns = torch.arange(width, device=images.device).view(1, 1, 1, width)
    for first in range(0, count, chunk):
        part = slice(first, min(first + chunk, count))
        top, left, box_h, box_w = (value[part] for value in box)
        noise = box_noise_rows(keys[part], length)                                  # (n, length), box order
        # each pixel's flat position in its box's noise; outside the box clamped (and masked below)
        positions = (channel_ids * box_h + (rows - top)) * box_w + (columns - left)
        positions = positions.clamp_(0, length - 1).view(noise.shape[0], -1)
        values = torch.gather(noise, 1, positions).view(-1, channels, height, width)
        images[part] = torch.where(inside[part], values.to(images.dtype), images[part])
