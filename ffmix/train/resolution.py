"""Progressive resolution: the training image size per epoch, from ``--res-schedule LOW:HIGH:E1:E2``.

As in FFCV's ImageNet recipe: LOW up to epoch E1, HIGH from epoch E2 on, linear in between, rounded to a
multiple of 32 (FFCV's rule; halves round to even, as NumPy's ``round``). When LOW or HIGH is not a multiple
of 32 (small images, e.g. 24:32) the sizes round to whole pixels instead, so the ends are always reached.
Epochs are numbered from 1 here, as every epoch option of ``ffmix train``; evaluation keeps --image-size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FfmixError

ROUND_TO = 32


@dataclass(frozen=True)
class ResSchedule:
    low: int
    high: int
    start_epoch: int      # 1-based: the last epoch at ``low``
    end_epoch: int        # 1-based: the first epoch at ``high``

    @classmethod
    def parse(cls, text: str) -> "ResSchedule":
        """``"160:192:E1:E2"`` -> ResSchedule; FfmixError naming the flag for anything else."""
        try:
            low, high, start, end = (int(part) for part in str(text).split(":"))
        except ValueError:
            raise FfmixError(f"--res-schedule must be LOW:HIGH:E1:E2 (four integers, e.g. 160:192:10:13), "
                             f"got {text!r}") from None
        if min(low, high) < 1 or not 1 <= start <= end:
            raise FfmixError(f"--res-schedule {text}: sizes must be >= 1 and epochs 1 <= E1 <= E2")
        return cls(low, high, start, end)

    def size_at(self, epoch: int) -> int:
        """The training image side for 0-based ``epoch`` (the loop's numbering)."""
        number = epoch + 1
        if number <= self.start_epoch:
            return self.low
        if number >= self.end_epoch:
            return self.high
        size = np.interp(number, [self.start_epoch, self.end_epoch], [self.low, self.high])
        step = ROUND_TO if self.low % ROUND_TO == 0 and self.high % ROUND_TO == 0 else 1
        return int(np.round(size / step)) * step

    def __str__(self) -> str:
        return f"{self.low}:{self.high}:{self.start_epoch}:{self.end_epoch}"
