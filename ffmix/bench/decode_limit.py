"""The decode-only limit of the JPEG rows: the same files decoded at full size, nothing else.

Not a loader: it crops, resizes and mixes nothing and delivers no images, so no loader that decodes every
file in full can be faster; a loader can pass it only by decoding less (DCT scaling, region decode). The files
are read into memory once, then each batch's files are decoded by ``workers`` threads (as many as every row
has), each one JPEG at a time with libjpeg-turbo through OpenCV's ``imdecode`` (one OpenCV thread each:
``cv2.imdecode`` releases the GIL, so the threads decode in parallel).

A batch is ``(sizes, labels)``: int64 (N, 3) of each decoded image's (height, width, channels), and the
int64 (N,) labels, so what was decoded can be checked (``check_sizes``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from ..errors import FfmixError


def _one_opencv_thread() -> None:
    import cv2

    cv2.setNumThreads(1)   # each worker decodes one image at a time, as every row's threads do


def decode_files(payloads: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Decode each JPEG payload (uint8 bytes) at full size, colour; int64 (N, 3) of the decoded shapes.
    Raises ``FfmixError`` naming a file OpenCV cannot decode."""
    import cv2

    shapes = np.empty((len(payloads), 3), np.int64)
    for row, (payload, name) in enumerate(zip(payloads, names)):
        image = cv2.imdecode(payload, cv2.IMREAD_COLOR)
        if image is None:
            raise FfmixError(f"OpenCV cannot decode {name}: the bench's JPEG files are damaged; delete the work "
                             "folder so they are generated again")
        shapes[row] = image.shape
    return shapes


class DecodeLimit:
    """The decode-only limit over ``files`` (see the module docstring): ``len()`` batches of ``batch_size``
    per ``iter()``, in a seeded random order, decoded by ``workers`` threads."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, *, batch_size: int, workers: int, seed: int = 0):
        self.names = [str(f) for f in files]
        self.payloads = [np.fromfile(name, np.uint8) for name in self.names]   # decode only: no file reads timed
        self.labels = np.asarray(labels, np.int64)
        self.batch_size = batch_size
        self.workers = max(1, int(workers))
        self.rng = np.random.default_rng(seed)
        self.pool = ThreadPoolExecutor(self.workers, initializer=_one_opencv_thread,
                                       thread_name_prefix="decode-limit")

    def __len__(self) -> int:
        return len(self.payloads) // self.batch_size

    def _decode(self, indices: np.ndarray) -> np.ndarray:
        chunks = [chunk for chunk in np.array_split(indices, self.workers) if len(chunk)]
        jobs = [self.pool.submit(decode_files, [self.payloads[i] for i in chunk], [self.names[i] for i in chunk])
                for chunk in chunks]
        return np.concatenate([job.result() for job in jobs])

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.payloads))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            yield torch.from_numpy(self._decode(indices)), torch.from_numpy(self.labels[indices])

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __del__(self):
        self.pool.shutdown(wait=False)


def check_sizes(sizes, *, batch_size: int, side_range: Tuple[int, int]) -> Dict[str, object]:
    """Whether a batch of ``DecodeLimit`` decoded ``batch_size`` colour images at full size (longer side in
    ``side_range``, as the dataset stores them). Returns ``{"ok", "problems"}``; never raises."""
    problems: List[str] = []
    sizes = np.asarray(sizes)
    if sizes.shape != (batch_size, 3):
        return {"ok": False, "problems": [f"decoded shapes {sizes.shape}, expected ({batch_size}, 3)"]}
    longer = sizes[:, :2].max(axis=1)
    if (sizes[:, 2] != 3).any():
        problems.append("some images were not decoded in colour")
    if ((longer < side_range[0]) | (longer > side_range[1])).any():
        problems.append(f"decoded longer sides {int(longer.min())}..{int(longer.max())} px, stored "
                        f"{side_range[0]}..{side_range[1]}: not full-size decodes")
    return {"ok": not problems, "problems": problems, "values": "full-size decodes"}
