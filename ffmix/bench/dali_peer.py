"""NVIDIA DALI's CPU pipeline as a bench peer: the same JPEG files read, decoded with a random crop
(``fn.decoders.image_random_crop``: DALI decodes only the crop's region) and resized to the output size.

DALI runs this on the CPU without a GPU (``device_id=None``); it needs the ``nvidia-dali-cuda*`` wheel (ffmix's
``dali`` extra), and the bench shows the row only where ``nvidia.dali`` imports. DALI has no MixUp/CutMix
operator, so the row is unmixed (one-hot targets), like FFCV's decoder row: a decode pipeline to compare
ffmix's whole mixed pipeline with. Crops follow torchvision's ranges (area 8-100 %, ratio 3/4-4/3), as every
other row's do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)   # torchvision's RandomResizedCrop ranges


def _pipeline(files: Sequence[str], labels: Sequence[int], *, crop: int, batch_size: int, workers: int, seed: int):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def decode_crop_resize():
        jpegs, label = fn.readers.file(files=list(files), labels=list(labels), random_shuffle=True, seed=seed,
                                       name="reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB, random_area=list(AREA),
                                               random_aspect_ratio=list(ASPECT), seed=seed)
        images = fn.resize(images, resize_x=crop, resize_y=crop)
        return images, label

    pipe = decode_crop_resize(batch_size=batch_size, num_threads=workers, device_id=None, seed=seed)
    pipe.build()
    return pipe


class DaliLoader:
    """``len()`` batches per ``iter()`` of DALI's CPU pipeline over ``files``: (uint8 (N, 3, crop, crop) channels-
    last view, float32 one-hot (N, num_classes))."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, *, num_classes: int, crop: int, batch_size: int,
                 workers: int, seed: int = 0):
        self.num_classes = num_classes
        self.count = len(files)
        self.batch_size = batch_size
        self.pipe = _pipeline([str(f) for f in files], [int(v) for v in labels], crop=crop, batch_size=batch_size,
                              workers=workers, seed=seed)

    def __len__(self) -> int:
        return self.count // self.batch_size

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(len(self)):   # DALI's reader runs on across epochs: an epoch is len() batches
            images, labels = self.pipe.run()
            pixels = torch.from_numpy(np.asarray(images.as_array())).permute(0, 3, 1, 2)
            label_ids = torch.from_numpy(np.asarray(labels.as_array()).reshape(-1).astype(np.int64))
            yield pixels, F.one_hot(label_ids, self.num_classes).to(torch.float32)
