"""ffmix: fast, correct MixUp/CutMix data loading for PyTorch on FFCV.

    import ffmix
    ffmix.convert_arrays(images, labels, "train.beton")            # or the `ffmix convert` command
    loader = ffmix.make_loader("train.beton", batch_size=512, mixup_alpha=0.8, cutmix_alpha=1.0)
    for images, soft_targets in loader: ...

Names are imported on first use, so the command line starts without loading torch.
"""
import importlib

from . import kernel_cache

kernel_cache.refresh_package()   # before any kernel module loads a stale cached kernel (see kernel_cache.py)

__version__ = "0.1.0"

_EXPORTS = {
    "make_loader": "ffmix.loader",
    "MixLoader": "ffmix.loader",
    "Mixing": "ffmix.ops.mixing",
    "FloatOutput": "ffmix.ops.mixing",
    "MixImages": "ffmix.ops.mixing",
    "MixLabels": "ffmix.ops.mixing",
    "RandomResizedCropDecoder": "ffmix.ops.decoders",
    "CenterCropDecoder": "ffmix.ops.decoders",
    "RandomFlip": "ffmix.ops.decoders",
    "RandAugment": "ffmix.ops.auto_augment",
    "TrivialAugmentWide": "ffmix.ops.auto_augment",
    "MixingRawDecoder": "ffmix.ops.decoders",
    "DatasetMeta": "ffmix.metadata",
    "read_meta": "ffmix.metadata",
    "convert_arrays": "ffmix.convert",
    "convert_dataset": "ffmix.convert",
    "FfmixError": "ffmix.errors",
    "MixCollate": "ffmix.collate",
    "WithIndex": "ffmix.collate",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ffmix' has no attribute {name!r}")


def __dir__():
    return __all__
