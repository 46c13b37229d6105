"""``make_loader``: the one place ffmix assembles FFCV pipelines.

The data path, in order: decode (memcpy for raw images, JPEG decode plus crop otherwise) -> mix in the
Numba op while still uint8 (a quarter of the bytes of float32) -> hand uint8 to the device (pinned, non
blocking) -> only there convert to ``dtype``, normalise and lay out (N, C, H, W).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import SimpleRGBImageDecoder
from ffcv.loader import OrderOption
from ffcv.pipeline import PipelineSpec
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

from .epochs import ResilientLoader
from .errors import FfmixError, FfmixWarning
from .ffcv_compat import RAW_MODE, field_table, open_reader
from .integrity import open_whole_beton
from .normalization import default_mean_std
from .metadata import IMAGE_FIELD, LABEL_FIELD, DatasetMeta, read_meta
from .sources.base import MAX_CLASSES
from .system import available_cpus, check_memory, loader_buffer_bytes, resolve_device
from .ops.decoders import (CENTER_CROP_RATIO, CenterCropDecoder, MixingRawDecoder, RandomFlip,
                           RandomResizedCropDecoder)
from .ops.auto_augment_config import parse_auto_augment
from .ops.decode_errors import DecodeFailure, StandInTargets, describe, policy_code
from .ops.erasing import RandomErasing
from .ops.erasing_device import erase_on_device
from .ops.erasing_draws import EraseDraws
from .ops.mixing import TARGET_KINDS, FloatOutput, Mixing, check_targets

ORDERS = {"random": OrderOption.RANDOM, "sequential": OrderOption.SEQUENTIAL,
          "quasi_random": OrderOption.QUASI_RANDOM}
CROPS = ("auto", "random", "center")
STAND_IN_OUTPUT = "stand_ins"   # the Loader output naming each batch's stand-ins (on_decode_error="skip")
ERASE_DRAWS_OUTPUT = "erase_draws"   # the Loader output carrying each batch's erasing draws (erasing on the device)


class MixLoader:
    """Iterates ``(images, targets)`` batches of one ``.beton``; built by ``make_loader``.

    images: (N, C, H, W) ``dtype`` on ``device``. targets: float32 (N, num_classes) soft targets, or
    ``(y_a, y_b, lam)`` for targets="pair", or int64 (N,) labels for targets="label".

    Each ``iter()`` is one epoch. ``set_epoch`` (seek, e.g. when resuming) and ``mixing_enabled`` (switch
    MixUp/CutMix off and on without recompiling) take effect at the next ``iter()``, never inside a running
    epoch, so every batch's pixels and targets agree.

    Batch lifetime: a yielded batch lives in one of the loader's reused buffers and stays valid until the
    next batch is requested (the next ``next()``, or a new ``iter()``); ``.clone()`` what you keep longer.
    On a GPU a buffer is reused only after the work queued on it has finished. Leaving an epoch early
    (``break``, an exception) stops its thread as soon as the iterator is dropped, at the next ``iter()`` or
    at ``close()``, whichever comes first; ``with make_loader(...) as loader:`` closes at the end.

    Decode errors: a sample that cannot be decoded fails its batch with an ``FfmixError`` naming it and the
    file; with ``on_decode_error="skip"`` it is replaced by another sample of the batch (pixels and label),
    and ``decode_stand_ins`` counts the replacements of the last epoch (also a warning at its end).
    """

    def __init__(self, ffcv_loader: ResilientLoader, mixing: Mixing, meta: DatasetMeta, *, targets: str,
                 finish_images: Callable[..., torch.Tensor], device: torch.device, path=None,
                 decoder=None, stand_ins: Optional[StandInTargets] = None, extra_outputs: Sequence[str] = ()):
        self.ffcv_loader = ffcv_loader
        self.mixing = mixing
        self.meta = meta
        self.targets = targets
        self.device = device
        self.path = path
        self._finish_images = finish_images
        # ffmix's decoder (None for raw images used as stored: nothing to decode): its report counts stand-ins
        self._decode_report = getattr(decoder, "decode_report", None)
        self.decode_stand_ins = 0
        self._decoder = decoder
        self._stand_ins = stand_ins
        self._extra_outputs = tuple(extra_outputs)   # the names of the Loader's outputs after images and labels
        self._pending_size: Optional[Tuple[int, int]] = None
        mixing.manage(self)

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    @property
    def batch_size(self) -> int:
        return self.ffcv_loader.batch_size

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will produce."""
        return self.ffcv_loader.upcoming_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch`` (order, crops and mixing), e.g. when resuming."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise FfmixError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.ffcv_loader.upcoming_epoch = int(epoch)

    @property
    def image_size(self) -> Optional[Tuple[int, int]]:
        """(height, width) of the images the next ``iter()`` produces."""
        return self._pending_size or self.mixing.image_size

    def set_image_size(self, size: Union[int, Tuple[int, int]]) -> None:
        """Make the next ``iter()`` produce images of ``size`` (an int or (height, width)), e.g. for a
        progressive-resolution schedule. Like ``set_epoch`` it takes effect at the next ``iter()``, never in a
        running epoch: the pipeline is rebuilt for the new size (new batch buffers, CutMix boxes cut in the
        new size), so no batch of the old size is handed out after it. Crops stay a function of (seed, epoch,
        sample): only their output size changes. Needs a loader that crops (made with ``image_size=``).
        """
        new_size = _checked_size(size)
        if new_size == self.image_size:
            self._pending_size = None
            return
        if not hasattr(self._decoder, "output_size") or getattr(self._decoder, "ratio", None) == 1.0:
            raise FfmixError(f"set_image_size({size!r}) needs a loader that crops its images, and this one uses "
                             f"them as stored ({self.image_size[0]}x{self.image_size[1]}): make it with an "
                             "image_size= other than the stored size")
        self._pending_size = new_size

    def _apply_image_size(self) -> None:
        """Between epochs (no pipeline thread running): hand a pending size to the decoder and the mixing,
        and have the next epoch rebuild the pipeline and its buffers."""
        size, self._pending_size = self._pending_size, None
        if size is None or size == tuple(self._decoder.output_size):
            return
        self._decoder.output_size = size
        self.mixing.change_image_size(size)
        self.ffcv_loader.rebuild()

    @property
    def mixing_enabled(self) -> bool:
        """Whether the next ``iter()`` mixes: switched on (as last set) and configured to (an alpha > 0 and
        mix_prob > 0), so a loader with both alphas 0 says False, as its batches are."""
        return self.mixing.enabled and self.mixing.active

    @mixing_enabled.setter
    def mixing_enabled(self, on: bool) -> None:
        self.mixing.enabled = on

    def __len__(self) -> int:
        return len(self.ffcv_loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, object]]:
        # The one moment per epoch at which Python's settings reach the compiled code: after the previous
        # epoch's thread has stopped, before the new one starts.
        epoch = self.ffcv_loader.start_epoch(before_start=self._before_epoch)
        return self._batches(epoch, self.ffcv_loader.upcoming_epoch - 1)

    def _before_epoch(self, epoch: int) -> None:
        self._apply_image_size()
        self.mixing.control.commit(epoch)
        if self._decode_report is not None:
            self._decode_report.reset()

    def _batches(self, epoch, number: int) -> Iterator[Tuple[torch.Tensor, object]]:
        try:
            for images, labels, *extras in epoch:
                extra = dict(zip(self._extra_outputs, extras))
                if STAND_IN_OUTPUT in extra:
                    labels = self._stand_ins.apply(labels, extra[STAND_IN_OUTPUT])
                yield (self._finish_images(images, extra.get(ERASE_DRAWS_OUTPUT)),
                       self._finish_targets(labels))
        except RuntimeError as exc:   # the pipeline thread's failure, handed over by the epoch thread
            if isinstance(exc.__cause__, DecodeFailure):
                raise FfmixError(describe(exc.__cause__, self.path)) from exc.__cause__
            raise
        finally:  # exhausted, broken out of, or dropped: the thread stops
            self.ffcv_loader.stop_epoch(epoch)
        self._report_stand_ins(number)

    def _report_stand_ins(self, number: int) -> None:
        """At the end of an epoch: how many samples were replaced by stand-ins (policy "skip")."""
        report = self._decode_report
        self.decode_stand_ins = report.stand_ins if report is not None else 0
        if self.decode_stand_ins:
            more = " ..." if self.decode_stand_ins > len(report.recent_samples) else ""
            warnings.warn(f"epoch {number}: {self.decode_stand_ins} sample(s) of {self.path} could not be decoded "
                          f"and were replaced by another sample of their batch (samples "
                          f"{report.recent_samples}{more}); run `ffmix inspect --verify {self.path}`",
                          FfmixWarning, stacklevel=2)

    def close(self) -> None:
        """Stop the running epoch's thread, if any (idempotent; the loader can still be iterated again)."""
        self.ffcv_loader.stop_epoch()

    def __enter__(self) -> "MixLoader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _finish_targets(self, labels: torch.Tensor):
        if self.targets == "label":
            return labels.view(-1)
        if self.targets == "pair":
            return labels[:, 0].long(), labels[:, 1].long(), labels[:, 2]
        return labels


def make_loader(path: Union[str, os.PathLike], *, batch_size: int, mixup_alpha: float = 0.0,
                cutmix_alpha: float = 0.0, mix_prob: float = 1.0, switch_prob: float = 0.5,
                mode: str = "batch", label_smoothing: float = 0.0, lam_range: Tuple[float, float] = (0.0, 1.0),
                targets: str = "soft",
                image_size: Optional[Union[int, Tuple[int, int]]] = None, crop: str = "auto", hflip: bool = False,
                auto_augment: Optional[str] = None, re_prob: float = 0.0, re_mode: str = "const",
                re_count: int = 1,
                device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
                normalize: bool = True, mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None, channels_last: bool = False, order: str = "random",
                seed: int = 0, distributed: bool = False, num_workers: Optional[int] = None,
                drop_last: bool = True, batches_ahead: int = 3, os_cache: bool = True,
                indices: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
                on_decode_error: str = "raise", exact_decode: bool = False) -> MixLoader:
    """An FFCV loader of ``path`` that yields ``(images, targets)`` with MixUp/CutMix done in Numba on uint8.

    Mixing: ``mixup_alpha``/``cutmix_alpha`` (Beta parameters, 0 = off), ``mix_prob``, ``switch_prob``,
    ``mode`` ("batch" | "pair" | "elem"), ``label_smoothing`` and ``lam_range``, as in ``ffmix.Mixing``. With no alpha set
    this is a plain evaluation loader (one-hot targets, or int64 labels with targets="label").

    targets: "soft" -> float32 (N, num_classes); "pair" -> ``(y_a, y_b, lam)`` for index-based
    cross-entropy; "label" -> int64 (N,), only without mixing.
    image_size / crop: fixed-size datasets are used as stored unless ``image_size`` differs; datasets of
    varying size need ``image_size`` and are cropped randomly (random-resized-crop, torchvision's ranges) or
    centrally (crop="center"); crop="auto" picks random for shuffled (training) orders, center for
    sequential (evaluation) ones. The crops depend only on (seed, epoch, sample), like the mixing.
    hflip: flip each image left-right with chance 1/2 before mixing, seeded the same way.
    auto_augment: timm's config string ("rand-m9-mstd0.5-inc1") or "trivial": torchvision's RandAugment /
    TrivialAugmentWide on the uint8 images after the crop and flip, before mixing, seeded the same way
    (``ffmix.ops.auto_augment_config`` says how each option is read; docs/auto_augment.md).
    re_prob, re_mode ("const" | "rand" | "pixel"), re_count: timm's RandomErasing of the normalised images after
    mixing (targets untouched), seeded the same way; any float output: fused into the normalising pass on the
    CPU, a batched op after normalisation on a GPU (docs/random_erasing.md); not for uint8 output.
    device, dtype, normalize, mean, std, channels_last: how images arrive. With ``normalize=False,
    dtype=torch.uint8`` they are the raw mixed pixels, in channels-last memory as decoded (``.contiguous()``
    copies them to NCHW order). Float images on the CPU are mixed, converted and normalised in one Numba
    pass (no rounding: each pixel carries exactly its label's weight). Grayscale files give one channel.
    order: "random" | "sequential" | "quasi_random"; seed fixes order and mixing; distributed uses
    torch.distributed's rank and world size (initialise the process group first).
    num_workers: CPU threads for decoding and mixing (default: all cores available to this process).
    on_decode_error: "raise" (a JPEG that cannot be decoded fails its batch with an FfmixError naming the
    sample and the file) or "skip" (it is replaced by the nearest earlier sample of its batch, pixels and
    label, and counted: ``MixLoader.decode_stand_ins`` and a warning at the end of the epoch).
    exact_decode: decode each cropped JPEG whole, as FFCV does (FFCV's pixels, about twice as slow); by
    default only the crop box's region is decoded, at the smallest DCT scale covering the output
    (docs/decoding.md).

    Raises ValueError for out-of-range options and bad or corrupt files, FileNotFoundError for a missing file
    or metadata, all before any work starts.
    """
    device = resolve_device(device, option="device")
    policy_code(on_decode_error)
    reader = open_whole_beton(path)  # a damaged file is reported as damaged before its sidecar is compared
    meta = _read_dataset(path, num_classes)
    mixing = Mixing(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob,
                    switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing, seed=seed,
                    lam_range=lam_range, image_size=_output_size(meta, image_size))
    _check_options(batch_size=batch_size, targets=targets, mixing=mixing, crop=crop, order=order,
                   distributed=distributed, num_workers=num_workers, batches_ahead=batches_ahead, dtype=dtype)
    height, width = mixing.image_size
    output_itemsize = torch.empty((), dtype=dtype).element_size() if device.type == "cpu" else 0
    check_memory(loader_buffer_bytes(batch_size, (height, width), batches_ahead, output_itemsize),
                 f"batches of {batch_size} images of {height}x{width} ({batches_ahead} ahead)",
                 "lower image_size=, batch_size= or batches_ahead=")
    _check_fields(path, reader, meta)
    _check_labels(reader, meta)
    available = meta.num_samples if indices is None else len(indices)
    if batch_size > available and drop_last:
        raise FfmixError(f"batch_size={batch_size} is larger than the {available} samples to read from {path}, "
                         "so drop_last=True would give no batch; lower batch_size or pass drop_last=False")
    if mixing.active and not drop_last and not distributed and batch_size > 1 and available % batch_size == 1:
        warnings.warn(FfmixWarning(f"the last batch of each epoch holds one image ({available} samples, "
                                   f"batch_size={batch_size}) and comes back unmixed: an image's partner is another "
                                   "image of its batch; pass drop_last=True or another batch_size"), stacklevel=2)

    all_raw = _all_raw(reader)   # every image stored raw: decoded by a copy (and mixed in it, when allowed)
    decoder = _image_decoder(meta, mixing.image_size, crop, shuffled=(order != "sequential"), mixing=mixing,
                             jpeg=not all_raw, on_decode_error=on_decode_error, exact_decode=exact_decode)
    augment = None if auto_augment is None else parse_auto_augment(
        auto_augment, control=mixing.control, seed=mixing.seed, grayscale=meta.channels == 1)
    mean, std = _normalisation(meta, normalize, mean, std, dtype)
    erasing = _erasing(re_prob, re_mode, re_count, mixing, dtype, channels_last)
    label_pipeline = [IntDecoder()]
    if targets != "label":
        label_pipeline.append(mixing.label_op(meta.num_classes, targets))
    label_pipeline.append(ToTensor())
    if device.type == "cuda":
        label_pipeline.append(ToDevice(device, non_blocking=True))
    image_pipeline, finish_images = _image_path(decoder, mixing, meta.channels, device, dtype, mean, std,
                                                channels_last, hflip, raw=all_raw, augment=augment,
                                                erasing=erasing)

    pipelines = {IMAGE_FIELD: image_pipeline, LABEL_FIELD: label_pipeline}
    if erasing is not None and not fused_on_cpu(device, dtype):
        pipelines[ERASE_DRAWS_OUTPUT] = _erase_draws_pipeline(image_pipeline, erasing, meta.channels, device)
    stand_ins = None
    if on_decode_error == "skip" and hasattr(decoder, "stand_in_pipeline"):
        # a third output: each batch's stand-ins, so the consumer gives them their donors' labels
        pipelines[STAND_IN_OUTPUT] = decoder.stand_in_pipeline()
        label_op = label_pipeline[1] if targets != "label" else None
        stand_ins = StandInTargets(field_table(reader, LABEL_FIELD), label_op)
    ffcv_loader = ResilientLoader(os.fspath(path), batch_size=batch_size, num_workers=_workers(num_workers),
                                  order=ORDERS[order], distributed=distributed, seed=seed,
                                  indices=None if indices is None else np.asarray(indices, np.uint64),
                                  drop_last=drop_last, batches_ahead=batches_ahead, os_cache=os_cache,
                                  pipelines=pipelines)
    return MixLoader(ffcv_loader, mixing, meta, targets=targets, finish_images=finish_images, device=device,
                     path=os.fspath(path), decoder=decoder, stand_ins=stand_ins,
                     extra_outputs=[name for name in pipelines if name not in (IMAGE_FIELD, LABEL_FIELD)])


def _output_size(meta: DatasetMeta, image_size) -> Optional[Tuple[int, int]]:
    """(height, width) of the decoded images: ``image_size`` when given (crops produce it), else the file's."""
    if image_size is None:
        if meta.image_shape is None:
            raise FfmixError(f"images in this file vary in size (from {meta.min_size} to {meta.max_size}); "
                             "pass image_size= to crop them to one size")
        return int(meta.image_shape[0]), int(meta.image_shape[1])
    return _checked_size(image_size)


def _checked_size(image_size) -> Tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
        raise FfmixError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


def _normalisation(meta: DatasetMeta, normalize: bool, mean, std, dtype):
    """The (mean, std) to apply, or (None, None) for raw pixel values."""
    if not normalize:
        return None, None
    if not dtype.is_floating_point:
        raise FfmixError(f"normalize=True needs a floating dtype, got {dtype}; pass normalize=False")
    if mean is None or std is None:
        mean, std = default_mean_std(meta.channels)
    if len(mean) != meta.channels or len(std) != meta.channels or min(std) <= 0:
        raise FfmixError(f"mean and std need {meta.channels} values (std > 0), got mean={mean}, std={std}")
    return tuple(mean), tuple(std)


def _image_path(decoder, mixing: Mixing, channels: int, device: torch.device, dtype: torch.dtype, mean, std,
                channels_last: bool, hflip: bool = False, raw: bool = False, augment=None, erasing=None):
    """The FFCV image pipeline and the torch step that completes each batch.

    The decoder is followed by the seeded flip (``hflip``) and auto-augmentation (``augment``, an FFCV op), then:
    - float on the CPU: the image op mixes, converts, normalises and lays out in one Numba pass (torch's
      permute + convert + normalise takes several passes: about 10x slower at 512 x 32 x 32 x 3);
    - uint8: mixed pixels, handed over as decoded (a channels-last (N, C, H, W) view, no copy);
    - in both, images of one size stored ``raw`` (all of them) with nothing between decoder and mix (no flip,
      no auto-augmentation) are mixed by the decoder as it reads them out of the file (``MixingRawDecoder``,
      float or uint8: one pass over memory instead of two, and no uint8 batch in between for floats);
    - float on a GPU: uint8 crosses the bus (4x fewer bytes than float32), then converts there; ``erasing``
      then runs there too, after normalisation, from the batch's draw table (``_erase_draws_pipeline``).
    The returned step takes the images and the draw table (None without erasing on the device).
    """
    pipeline = [decoder]
    if hflip:
        pipeline.append(RandomFlip(control=mixing.control, seed=mixing.seed))
    if augment is not None:
        pipeline.append(augment)
    fuse_with_copy = raw and len(pipeline) == 1 and type(decoder) is SimpleRGBImageDecoder
    if fused_on_cpu(device, dtype):
        float_output = FloatOutput(mean=mean, std=std, channels=channels, channels_last=channels_last)
        if fuse_with_copy:   # mixing on or off: the convert-and-normalise pass is needed either way
            pipeline = [MixingRawDecoder(mixing, float_output)]
        else:
            pipeline.append(mixing.image_op(float_output))
        if erasing is not None:   # after mixing, on the normalised floats, as timm erases
            pipeline.append(erasing)
        pipeline.append(ToTensor())

        def finish(images, draws=None):
            if channels_last:
                images = images.permute(0, 3, 1, 2)
            return images if dtype == torch.float32 else images.to(dtype)
        return pipeline, finish

    if mixing.active and fuse_with_copy:
        pipeline = [MixingRawDecoder(mixing)]
    elif mixing.active:
        pipeline.append(mixing.image_op())
    pipeline.append(ToTensor())
    if device.type == "cuda":
        pipeline.append(ToDevice(device, non_blocking=True))
    pipeline.append(ToTorchImage(channels_last=True))
    if not dtype.is_floating_point:
        return pipeline, (lambda images, draws=None: images[:, :channels])

    scale = shift = None
    if mean is not None:
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        scale, shift = (1.0 / (255.0 * std_t)).to(dtype), (-mean_t / std_t).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    erase_settings = None if erasing is None else erasing.settings

    def finish_on_device(images, draws=None):
        images = images[:, :channels].to(dtype, memory_format=memory_format)
        if scale is not None:
            images = images.mul_(scale).add_(shift)
        if draws is not None:   # after normalisation, as timm's PrefetchLoader erases
            images = erase_on_device(images, draws, erase_settings)
        return images
    return pipeline, finish_on_device


def fused_on_cpu(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the images are mixed, converted, normalised (and erased) in one Numba pass on the CPU; otherwise
    uint8 batches are handed over and finished by torch on ``device`` (``_image_path``). The tests switch this
    off to run the device path on CPU tensors."""
    return dtype.is_floating_point and device.type == "cpu"


def _erase_draws_pipeline(image_pipeline, erasing: RandomErasing, channels: int, device: torch.device):
    """The extra Loader output carrying each batch's erasing draws to the device: it branches off the last
    image operation (its images give the size) and crosses the bus as the images do."""
    last_image_op = next(op for op in reversed(image_pipeline)
                         if not isinstance(op, (ToTensor, ToDevice, ToTorchImage)))
    transforms = [EraseDraws.like(erasing, channels), ToTensor()]
    if device.type == "cuda":
        transforms.append(ToDevice(device, non_blocking=True))
    return PipelineSpec(last_image_op, transforms=transforms)


def _check_options(*, batch_size, targets, mixing, crop, order, distributed, num_workers, batches_ahead, dtype):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FfmixError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 2 and mixing.active:  # the partner of an image is another image of its batch
        # warned, not refused: any batch size works (a batch of one is its own partner), it just cannot mix
        warnings.warn(FfmixWarning("batch_size=1 cannot mix: each image is mixed with another image of its batch, "
                                   "so every batch comes back unmixed; use batch_size >= 2 to mix"), stacklevel=3)
    if targets not in TARGET_KINDS + ("label",):
        raise FfmixError(f"targets must be one of {TARGET_KINDS + ('label',)}, got {targets!r}")
    if targets == "pair":
        check_targets(targets, mixing.label_smoothing)
    if targets == "label" and mixing.active:
        raise FfmixError("targets='label' gives one class per image, which cannot describe a mixed image; "
                         "use targets='soft' or 'pair' with mixing")
    if crop not in CROPS:
        raise FfmixError(f"crop must be one of {CROPS}, got {crop!r}")
    if order not in ORDERS:
        raise FfmixError(f"order must be one of {sorted(ORDERS)}, got {order!r}")
    if distributed and order == "quasi_random":
        raise FfmixError("order='quasi_random' is not available with distributed=True (FFCV does not support it); "
                         "use order='random'")
    if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise FfmixError("distributed=True needs torch.distributed initialised first "
                         "(torch.distributed.init_process_group, e.g. under torchrun)")
    if num_workers is not None and (not isinstance(num_workers, (int, np.integer)) or num_workers < 1):
        raise FfmixError(f"num_workers must be a positive integer or None, got {num_workers!r}")
    if not isinstance(batches_ahead, (int, np.integer)) or batches_ahead < 1:
        raise FfmixError(f"batches_ahead must be a positive integer, got {batches_ahead!r}")
    if not isinstance(dtype, torch.dtype):
        raise FfmixError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")



def _erasing(re_prob, re_mode, re_count, mixing: Mixing, dtype: torch.dtype,
             channels_last: bool) -> Optional[RandomErasing]:
    """The RandomErasing op for ``re_prob`` > 0 (None for 0): placed in the CPU float pass, or the source of the
    draws erased on the device (``_image_path``); refused for uint8 output, which has no normalised space."""
    erasing = RandomErasing(re_prob, mode=re_mode, max_count=re_count, channels_last=channels_last,
                            control=mixing.control, seed=mixing.seed)
    if re_prob == 0:
        return None
    if not dtype.is_floating_point:
        raise FfmixError(f"re_prob={re_prob}: RandomErasing writes normalised values, so it needs float output "
                         f"(a float dtype, normalised on the CPU or the GPU); got dtype={dtype}: pass a float "
                         "dtype, or re_prob=0")
    return erasing


def _workers(num_workers: Optional[int]) -> int:
    return available_cpus() if num_workers is None else int(num_workers)


def _read_dataset(path, num_classes: Optional[int]) -> DatasetMeta:
    """ffmix metadata of ``path``; for a plain FFCV file, ``num_classes`` stands in for it."""
    path = Path(path)
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        if num_classes is None:
            raise
        return _plain_ffcv_meta(path, num_classes)
    if num_classes is not None and num_classes != meta.num_classes:
        raise FfmixError(f"num_classes={num_classes} but {path} has {meta.num_classes} classes")
    return meta


def _plain_ffcv_meta(path: Path, num_classes: int) -> DatasetMeta:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise FfmixError(f"num_classes must be a positive integer, got {num_classes!r}")
    if num_classes > MAX_CLASSES:  # before a list of that many names is built
        raise FfmixError(f"num_classes={num_classes} is more than ffmix handles ({MAX_CLASSES} classes)")
    reader = open_reader(path)
    images = field_table(reader, reader.field_names[0])  # a plain FFCV file: its first field
    heights, widths = images["height"].astype(int), images["width"].astype(int)
    fixed = heights.min() == heights.max() and widths.min() == widths.max()
    return DatasetMeta(num_samples=int(reader.num_samples), num_classes=int(num_classes),
                       class_names=[str(k) for k in range(num_classes)], channels=3,
                       image_shape=(int(heights[0]), int(widths[0])) if fixed else None,
                       min_size=(int(heights.min()), int(widths.min())),
                       max_size=(int(heights.max()), int(widths.max())), label_counts=[], source=str(path))


def _check_fields(path, reader, meta: DatasetMeta) -> None:
    """The fields ffmix needs, and as many samples as the metadata says (wholeness: ``open_whole_beton``)."""
    if reader.field_names[:2] != [IMAGE_FIELD, LABEL_FIELD]:
        raise FfmixError(f"{path} has fields {reader.field_names}; ffmix needs '{IMAGE_FIELD}' then "
                         f"'{LABEL_FIELD}' (as `ffmix convert` writes)")
    if int(reader.num_samples) != meta.num_samples:
        raise FfmixError(f"{path} holds {reader.num_samples} samples but its metadata says {meta.num_samples}; "
                         "the file or its .json sidecar is stale or corrupt: re-run `ffmix convert`")


def _check_labels(reader, meta: DatasetMeta) -> None:
    labels = field_table(reader, LABEL_FIELD)
    if len(labels) and (labels.min() < 0 or labels.max() >= meta.num_classes):
        raise FfmixError(f"labels in the file range over [{labels.min()}, {labels.max()}] but the dataset has "
                         f"{meta.num_classes} classes; pass the right num_classes or re-convert")


def _all_raw(reader) -> bool:
    """Whether every image of the file is stored raw (not JPEG)."""
    return bool((field_table(reader, IMAGE_FIELD)["mode"] == RAW_MODE).all())


def _image_decoder(meta: DatasetMeta, size: Tuple[int, int], crop: str, *, shuffled: bool, mixing: Mixing,
                   jpeg: bool = True, on_decode_error: str = "raise", exact_decode: bool = False):
    """FFCV's plain decoder for raw images used as stored (a copy: nothing to decode), else ffmix's decoders,
    which check every status: JPEGs used as stored (``size``, from ``_output_size``, is the file's) are decoded
    straight into the batch (a centre "crop" of the whole image), other sizes are cropped with seeded boxes
    (the epoch is the ``Mixing``'s, so ``set_epoch`` replays crops too)."""
    if meta.image_shape is not None and tuple(meta.image_shape) == size:
        if not jpeg:
            return SimpleRGBImageDecoder()
        return CenterCropDecoder(tuple(meta.image_shape), ratio=1.0, on_decode_error=on_decode_error)
    if crop == "auto":
        crop = "random" if shuffled else "center"
    if crop == "random":
        return RandomResizedCropDecoder(size, control=mixing.control, seed=mixing.seed,
                                        on_decode_error=on_decode_error, exact_decode=exact_decode)
    return CenterCropDecoder(size, ratio=CENTER_CROP_RATIO, on_decode_error=on_decode_error,
                             exact_decode=exact_decode)
