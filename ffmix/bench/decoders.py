"""Decoder rows of the end-to-end section: FFCV's random-resized-crop decoder beside ffmix's seeded one, each
alone in an otherwise identical FFCV pipeline (decode -> ToTensor -> ToTorchImage, uint8, one-hot targets),
so the ratio is the decoders' and nothing else."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

DECODERS = ("ffcv", "ffmix", "ffmix_exact")


def decoder_loader(decoder: str, beton, *, crop: int, batch_size: int, workers: int, num_classes: int,
                   device: torch.device, seed: int = 0, indices: Optional[Sequence[int]] = None):
    """A loader yielding (uint8 (N, 3, crop, crop), float32 one-hot (N, num_classes)) through ``decoder``'s
    random-resized crop: "ffcv" (FFCV's RandomResizedCropRGBImageDecoder, unseeded), "ffmix" (ffmix's
    RandomResizedCropDecoder, seeded: the box's region, DCT-scaled) or "ffmix_exact" (the same with
    exact_decode=True: whole decode, FFCV's pixels)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor, ToTorchImage

    from ..ops.decoders import RandomResizedCropDecoder
    from .alternatives import DeviceLoader

    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "ffcv":
        decode = RandomResizedCropRGBImageDecoder((crop, crop))
    else:
        decode = RandomResizedCropDecoder((crop, crop), seed=seed, exact_decode=decoder == "ffmix_exact")
    loader = Loader(str(beton), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM, seed=seed,
                    indices=indices, drop_last=True,
                    pipelines={"image": [decode, ToTensor(), ToTorchImage()], "label": [IntDecoder(), ToTensor()]})

    def finish(images, labels):
        return images, F.one_hot(labels.view(-1).long(), num_classes).to(torch.float32)

    return DeviceLoader(loader, device, finish)
