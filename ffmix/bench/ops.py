"""``ffmix bench ops``: mixing alone, one batch already in memory, every implementation on the same batch
with the same number of threads.

The ffmix image op (``draw_mix_params`` + ``mix_images``, MixUp+CutMix, and MixUp only) and FFCV's
``ImageMixup`` work on the uint8 (N, H, W, 3) batch a decoder gives. The tutorial functions and torchvision's
MixUp/CutMix work on the float32 (N, 3, H, W) tensor they are written for (converted beforehand, untimed).
The memory-speed limit every time is divided by is a copy of the uint8 batch with the same number of
threads as the paths (a Numba ``prange`` copy in one slice per thread); the copy of the float32 batch is shown
too, as the float paths' own limit, and the single-threaded ``np.copyto`` for reference.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

from .measure import Timing, parallel_copy, time_calls

MIXUP_ALPHA, CUTMIX_ALPHA, SWITCH_PROB = 0.8, 1.0, 0.5  # timm's ImageNet recipe; FFCV gets the same MixUp α

# key -> (label, input)
IMPLEMENTATIONS = {
    "memcpy": ("copy of the uint8 batch, same threads (memory-speed limit)", "uint8 NHWC"),
    "memcpy_1t": ("np.copyto of the uint8 batch, one thread", "uint8 NHWC"),
    "ffmix": ("ffmix op: draw_mix_params + mix_images, MixUp+CutMix", "uint8 NHWC"),
    "ffmix_mixup": ("ffmix op, MixUp only", "uint8 NHWC"),
    "ffcv": ("FFCV ImageMixup (same_lambda=True)", "uint8 NHWC"),
    "numpy_loop": ("NumPy per-sample loop (tutorial)", "float32 NCHW"),
    "torch": ("PyTorch vectorised MixUp (tutorial)", "float32 NCHW"),
    "tv_mixup": ("torchvision.transforms.v2.MixUp", "float32 NCHW"),
    "tv_cutmix": ("torchvision.transforms.v2.CutMix", "float32 NCHW"),
    "memcpy_float": ("copy of the float32 batch, same threads (float paths' limit)", "float32 NCHW"),
}
# the slow per-sample loop only needs a few calls to give a stable median
SLOW = {"numpy_loop"}


def shapes(quick: bool) -> List[Tuple[int, int, int, int]]:
    """Batch shapes (N, H, W, C): the ImageNet case and the CIFAR case."""
    if quick:
        return [(64, 64, 64, 3), (256, 32, 32, 3)]
    return [(256, 224, 224, 3), (512, 32, 32, 3)]


def check_mixed(inputs: np.ndarray, outputs: np.ndarray, targets=None) -> Dict[str, object]:
    """A mixed batch keeps the input's shape, stays inside the input's value range, changes some samples,
    and (where the path makes targets) has target rows summing to one."""
    problems = []
    outputs = np.asarray(outputs)
    if outputs.shape != inputs.shape:
        problems.append(f"output shape {outputs.shape} != input shape {inputs.shape}")
    else:
        if outputs.min() < inputs.min() - 1e-4 or outputs.max() > inputs.max() + 1e-4:
            problems.append("output values leave the input's range")
        changed = np.any(outputs.reshape(len(outputs), -1) != inputs.reshape(len(inputs), -1), axis=1)
        if not changed.any():
            problems.append("no sample was changed")
    if targets is not None:
        sums = np.asarray(targets, np.float64).sum(axis=1)
        if np.abs(sums - 1).max() > 1e-4:
            problems.append("target rows do not sum to one")
    return {"ok": not problems, "problems": problems}


def run_ops(*, quick: bool, threads: int, runs: int, min_run_s: float, progress) -> List[Dict[str, object]]:
    """All mixing-alone rows, for each batch shape."""
    import numba
    import torch

    from ..ops.kernels import mix_images
    from ..ops.mixing import Mixing
    from ..ops.params import draw_mix_params
    from ..ops.rng import batch_key
    from .alternatives import ffcv_image_mixup, numpy_mixup_per_sample, torch_mixup

    from torchvision.transforms import v2

    rows: List[Dict[str, object]] = []
    ffcv_mixer = None
    for role, (count, height, width, channels) in zip(("imagenet", "cifar"), shapes(quick)):
        shape_name = f"{count}x{height}x{width}x{channels}"
        rng = np.random.default_rng(0)
        # photo-like content does not matter to these kernels; random bytes keep every pixel different
        images = rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)
        labels = rng.integers(0, 10, count)
        out = np.empty_like(images)
        indices = np.arange(count, dtype=np.uint64)
        float_images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
        float_labels = torch.from_numpy(labels)
        float_out = np.empty(tuple(float_images.shape), np.float32)
        tv_mixup = v2.MixUp(alpha=MIXUP_ALPHA, num_classes=10)
        tv_cutmix = v2.CutMix(alpha=CUTMIX_ALPHA, num_classes=10)
        numba.set_num_threads(threads)
        torch.set_num_threads(threads)

        settings = {(mixup, cutmix): Mixing(mixup_alpha=mixup, cutmix_alpha=cutmix, switch_prob=SWITCH_PROB)
                    .settings_record((height, width))[0]
                    for mixup, cutmix in ((MIXUP_ALPHA, CUTMIX_ALPHA), (MIXUP_ALPHA, 0.0))}

        def ffmix_call(k, mixup=MIXUP_ALPHA, cutmix=CUTMIX_ALPHA):
            key = np.uint64(batch_key(0, k, indices))
            partner, weight, box, _ = draw_mix_params(key, count, settings[mixup, cutmix])
            mix_images(images, out, partner, weight, box)
            return out

        def ffcv_call(k):
            ffcv_mixer(images, out, indices + np.uint64(k))
            return out

        copy_in_slices = parallel_copy(threads)
        flat_images, flat_out = images.reshape(-1), out.reshape(-1)
        float_bytes = float_images.numpy().reshape(-1).view(np.uint8)
        float_out_bytes = float_out.reshape(-1).view(np.uint8)
        calls: Dict[str, Callable[[int], object]] = {
            "memcpy": lambda k: copy_in_slices(flat_images, flat_out),
            "memcpy_1t": lambda k: np.copyto(out, images),
            "ffmix": ffmix_call,
            "ffmix_mixup": lambda k: ffmix_call(k, MIXUP_ALPHA, 0.0),
            "ffcv": ffcv_call,
            "numpy_loop": lambda k: numpy_mixup_per_sample(float_images.numpy(), labels, 10, MIXUP_ALPHA, rng),
            "torch": lambda k: torch_mixup(float_images, float_labels, 10, MIXUP_ALPHA),
            "tv_mixup": lambda k: tv_mixup(float_images, float_labels),
            "tv_cutmix": lambda k: tv_cutmix(float_images, float_labels),
            "memcpy_float": lambda k: copy_in_slices(float_bytes, float_out_bytes),
        }
        ffcv_mixer = ffcv_image_mixup(MIXUP_ALPHA, threads) if ffcv_mixer is None else ffcv_mixer

        def on_start(key):
            progress.set_postfix_str(f"ops {shape_name} {key}")
            progress.update(1)

        numba.set_num_threads(threads)   # FFCV's Compiler set them too; every path gets the same
        torch.set_num_threads(threads)
        timings: Dict[str, Timing] = time_calls(calls, items=count, min_run_s=min_run_s, on_start=on_start,
                                                runs={key: min(runs, 3) if key in SLOW else runs for key in calls})
        checks = _checks(images, labels, float_images, float_labels, calls)
        copy_ms = timings["memcpy"].ms_per_batch
        ffmix_rate = timings["ffmix"].items_per_s
        for key, timing in timings.items():
            label, kind = IMPLEMENTATIONS[key]
            rows.append({"section": "ops", "shape": shape_name, "shape_role": role, "impl": key, "label": label,
                         "input": kind,
                         "threads": 1 if key in ("memcpy_1t", "numpy_loop") else threads,
                         **timing.as_dict(), "vs_ffmix": timing.items_per_s / ffmix_rate,
                         "x_memcpy": timing.ms_per_batch / copy_ms,
                         "check": checks.get(key, {"ok": True, "problems": []})})
    return rows


def _checks(images, labels, float_images, float_labels, calls) -> Dict[str, Dict[str, object]]:
    """Run each mixing path once more, untimed, and check what it produced."""
    import torch

    from ..ops.reference import mix_images_reference

    checks = {}
    count, height, width, _ = images.shape
    for key in ("ffmix", "ffmix_mixup", "ffcv"):
        result = np.array(calls[key](10_000))
        checks[key] = check_mixed(images, result)
    # ffmix is also checked value for value against its NumPy oracle
    from ..ops.mixing import Mixing
    from ..ops.params import draw_mix_params
    from ..ops.rng import batch_key
    key = np.uint64(batch_key(0, 10_000, np.arange(count, dtype=np.uint64)))
    settings = Mixing(mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA, switch_prob=SWITCH_PROB)
    partner, weight, box, _ = draw_mix_params(key, count, settings.settings_record((height, width))[0])
    expected = mix_images_reference(images, partner, weight, box)
    if not np.array_equal(np.array(calls["ffmix"](10_000)), expected):
        checks["ffmix"] = {"ok": False, "problems": ["differs from ops.reference.mix_images_reference"]}
    reference = float_images.numpy()
    for key in ("numpy_loop", "torch", "tv_mixup", "tv_cutmix"):
        mixed, targets = calls[key](0)
        mixed = mixed.numpy() if isinstance(mixed, torch.Tensor) else mixed
        targets = targets.numpy() if isinstance(targets, torch.Tensor) else targets
        checks[key] = check_mixed(reference, mixed, targets)
    return checks


def progress_steps(quick: bool) -> int:
    return len(shapes(quick)) * len(IMPLEMENTATIONS)
