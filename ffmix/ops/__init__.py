"""ffmix's FFCV operations and their kernels. MixUp/CutMix: Numba kernels (kernels.py), their NumPy oracle
(reference.py), the per-batch random parameters (params.py, rng.py) and the operations (mixing.py). Crops and
flips: augment.py, decoders.py. RandAugment/TrivialAugmentWide: auto_augment*.py (torchvision is the oracle).
RandomErasing after mixing: erasing.py, erasing_reference.py."""
