"""MixUp/CutMix for people who stay on PyTorch's ``DataLoader``: a ``collate_fn`` with ffmix's kernels.

    collate = ffmix.MixCollate(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
    loader = DataLoader(ffmix.WithIndex(dataset), batch_size=256, shuffle=True, num_workers=4,
                        collate_fn=collate)
    for epoch in range(epochs):
        collate.set_epoch(epoch)          # like DistributedSampler.set_epoch
        for images, soft_targets in loader: ...     # uint8 (N, C, H, W), float32 (N, num_classes)

A batch goes through the same steps as in the FFCV operations: ``rng.batch_key(seed, epoch, sample indices)``
-> ``params.draw_mix_params`` -> one kernel pass that mixes and lays out (N, C, H, W) (``kernels.py``) ->
``soft_targets``/``pair_targets`` from the same parameters. So the labels carry exactly the weights the pixels
got, rows sum to one, nobody is their own partner, any batch size works, and a batch depends only on (seed,
epoch, its sample indices): not on ``num_workers``, nor on which worker made it.

The arguments (names, order, defaults) are those of timm's ``FastCollateMixup`` (``prob`` is ffmix's
``mix_prob``; both are accepted), so switching is a change of class name; ffmix's own options are keywords.

Worker processes: the kernels are module-level ``cache=True`` functions, and ``MixCollate()`` runs them once on
a tiny batch when it is built, so they are compiled (or loaded from Numba's cache) once in the main process;
forked workers inherit the compiled code, spawned ones load it from the cache that filled. In a worker, Numba
runs on one thread unless ``threads`` says otherwise: the DataLoader's parallelism is its workers, and N
workers x all-cores threads each would oversubscribe the machine.

No raw addresses here: the collate is plain Python, so it calls the jitted kernels on arrays, and Numba keeps
them alive for the call (the C entry points of ``ops/batch.py`` exist for FFCV's compiled closures).
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Optional, Sequence, Tuple

import numba
import numpy as np
import torch

from .errors import FfmixError, FfmixWarning
from .ops.kernels import (mix_images_planar, mix_normalize, mix_normalize_planar, mix_planes, pair_targets,
                          soft_targets)
from .ops.mixing import FloatOutput, Mixing, check_targets
from .ops.params import draw_mix_params, unmixed_params
from .ops.rng import batch_key

OUTPUTS = ("uint8", "float")
LAYOUTS = ("auto", "hwc", "chw")
# Settings MixCollate reads from its Mixing (one validation, one set of messages with make_loader's).
_MIXING_ATTRIBUTES = ("mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "mode", "label_smoothing", "seed",
                      "lam_range", "active")
# Marks the made-up "indices" of a batch whose samples came without theirs, so such a key never equals the key
# of a batch with real indices.
_NO_INDEX = np.uint64(1 << 63)


class WithIndex(torch.utils.data.Dataset):
    """A map-style dataset whose items are ``(sample, label, index)``: hands each sample's index to
    ``MixCollate``, which then mixes a batch the same way for any ``num_workers``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return _with_index(self.dataset[index], index)

    def __getitems__(self, indices):
        """A batch's items at once, as the DataLoader asks for them: through the wrapped dataset's own
        ``__getitems__`` when it has one (a dataset that reads a batch faster than its samples one by one keeps
        that speed when wrapped), else sample by sample."""
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(indices) if fetch else [self.dataset[index] for index in indices]
        if len(items) != len(indices):   # zip below would drop the rest without a word
            raise FfmixError(f"{type(self.dataset).__name__}.__getitems__ returned {len(items)} items for "
                             f"{len(indices)} indices; it must return one item per index")
        return [_with_index(item, index) for item, index in zip(items, indices)]


def _with_index(item, index):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise FfmixError(f"WithIndex needs a dataset of (sample, label) pairs; item {index} is a "
                         f"{type(item).__name__}" + (f" of length {len(item)}" if hasattr(item, "__len__") else ""))
    return item[0], item[1], index


class MixCollate:
    """A ``collate_fn`` that stacks uint8 samples and mixes the batch (MixUp/CutMix) with ffmix's kernels.

    Samples: ``(image, label)`` or ``(image, label, index)`` (see ``WithIndex``), the image a uint8 NumPy array
    (H, W, C), (H, W) or (C, H, W), a uint8 tensor (C, H, W), (H, W) or (H, W, C) (see ``layout``), or a PIL
    image in mode L or RGB; all of one batch the same size. Labels: integers in [0, num_classes).

    Returns ``(images, targets)``: images uint8 (N, C, H, W) (``output="uint8"``, as timm's collate), or float32
    (N, C, H, W) ``(pixel / 255 - mean) / std`` (``output="float"``; mean/std None: plain 0..255 floats);
    targets float32 (N, num_classes) mixed smoothed one-hots, or with ``targets="pair"`` float32 (N, 3) rows
    ``(y_a, y_b, λ)``. Both C-contiguous; in a worker process they are made in one shared-memory block
    (two views of it), so handing them to the main process copies nothing (the block lives while either does).

    mixup_alpha, cutmix_alpha: Beta(α, α); 0 turns that one off. cutmix_minmax: not supported (must be None).
    prob (timm's name) or mix_prob: chance that a batch, pair or sample (``mode``) is mixed at all.
    switch_prob: chance of CutMix rather than MixUp when both alphas are on. mode: batch, pair or elem.
    correct_lam: must be True: ffmix always sets λ to the CutMix box's true area. label_smoothing: ε.
    multi_label: must be False (one integer label per sample).
    seed: with the epoch and the sample indices, fixes every random choice. Batches whose samples come without
    indices are keyed by (worker, batch number) instead: repeatable only for the same ``num_workers``.
    lam_range: λ is clipped to it before use (``params.clip_lam``). layout: how to read 3-D samples: "hwc",
    "chw", or "auto": arrays are HWC unless the first axis is 1 or 3 and the last is not, tensors CHW unless
    the last axis is 1 or 3 and the first is not.
    threads: Numba threads for the kernels; None: one in a DataLoader worker, Numba's setting elsewhere.

    Raises ``FfmixError`` (a ValueError) for bad settings here, and for bad samples when called.
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, cutmix_minmax=None,
                 prob: Optional[float] = None, switch_prob: float = 0.5, mode: str = "batch",
                 correct_lam: bool = True, label_smoothing: float = 0.1, num_classes: int = 1000,
                 multi_label: bool = False, *,
                 mix_prob: Optional[float] = None, seed: int = 0, output: str = "uint8",
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 targets: str = "soft", lam_range: Tuple[float, float] = (0.0, 1.0), layout: str = "auto",
                 threads: Optional[int] = None):
        if cutmix_minmax is not None:
            raise FfmixError(f"cutmix_minmax={cutmix_minmax!r} is not supported: ffmix draws the CutMix box from "
                             f"cutmix_alpha; leave cutmix_minmax=None (lam_range=(low, high) bounds λ instead)")
        if not correct_lam:
            raise FfmixError("correct_lam=False is not supported: ffmix always sets λ to the area the CutMix box "
                             "really covers, so labels carry the pixels' weights; leave correct_lam=True")
        if multi_label:
            raise FfmixError("multi_label=True is not supported: MixCollate takes one integer class label per "
                             "sample; leave multi_label=False")
        if not isinstance(lam_range, (tuple, list)):
            raise FfmixError(f"lam_range must be a pair of numbers, got {lam_range!r}")
        # The same settings, checks and messages as make_loader's: one Mixing holds them (its image_size stays
        # None: each batch's own size is where CutMix cuts its boxes).
        self.mixing = Mixing(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                             mix_prob=_chosen_mix_prob(prob, mix_prob), switch_prob=switch_prob, mode=mode,
                             label_smoothing=label_smoothing, seed=seed, lam_range=tuple(lam_range))
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise FfmixError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.output = _one_of("output", output, OUTPUTS)
        check_targets(targets, self.mixing.label_smoothing)
        self.targets = targets
        self.layout = _one_of("layout", layout, LAYOUTS)
        if (mean is not None or std is not None) and self.output != "float":
            raise FfmixError("mean and std normalise the float output: pass output='float' with them, or leave "
                             "them out for uint8 batches")
        self.float_output = FloatOutput(mean=mean, std=std) if self.output == "float" else None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                    or threads < 1):
            raise FfmixError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = None if threads is None else int(threads)
        self._process_state()
        self._warm_up()

    # ------------------------------------------------------------------------------------------ public

    def set_epoch(self, epoch: int) -> None:
        """Make the next batches mix as epoch ``epoch`` does; call before iterating the loader, as with
        ``DistributedSampler.set_epoch``. Workers, persistent or not, read it at their next batch (the
        Mixing's control block lives in shared memory)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise FfmixError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.mixing.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.mixing.control.committed_epoch

    @property
    def mixup_enabled(self) -> bool:
        """timm's switch: False leaves batches unmixed (targets: smoothed one-hots), e.g. for the last epochs."""
        return self.mixing.control.committed_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, on: bool) -> None:
        self.mixing.enabled = on

    enabled = mixup_enabled

    def __getattr__(self, name):
        # The mixing settings (mixup_alpha, cutmix_alpha, mix_prob, ..., seed, active) are the Mixing's.
        mixing = self.__dict__.get("mixing")
        if mixing is not None and name in _MIXING_ATTRIBUTES:
            return getattr(mixing, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, batch, _=None):
        """Collate ``batch`` (a list of samples, see the class docstring) into ``(images, targets)``."""
        self._use_threads()
        images, planar, labels, indices = self._unpack(batch)
        epoch, enabled = self.mixing.control.values.tolist()   # read once: images and labels see the same
        if planar:
            count, channels, height, width = images.shape
        else:
            count, height, width, channels = images.shape
        key = self._key(epoch, indices, count)
        if enabled and self.mixing.active and count == 1 and not self._warned_single:
            self._warned_single = True   # once per collate and process: a DataLoader's last batch repeats each epoch
            warnings.warn(FfmixWarning("MixCollate got a batch of one image, which comes back unmixed (an image's "
                                       "partner is another image of its batch); use drop_last=True or another "
                                       "batch_size"), stacklevel=2)
        if enabled and self.mixing.active:
            partner, weight, box, lam = draw_mix_params(key, count, self.mixing.settings_record((height, width))[0])
        else:
            partner, weight, box, lam = unmixed_params(count)
        out_images, out_targets = self._outputs((count, channels, height, width))
        self._mix(images, planar, out_images.numpy(), partner, weight, box)
        self._make_targets(labels, partner, lam, out_targets.numpy())
        return out_images, out_targets

    def __repr__(self) -> str:
        return (f"MixCollate(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"mix_prob={self.mix_prob}, switch_prob={self.switch_prob}, mode={self.mode!r}, "
                f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}, seed={self.seed}, "
                f"output={self.output!r}, targets={self.targets!r})")

    # ----------------------------------------------------------------------------------------- pickling

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_threads_for", "_calls", "_calls_epoch", "_in_worker", "_warned_single"):   # per process, rebuilt there
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._process_state()

    def _process_state(self) -> None:
        self._threads_for = None      # (pid, thread) whose Numba thread count is set
        self._calls = 0               # batches collated here in ``_calls_epoch``: the key of index-less batches
        self._calls_epoch = -1
        self._in_worker = False
        self._warned_single = False   # about a batch of one image (it cannot mix), in this process

    # --------------------------------------------------------------------------------------- per batch

    def _use_threads(self) -> None:
        """Once per process and thread: note whether this is a DataLoader worker and set Numba's threads."""
        here = (os.getpid(), threading.get_ident())
        if self._threads_for == here:
            return
        self._in_worker = torch.utils.data.get_worker_info() is not None
        threads = self.threads if self.threads is not None else (1 if self._in_worker else None)
        if threads is not None:
            if threads > numba.config.NUMBA_NUM_THREADS:
                raise FfmixError(f"threads={threads} is more than Numba's {numba.config.NUMBA_NUM_THREADS} "
                                 f"(NUMBA_NUM_THREADS); ask for fewer or raise NUMBA_NUM_THREADS")
            numba.set_num_threads(threads)   # per thread: this one runs the collate
        self._threads_for = here

    def _unpack(self, batch):
        """The batch as (uint8 stacked images, planar?, int64 labels, uint64 indices or None)."""
        if not isinstance(batch, (list, tuple)) or len(batch) == 0:
            raise FfmixError(f"MixCollate needs a non-empty list of samples, got {type(batch).__name__}"
                             + (" of length 0" if hasattr(batch, "__len__") else ""))
        first = batch[0]
        if not isinstance(first, (tuple, list)) or len(first) not in (2, 3):
            raise FfmixError("MixCollate needs samples of (image, label) or (image, label, index) (wrap the "
                             f"dataset in ffmix.WithIndex); got a {type(first).__name__}"
                             + (f" of length {len(first)}" if isinstance(first, (tuple, list)) else ""))
        width = len(first)
        if any(len(sample) != width for sample in batch):
            raise FfmixError("MixCollate got samples of different lengths in one batch (some with an index, "
                             "some without); give every sample the same form")
        columns = tuple(zip(*batch))
        images, planar = _stack_images(columns[0], self.layout)
        labels = _labels(columns[1], self.num_classes)
        indices = _indices(columns[2]) if width == 3 else None
        return images, planar, labels, indices

    def _key(self, epoch: int, indices: Optional[np.ndarray], count: int) -> np.uint64:
        if indices is None:
            # No indices: key by (this worker, its batch number this epoch). DataLoader hands worker w the
            # batches w, w + W, ... in order, so this repeats for the same num_workers only.
            if self._calls_epoch != epoch:
                self._calls, self._calls_epoch = 0, epoch
            info = torch.utils.data.get_worker_info()
            worker = 0 if info is None else info.id + 1
            indices = np.array([_NO_INDEX | np.uint64(worker), np.uint64(self._calls), np.uint64(count)],
                               np.uint64)
            self._calls += 1
        return np.uint64(batch_key(self.mixing.seed, epoch, indices))

    def _outputs(self, shape) -> Tuple[torch.Tensor, torch.Tensor]:
        """Uninitialised C-contiguous (images, targets) tensors. In a worker they are two views of one
        shared-memory block: the DataLoader then hands the main process one block per batch, not two, and
        each block costs a file-descriptor handshake with the worker, which bounds the images/s of every
        collate_fn (default_collate makes its batch in shared memory too, but one block per tensor)."""
        image_dtype = torch.float32 if self.output == "float" else torch.uint8
        target_shape = (shape[0], 3 if self.targets == "pair" else self.num_classes)
        if not self._in_worker:
            return torch.empty(shape, dtype=image_dtype), torch.empty(target_shape, dtype=torch.float32)
        target_bytes = math.prod(target_shape) * torch.float32.itemsize   # first: float32 wants 4-byte alignment
        storage = torch.UntypedStorage._new_shared(target_bytes + math.prod(shape) * image_dtype.itemsize)
        targets = torch.empty(0, dtype=torch.float32).set_(storage, 0, target_shape)
        images = torch.empty(0, dtype=image_dtype).set_(storage, target_bytes // image_dtype.itemsize, shape)
        return images, targets

    def _mix(self, images, planar, out, partner, weight, box) -> None:
        if self.float_output is not None:
            scale, shift = (np.asarray(values[:out.shape[1]], np.float32)
                            for values in self.float_output.with_channels(out.shape[1]).scale_and_shift())
            if planar:
                mix_normalize_planar(images, out, partner, weight, box, scale, shift)
            else:
                mix_normalize(images, out, partner, weight, box, scale, shift, False)
        elif planar:
            mix_planes(images, out, partner, weight, box)
        else:
            mix_images_planar(images, out, partner, weight, box)

    def _make_targets(self, labels, partner, lam, out) -> None:
        if self.targets == "pair":
            pair_targets(labels, partner, lam, out)
        else:
            soft_targets(labels, partner, lam, self.num_classes, self.mixing.label_smoothing, out)

    def _warm_up(self) -> None:
        """Run every kernel this collate may use on a tiny batch, in this process: see the module docstring."""
        samples = ((np.zeros((2, 2, 3), np.uint8), 3), (torch.zeros((3, 2, 2), dtype=torch.uint8), 3),
                   (np.zeros((2, 2), np.uint8), 1))
        for sample, channels in samples:
            if self.float_output is not None and self.float_output.mean is not None \
                    and len(self.float_output.mean) != channels:
                continue   # mean/std fix the channel count
            self([(sample, 0, 0), (sample, 0, 1)])
        self._threads_for = None   # the first real call sets the threads of its own process and thread


# ----------------------------------------------------------------------------------------------- samples

def _stack_images(images: Sequence, layout: str) -> Tuple[np.ndarray, bool]:
    """The images as one C-contiguous uint8 array and whether it is planar: (N, C, H, W) (True) or
    (N, H, W, C) (False). Gray images are (N, 1, H, W): the same bytes as (N, H, W, 1), and the planar
    kernels are the faster ones."""
    first = images[0]
    if isinstance(first, torch.Tensor):
        stacked = _stack_tensors([_tensor_pixels(image, k) for k, image in enumerate(images)]).numpy()
        planar = stacked.ndim == 3 or not _is_hwc_tensor(stacked.shape[1:], layout)
    elif isinstance(first, np.ndarray):
        stacked = _stack_arrays(images)
        planar = stacked.ndim == 3 or _is_chw(stacked.shape[1:], layout)
    else:   # PIL images: always (H, W[, C])
        stacked = _stack_arrays([_pil_pixels(image, k) for k, image in enumerate(images)])
        planar = stacked.ndim == 3
    if stacked.ndim == 3:
        return stacked[:, None], True
    if not planar and stacked.shape[3] == 1:
        return stacked.reshape(stacked.shape[0], 1, stacked.shape[1], stacked.shape[2]), True
    return stacked, planar


def _stack_arrays(arrays) -> np.ndarray:
    """``np.stack`` of uint8 arrays of one shape, as one ``np.concatenate``: np.stack first makes a view of
    every array with a new axis, which costs more than copying a small image."""
    shape = getattr(arrays[0], "shape", ())
    if len(shape) not in (2, 3):
        raise FfmixError(f"MixCollate needs images of 2 or 3 dimensions, got shape {shape}")
    for position, array in enumerate(arrays):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise FfmixError(_not_uint8(array, position))
        if array.shape != shape:
            raise _size_error(arrays)
    return np.concatenate(arrays).reshape(len(arrays), *shape)


def _is_chw(shape, layout: str) -> bool:
    """A 3-D NumPy image: HWC (PIL's and OpenCV's order) unless it clearly is CHW (timm's ToNumpy)."""
    if layout != "auto":
        return layout == "chw"
    _refuse_ambiguous(shape)
    return shape[0] in (1, 3) and shape[2] not in (1, 3)


def _is_hwc_tensor(shape, layout: str) -> bool:
    """A 3-D tensor: CHW (torchvision's order) unless it clearly is HWC (``torch.from_numpy`` of an HWC array)."""
    if layout != "auto":
        return layout == "hwc"
    _refuse_ambiguous(shape)
    return shape[2] in (1, 3) and shape[0] not in (1, 3)


def _refuse_ambiguous(shape) -> None:
    """layout="auto" reads a 3-D image by which end axis holds 1 or 3 channels; when both or neither do (a
    (4, 8, 8) CHW image would otherwise become an 8-channel 4x8 one), only the caller knows."""
    if (shape[0] in (1, 3)) == (shape[2] in (1, 3)):
        raise FfmixError(f"MixCollate cannot tell whether images of shape {tuple(shape)} are (C, H, W) or "
                         "(H, W, C); pass layout='chw' or layout='hwc'")


def _stack_tensors(tensors) -> torch.Tensor:
    try:
        return torch.stack(tensors)
    except RuntimeError:
        raise _size_error(tensors) from None


def _size_error(images) -> FfmixError:
    shapes = sorted({tuple(image.shape) for image in images})
    return FfmixError(f"MixCollate needs the images of a batch to be one size, got shapes {shapes[:4]}"
                      + (" ..." if len(shapes) > 4 else "") + "; resize or crop them in the dataset's transform")


def _tensor_pixels(image, position: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
        raise FfmixError(_not_uint8(image, position))
    if image.device.type != "cpu":
        raise FfmixError(f"sample {position} is on {image.device}; MixCollate collates CPU tensors (mix on the "
                         "CPU in the DataLoader, then move the batch)")
    if image.ndim not in (2, 3):
        raise FfmixError(f"sample {position} has shape {tuple(image.shape)}; tensors must be (C, H, W) or (H, W)")
    return image


def _pil_pixels(image, position: int) -> np.ndarray:
    mode = getattr(image, "mode", None)
    if mode is None or not hasattr(image, "getbands"):
        raise FfmixError(f"sample {position} is a {type(image).__name__}; MixCollate takes uint8 NumPy arrays, "
                         "uint8 tensors or PIL images")
    if mode not in ("L", "RGB"):
        raise FfmixError(f"sample {position} is a PIL image in mode {mode!r}; convert it with "
                         "image.convert('RGB') (or 'L' for gray) in the dataset's transform")
    return np.asarray(image)


def _not_uint8(image, position: int) -> str:
    kind = getattr(image, "dtype", type(image).__name__)
    return (f"sample {position} is {kind}; MixCollate mixes uint8 pixels: drop ToTensor()/Normalize from the "
            "dataset's transform (PILToTensor() or np.asarray keep uint8) and use output='float', mean=..., "
            "std=... to get normalised floats")


def _labels(labels: Sequence, num_classes: int) -> np.ndarray:
    try:
        values = np.asarray(labels)
    except (TypeError, ValueError):
        values = np.asarray([int(label) for label in labels])
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise FfmixError(f"MixCollate needs one integer class label per sample, got {values.dtype} labels of "
                         f"shape {values.shape}")
    values = values.astype(np.int64, copy=False)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise FfmixError(f"label {bad} is outside [0, {num_classes}); set num_classes to the number of classes")
    return np.ascontiguousarray(values)


def _indices(indices: Sequence) -> np.ndarray:
    values = np.asarray(indices)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (values < 0).any():
        raise FfmixError("the third item of each sample must be its non-negative integer index (as "
                         f"ffmix.WithIndex gives), got {values.dtype} values like {values.reshape(-1)[:3]}")
    return values.astype(np.uint64)


# ---------------------------------------------------------------------------------------------- settings

def _chosen_mix_prob(prob, mix_prob) -> float:
    if prob is not None and mix_prob is not None and float(prob) != float(mix_prob):
        raise FfmixError(f"prob={prob!r} and mix_prob={mix_prob!r} are the same setting (timm's name and ffmix's); "
                         "give one of them")
    chosen = mix_prob if mix_prob is not None else prob
    return 1.0 if chosen is None else chosen   # checked by Mixing


def _one_of(name: str, value, choices) -> str:
    if value not in choices:
        raise FfmixError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


