"""MixUp/CutMix as FFCV operations: Numba kernels (kernels.py), their NumPy oracle (reference.py), the
per-batch random parameters (params.py, rng.py) and the operations themselves (mixing.py)."""
