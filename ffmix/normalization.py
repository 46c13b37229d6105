"""The default normalisation statistics, in one home: ``make_loader`` applies them and the bench's other paths
(DataLoader recipes, timm, kornia, FFCV) normalise with the same numbers, so every row delivers the same values.

Kept free of heavy imports: DataLoader worker processes of the bench import it.
"""
from __future__ import annotations

from typing import Tuple

# ImageNet statistics for colour, [-1, 1] for grayscale (per channel, on pixel values scaled to [0, 1])
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.5,), (0.5,)


def default_mean_std(channels: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) for images of ``channels`` channels: the grayscale pair for 1, the colour pair otherwise."""
    return (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)
