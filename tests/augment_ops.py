"""One RandAugment op by ffmix's own kernel, in ``augment_reference``'s ``apply`` form: the tests of the draws
and of their wiring through the FFCV operation compare with it exactly, because torchvision's own geometric ops
may break ties differently on another CPU (see ``tests/test_auto_augment.py``: ``_ties``). Each kernel is
checked against torchvision op by op in that file."""
from __future__ import annotations

import numpy as np
import torch
from numba import njit

from ffmix.ops.auto_augment_kernels import OP_NAMES, apply_op


@njit(cache=True)
def apply_each(images, op, magnitude, gray):
    """``apply_op`` on each uint8 (H, W, C) image of ``images``; a new array."""
    out = np.empty_like(images)
    for i in range(images.shape[0]):
        apply_op(images[i], out[i], op, magnitude, gray)
    return out


def kernel_apply(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """Op ``name`` with ``magnitude`` on the uint8 (C, H, W) ``image`` by ``apply_op``; a new tensor."""
    pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    out = np.empty_like(pixels)
    apply_op(pixels, out, OP_NAMES.index(name), magnitude, False)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()
