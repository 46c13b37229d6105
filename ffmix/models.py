"""Image classifiers sized for the data ``ffmix train`` sees.

* ``cnn``: five 3x3 convolutions with BatchNorm for 28x28 images (Fashion-MNIST): most of the work happens at
  14x14 and 7x7, where a convolution costs a quarter and a sixteenth of what it would at full size: 93.6% in
  10 epochs, about 10 minutes on two AVX2 CPU cores (README, Train).
* ``resnet9``: the ResNet-9 of the DAWNBench CIFAR-10 entries (Myrtle.ai, then airbench) for 32x32 images.
* ``tiny``: two convolutions, for tests and smoke runs.

Every model takes ``(N, C, H, W)`` floats and returns ``(N, num_classes)`` logits; global pooling at the end
lets them run on any image size, though they are tuned for the sizes above.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .errors import FfmixError

MODEL_NAMES = ("auto", "cnn", "resnet9", "tiny")


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: the BatchNorm right after it has its own shift.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalPoolHead(nn.Module):
    """Global max pool, then a linear layer. ``scale`` < 1 shrinks the initial logits: with a max pool the
    features are large and positive, and an unscaled head starts over-confident (ResNet-9 uses 0.125)."""

    def __init__(self, channels: int, num_classes: int, scale: float = 1.0):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(x, dim=(2, 3))) * self.scale


def small_cnn(in_channels: int, num_classes: int, width: int = 48) -> nn.Module:
    """Five conv-BN-ReLU layers: one at full size (16 channels), two at 1/2 (``width``), two at 1/4
    (2 x ``width``); then global max pool and a linear layer.

    The full-size stage stays narrow: it sees one to three input channels, and each of its channels costs the
    memory traffic of four at 1/2 size (BatchNorm and ReLU there are memory-bound on a CPU).
    """
    return nn.Sequential(
        conv_bn(in_channels, 16), nn.MaxPool2d(2),
        conv_bn(16, width), conv_bn(width, width), nn.MaxPool2d(2),
        conv_bn(width, 2 * width), conv_bn(2 * width, 2 * width),
        GlobalPoolHead(2 * width, num_classes))


def resnet9(in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """ResNet-9: prep conv, then three stages (conv, 2x2 max pool), the first and last with a residual block."""
    w1, w2, w3, w4 = width, 2 * width, 4 * width, 8 * width
    return nn.Sequential(
        conv_bn(in_channels, w1),
        conv_bn(w1, w2), nn.MaxPool2d(2), Residual(w2),
        conv_bn(w2, w3), nn.MaxPool2d(2),
        conv_bn(w3, w4), nn.MaxPool2d(2), Residual(w4),
        GlobalPoolHead(w4, num_classes, scale=0.125))


def tiny(in_channels: int, num_classes: int, width: int = 8) -> nn.Module:
    return nn.Sequential(conv_bn(in_channels, width), nn.MaxPool2d(2), conv_bn(width, 2 * width),
                         GlobalPoolHead(2 * width, num_classes))


BUILDERS: Dict[str, Callable[..., nn.Module]] = {"cnn": small_cnn, "resnet9": resnet9, "tiny": tiny}


def resolve_model_name(name: str, image_shape: Optional[Tuple[int, int]]) -> str:
    """``auto`` -> ``cnn`` for images up to 28 pixels a side, else ``resnet9``; other names pass through."""
    if name not in MODEL_NAMES:
        raise FfmixError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if name != "auto":
        return name
    return "cnn" if image_shape is not None and max(image_shape) <= 28 else "resnet9"


def build_model(name: str, in_channels: int, num_classes: int, width: Optional[int] = None) -> nn.Module:
    """A freshly initialised model ``name`` (not ``auto``: resolve it first) for ``in_channels`` inputs;
    ``width`` sets the channel counts (see each builder), None for the default."""
    if name not in BUILDERS:
        raise FfmixError(f"unknown model {name!r}; choose one of {', '.join(BUILDERS)}")
    if width is not None and width < 1:
        raise FfmixError(f"width must be a positive integer, got {width}")
    return BUILDERS[name](in_channels, num_classes, **({} if width is None else {"width": width}))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
