"""``ffmix.MixCollate`` on PyTorch's DataLoader: value for value against the NumPy oracle, the same batch for any
``num_workers``, every sample form, odd batches, pickling, timm's argument names, and a tiny training that learns.
No timings here: ``ffmix bench collate`` measures speed."""
from __future__ import annotations

import gc
import json
import pickle
import subprocess
import warnings
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import datagen
from ffmix import FfmixError, MixCollate, Mixing, WithIndex
from ffmix.ops.kernels import mix_images_planar, mix_normalize_planar, mix_planes
from ffmix.ops.params import draw_mix_params
from ffmix.ops.reference import (mix_images_planar_reference, mix_images_reference, mix_normalize_planar_reference,
                                  mix_normalize_reference, mix_planes_reference, soft_targets_reference)
from ffmix.ops.rng import batch_key

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 5
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class ArrayDataset(torch.utils.data.Dataset):
    """(uint8 HWC array, label) items of an in-memory batch."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


class ThreadsProbe:
    """A collate_fn that also reports, from the worker, the Numba thread count the MixCollate ran with and
    whether the kernels were already compiled there before its first batch (inherited from the parent)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, batch):
        compiled_before = len(mix_planes.overloads) > 0
        images, targets = self.collate(batch)
        return images, targets, numba.get_num_threads(), compiled_before


class CacheProbe:
    """A collate_fn that reports, from a spawned worker, how often the kernels it used were compiled there."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, batch):
        images, targets = self.collate(batch)
        misses = sum(sum(kernel.stats.cache_misses.values()) for kernel in (mix_planes, draw_mix_params))
        hits = sum(sum(kernel.stats.cache_hits.values()) for kernel in (mix_planes, draw_mix_params))
        return images, targets, hits, misses


@pytest.fixture(scope="module")
def rgb():
    images = datagen.smooth_images(40, 9, 11, 3, seed=1)    # not square: boxes in both directions
    return images, datagen.labels_for(40, NUM_CLASSES, seed=1)


@pytest.fixture(scope="module")
def collates():
    """Built once: each construction loads the kernels (the warm-up)."""
    common = dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES, seed=3)
    return {
        "uint8": MixCollate(**common),
        "float": MixCollate(**common, output="float", mean=MEAN, std=STD),
        "elem": MixCollate(**common, mode="elem", prob=0.8),
        "pair": MixCollate(**{**common, "label_smoothing": 0.0}, mode="pair", targets="pair"),
        "gray": MixCollate(**common, mode="elem", output="float", mean=(0.5,), std=(0.25,)),
    }


def expected_params(collate, indices, height, width, epoch=0):
    key = np.uint64(batch_key(collate.seed, epoch, np.asarray(indices, np.uint64)))
    settings = Mixing(mixup_alpha=collate.mixup_alpha, cutmix_alpha=collate.cutmix_alpha, mix_prob=collate.mix_prob,
                      switch_prob=collate.switch_prob, mode=collate.mode).settings_record((height, width))[0]
    return draw_mix_params(key, len(indices), settings)


def samples_of(images, labels, indices, form="hwc"):
    """Samples in one of the forms MixCollate takes."""
    out = []
    for k in indices:
        image = images[k]
        if form == "chw_tensor":
            image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0) if image.ndim == 3 else image))
        elif form == "chw_numpy":
            image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
        elif form == "pil":
            image = Image.fromarray(image)
        out.append((image, int(labels[k]), int(k)))
    return out


# ---------------------------------------------------------------------------------- the new kernels alone

@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(8))
def test_planar_kernels_match_their_reference(channels, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    height, width = (int(v) for v in rng.integers(1, 12, 2))
    images = rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8)
    key = np.uint64(batch_key(seed, 0, np.arange(n, dtype=np.uint64)))
    settings = Mixing(mixup_alpha=0.5, cutmix_alpha=1.0, mix_prob=0.9, mode="elem").settings_record((height, width))
    partner, weight, box, _ = draw_mix_params(key, n, settings[0])
    out = np.empty((n, channels, height, width), np.uint8)
    mix_images_planar(images, out, partner, weight, box)
    np.testing.assert_array_equal(out, mix_images_planar_reference(images, partner, weight, box))
    planar = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = np.empty_like(planar)
    mix_planes(planar, out, partner, weight, box)
    np.testing.assert_array_equal(out, mix_planes_reference(planar, partner, weight, box))
    scale = rng.uniform(0.001, 0.02, channels).astype(np.float32)
    shift = rng.uniform(-2, 2, channels).astype(np.float32)
    floats = np.full((n, channels, height, width), np.nan, np.float32)
    mix_normalize_planar(planar, floats, partner, weight, box, scale, shift)
    np.testing.assert_allclose(floats, mix_normalize_planar_reference(planar, partner, weight, box, scale, shift),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- one batch against the oracle

@pytest.mark.parametrize("count", [1, 2, 7, 16])
@pytest.mark.parametrize("form", ["hwc", "chw_tensor", "chw_numpy", "pil"])
def test_uint8_batch_is_the_reference_mix(rgb, collates, count, form):
    images, labels = rgb
    collate = collates["elem"]
    indices = list(range(3, 3 + count))
    mixed, targets = collate(samples_of(images, labels, indices, form))
    partner, weight, box, lam = expected_params(collate, indices, 9, 11)
    expected = mix_images_reference(images[indices], partner, weight, box).transpose(0, 3, 1, 2)
    assert mixed.dtype == torch.uint8 and tuple(mixed.shape) == (count, 3, 9, 11) and mixed.is_contiguous()
    np.testing.assert_array_equal(mixed.numpy(), expected)
    want = soft_targets_reference(labels[indices], partner, lam, NUM_CLASSES, 0.1)
    np.testing.assert_allclose(targets.numpy(), want, atol=1e-6)
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("form", ["hwc", "chw_tensor", "pil"])
def test_float_batch_is_the_reference_mix(rgb, collates, form):
    images, labels = rgb
    collate = collates["float"]
    indices = [5, 0, 9, 31, 2]
    mixed, targets = collate(samples_of(images, labels, indices, form))
    partner, weight, box, lam = expected_params(collate, indices, 9, 11)
    scale = (1 / (255 * np.array(STD))).astype(np.float32)
    shift = (-np.array(MEAN) / np.array(STD)).astype(np.float32)
    expected = mix_normalize_reference(images[indices], partner, weight, box, scale, shift, channels_last=False)
    assert mixed.dtype == torch.float32 and tuple(mixed.shape) == (5, 3, 9, 11)
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets.numpy(), soft_targets_reference(labels[indices], partner, lam, NUM_CLASSES,
                                                                       0.1), atol=1e-6)


@pytest.mark.parametrize("form", ["hwc", "chw_tensor", "pil"])
def test_gray_samples(collates, form):
    images = datagen.smooth_images(6, 7, 8, 1, seed=4)       # (N, H, W)
    labels = datagen.labels_for(6, NUM_CLASSES)
    collate = collates["gray"]
    samples = samples_of(images, labels, range(6), form)
    if form == "chw_tensor":
        samples = [(image.unsqueeze(0), label, index) for image, label, index in samples]   # (1, H, W)
    mixed, _ = collate(samples)
    partner, weight, box, _ = expected_params(collate, range(6), 7, 8)
    expected = mix_normalize_reference(images[..., None], partner, weight, box, np.float32([1 / (255 * 0.25)]),
                                       np.float32([-2.0]), channels_last=False)
    assert tuple(mixed.shape) == (6, 1, 7, 8)
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_pair_targets_carry_both_labels_and_the_pixels_weight(rgb, collates):
    images, labels = rgb
    collate = collates["pair"]
    indices = list(range(11))
    mixed, targets = collate(samples_of(images, labels, indices))
    partner, weight, box, lam = expected_params(collate, indices, 9, 11)
    assert tuple(targets.shape) == (11, 3)
    np.testing.assert_array_equal(targets[:, 0].numpy(), labels[indices])
    np.testing.assert_array_equal(targets[:, 1].numpy(), labels[indices][partner])
    np.testing.assert_allclose(targets[:, 2].numpy(), lam, atol=1e-7)
    np.testing.assert_array_equal(mixed.numpy(), mix_images_planar_reference(images[indices], partner, weight, box))


def test_nobody_is_their_own_partner_and_labels_weigh_the_pixels():
    """Each sample a flat, distinct grey: a mixed pixel shows whose it is; CutMix boxes make λ visible."""
    count = 9
    images = np.repeat(np.arange(10, 10 + 20 * count, 20, dtype=np.uint8), 8 * 8).reshape(count, 8, 8, 1)
    labels = np.arange(count) % NUM_CLASSES
    collate = MixCollate(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=NUM_CLASSES,
                         label_smoothing=0.0, targets="pair")
    for epoch in range(20):
        collate.set_epoch(epoch)
        mixed, targets = collate([(images[k], int(labels[k]), k) for k in range(count)])
        for k in range(count):
            own = int(images[k, 0, 0, 0])
            assert len(set(mixed[k].flatten().tolist())) <= 2     # its own grey and at most its partner's
            own_share = float((mixed[k] == own).float().mean())
            # λ is the share of own pixels; with a partner == itself that share would be 1 while λ < 1
            assert own_share == pytest.approx(float(targets[k, 2]), abs=1e-6)
        assert (targets[:, 2] < 1).any()


# ----------------------------------------------------------------------------------- forms and sizes

def test_every_sample_form_gives_the_same_batch(rgb, collates):
    images, labels = rgb
    collate = collates["uint8"]
    indices = [1, 4, 8, 15, 16, 23, 42 % 40]
    results = [collate(samples_of(images, labels, indices, form)) for form in ("hwc", "chw_tensor", "chw_numpy",
                                                                                 "pil")]
    for mixed, targets in results[1:]:
        torch.testing.assert_close(mixed, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(targets, results[0][1], rtol=0, atol=0)


def test_labels_may_be_ints_numpy_ints_or_tensors(rgb, collates):
    images, labels = rgb
    samples = samples_of(images, labels, range(6))
    want = collates["uint8"](samples)[1]
    for convert in (np.int64, torch.tensor):
        got = collates["uint8"]([(image, convert(label), index) for image, label, index in samples])[1]
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_hwc_tensors_are_recognised(rgb, collates):
    images, labels = rgb
    samples = samples_of(images, labels, range(5))
    as_tensors = [(torch.from_numpy(image), label, index) for image, label, index in samples]
    torch.testing.assert_close(collates["uint8"](as_tensors)[0], collates["uint8"](samples)[0], rtol=0, atol=0)


def test_layout_option_reads_ambiguous_arrays_as_told():
    image = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)    # CHW (3, 5, 3) or HWC (3, 5, 3)?
    samples = [(image, 0, 0), (image, 0, 1)]
    as_hwc = MixCollate(num_classes=2, layout="hwc")(samples)[0]
    as_chw = MixCollate(num_classes=2, layout="chw")(samples)[0]
    assert tuple(as_hwc.shape) == (2, 3, 3, 5) and tuple(as_chw.shape) == (2, 3, 5, 3)


def test_ambiguous_layouts_are_refused_unless_layout_says(rgb):
    """A (4, 8, 8) CHW image became an 8-channel 4x8 image without a word."""
    chw = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    collate = MixCollate(num_classes=2)
    ambiguous = (chw, torch.from_numpy(chw), np.zeros((3, 5, 3), np.uint8), torch.zeros((1, 4, 1), dtype=torch.uint8))
    for image in ambiguous:
        with pytest.raises(FfmixError, match=r"cannot tell whether images of shape \(\d+, \d+, \d+\) are "
                                             r"\(C, H, W\) or \(H, W, C\); pass layout='chw' or layout='hwc'"):
            collate([(image, 0, 0), (image, 1, 1)])
    images = MixCollate(num_classes=2, layout="chw", mixup_alpha=0.0)([(chw, 0, 0), (chw, 1, 1)])[0]
    assert tuple(images.shape) == (2, 4, 8, 8) and torch.equal(images[0], torch.from_numpy(chw))
    images, labels = rgb   # the clear cases stay automatic: HWC arrays, CHW tensors
    assert tuple(collate([(images[0], 0, 0), (images[1], 1, 1)])[0].shape[1:]) == (3, *images.shape[1:3])


def test_pair_targets_with_label_smoothing_are_refused_as_make_loader_refuses():
    """MixCollate(targets="pair", label_smoothing=0.3) ignored the smoothing; make_loader refused it."""
    from ffmix.ops.mixing import check_targets
    with pytest.raises(FfmixError) as expected:
        check_targets("pair", 0.3)
    with pytest.raises(FfmixError) as caught:
        MixCollate(num_classes=4, targets="pair", label_smoothing=0.3)
    assert str(caught.value) == str(expected.value) and "cannot carry label_smoothing=0.3" in str(caught.value)
    MixCollate(num_classes=4, targets="pair", label_smoothing=0.0)


def test_samples_without_index_are_repeatable_in_one_process(rgb):
    images, labels = rgb
    batch = [(images[k], int(labels[k])) for k in range(8)]
    first = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, seed=5)
    second = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, seed=5)
    for _ in range(3):   # batch by batch: the batch number stands in for the indices
        a, b = first(batch), second(batch)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert not torch.equal(first(batch)[0], first(batch)[0])   # consecutive batches differ


def test_mixing_off_gives_stacked_images_and_smoothed_one_hots(rgb):
    images, labels = rgb
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, label_smoothing=0.2)
    collate.mixup_enabled = False
    mixed, targets = collate(samples_of(images, labels, range(6)))
    np.testing.assert_array_equal(mixed.numpy(), images[:6].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(targets.numpy(), soft_targets_reference(labels[:6], np.arange(6), np.ones(6),
                                                                       NUM_CLASSES, 0.2), atol=1e-7)


# ---------------------------------------------------------------------------- DataLoader and workers

def _epoch_batches(collate, dataset, workers, epochs=(0,), persistent=False, batch_size=7, shuffle=True):
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                        collate_fn=collate, persistent_workers=persistent and workers > 0)
    out = []
    for epoch in epochs:
        collate.set_epoch(epoch) if not isinstance(collate, ThreadsProbe) else collate.collate.set_epoch(epoch)
        out.append([tuple(part for part in batch) for batch in loader])
    return out


def test_same_batches_for_any_number_of_workers(rgb):
    images, labels = rgb
    dataset = WithIndex(ArrayDataset(images, labels))   # 40 samples in batches of 7: the last one has 5
    collate = MixCollate(0.8, 1.0, mode="elem", num_classes=NUM_CLASSES, seed=11)
    runs = {workers: _epoch_batches(collate, dataset, workers, epochs=(0, 1))
            for workers in (0, 1, 2)}
    reference = runs[0]
    assert [len(b[0]) for b in reference[0]] == [7] * 5 + [5]
    assert not torch.equal(reference[0][0][0], reference[1][0][0]), "epochs mix differently"
    for workers in (1, 2):
        for epoch in range(2):
            for (mixed, targets), (want_mixed, want_targets) in zip(runs[workers][epoch], reference[epoch]):
                torch.testing.assert_close(mixed, want_mixed, rtol=0, atol=0)
                torch.testing.assert_close(targets, want_targets, rtol=0, atol=0)


def test_persistent_workers_follow_set_epoch_and_use_one_numba_thread(rgb):
    images, labels = rgb
    dataset = WithIndex(ArrayDataset(images, labels))
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, seed=2)
    # in order: persistent workers draw the shuffle of later epochs differently (DataLoader's seeding)
    in_process = _epoch_batches(collate, dataset, 0, epochs=(0, 3), shuffle=False)
    probed = _epoch_batches(ThreadsProbe(collate), dataset, 2, epochs=(0, 3), persistent=True, shuffle=False)
    assert not torch.equal(probed[0][0][0], probed[1][0][0]), "the workers saw set_epoch(3)"
    for epoch in range(2):
        for got, want in zip(probed[epoch], in_process[epoch]):
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
            assert got[2] == 1, "one Numba thread per worker"
            assert got[3], "forked workers inherit the kernels the parent's warm-up loaded: no compile per worker"
    collate.set_epoch(0)


@pytest.mark.parametrize("output,targets", [("uint8", "soft"), ("float", "soft"), ("uint8", "pair"),
                                            ("float", "pair")])
def test_worker_batches_arrive_as_one_shared_block_with_the_in_process_values(rgb, output, targets):
    images, labels = rgb
    norm = dict(mean=MEAN, std=STD) if output == "float" else {}
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, output=output, targets=targets, seed=5,
                         label_smoothing=0.1 if targets == "soft" else 0.0, **norm)
    dataset = WithIndex(ArrayDataset(images, labels))
    loader = DataLoader(dataset, batch_size=7, num_workers=1, collate_fn=collate)   # 7: odd sizes of both parts
    for number, (mixed, soft) in enumerate(loader):
        assert mixed.is_shared() and soft.is_shared()
        # one block, targets first: the images start right after the targets' bytes, and neither overlaps
        assert mixed.untyped_storage().data_ptr() == soft.untyped_storage().data_ptr()
        assert mixed.data_ptr() == soft.data_ptr() + soft.numel() * 4
        assert mixed.is_contiguous() and soft.is_contiguous()
        want_mixed, want_soft = collate([dataset[k] for k in range(7 * number, min(40, 7 * number + 7))])
        assert not want_mixed.is_shared(), "made in this process: plain memory"
        torch.testing.assert_close(mixed, want_mixed, rtol=0, atol=0)
        torch.testing.assert_close(soft, want_soft, rtol=0, atol=0)


def test_one_view_of_a_worker_block_keeps_its_bytes_through_churn(rgb):
    """Each worker batch's images and targets share one block: keeping only one of them (the other dropped,
    the loader and its workers gone, memory reallocated) must keep that one's values."""
    images, labels = rgb
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, output="float", mean=MEAN, std=STD, seed=9)
    dataset = WithIndex(ArrayDataset(images, labels))
    kept = [mixed if number % 2 else soft
            for number, (mixed, soft) in enumerate(DataLoader(dataset, batch_size=7, num_workers=2,
                                                               collate_fn=collate))]
    gc.collect()
    churn = [torch.full((7, 3, 9, 11), -1.0) for _ in range(64)]   # blocks the freed ones could be reused for
    gc.collect()
    for number, tensor in enumerate(kept):
        want_mixed, want_soft = collate([dataset[k] for k in range(7 * number, min(40, 7 * number + 7))])
        torch.testing.assert_close(tensor, want_mixed if number % 2 else want_soft, rtol=0, atol=0)
    assert all(bool((c == -1.0).all()) for c in churn)


class BatchFetching(ArrayDataset):
    """An ArrayDataset that also reads a whole batch at once, and counts how often each way is used."""

    def __init__(self, images, labels):
        super().__init__(images, labels)
        self.single_reads = self.batch_reads = 0

    def __getitem__(self, index):
        self.single_reads += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.batch_reads += 1
        return [(self.images[k], int(self.labels[k])) for k in indices]


def test_with_index_reads_batches_through_the_datasets_own_getitems(rgb):
    images, labels = rgb
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, seed=4)
    batched = BatchFetching(images, labels)
    got = list(DataLoader(WithIndex(batched), batch_size=6, collate_fn=collate))
    assert batched.batch_reads == 7 and batched.single_reads == 0
    plain = ArrayDataset(images, labels)
    want = list(DataLoader(WithIndex(plain), batch_size=6, collate_fn=collate))
    assert [len(b[0]) for b in got] == [6] * 6 + [4]
    for (mixed, soft), (want_mixed, want_soft) in zip(got, want):
        torch.testing.assert_close(mixed, want_mixed, rtol=0, atol=0)
        torch.testing.assert_close(soft, want_soft, rtol=0, atol=0)
    with pytest.raises(FfmixError, match="WithIndex needs a dataset of"):
        WithIndex(torch.utils.data.TensorDataset(torch.zeros(4, 2, 2, 3))).__getitems__([0, 1])
    batched.__getitems__ = lambda indices: [(images[0], 0)]   # one item for two indices
    with pytest.raises(FfmixError, match="returned 1 items for 2 indices"):
        WithIndex(batched).__getitems__([0, 1])


def test_pickles_and_unpickles_to_the_same_mixing(rgb, collates):
    images, labels = rgb
    collate = collates["float"]
    copy = pickle.loads(pickle.dumps(collate))
    batch = samples_of(images, labels, range(9))
    for got, want in zip(copy(batch), collate(batch)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert repr(copy) == repr(collate)


@pytest.mark.slow
def test_spawned_worker(rgb):
    """A spawned worker gets the collate by pickling and loads the kernels from Numba's cache."""
    images, labels = rgb
    collate = MixCollate(0.8, 1.0, num_classes=NUM_CLASSES, seed=7, layout="chw")
    chw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))    # CHW samples: mix_planes, as CacheProbe counts
    dataset = WithIndex(ArrayDataset(chw, labels))
    loader = DataLoader(dataset, batch_size=10, num_workers=1, collate_fn=CacheProbe(collate),
                        multiprocessing_context="spawn")
    for batch, (mixed, targets, hits, misses) in zip(range(0, 40, 10), loader):
        want = collate([dataset[k] for k in range(batch, batch + 10)])
        torch.testing.assert_close(mixed, want[0], rtol=0, atol=0)
        torch.testing.assert_close(targets, want[1], rtol=0, atol=0)
        assert hits >= 2 and misses == 0, "loaded from Numba's cache, not compiled in the worker"


# ----------------------------------------------------------------------------------- timm's names

def test_timm_argument_names_and_contract(rgb):
    from timm.data.mixup import FastCollateMixup

    images, labels = rgb
    options = dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode="batch",
                   correct_lam=True, label_smoothing=0.1, num_classes=NUM_CLASSES)
    timm_collate, ffmix_collate = FastCollateMixup(**options), MixCollate(**options)
    batch = [(np.ascontiguousarray(images[k].transpose(2, 0, 1)), int(labels[k])) for k in range(8)]  # timm's CHW
    timm_images, timm_targets = timm_collate(batch)
    ours_images, ours_targets = ffmix_collate(batch)
    assert ours_images.dtype == timm_images.dtype and ours_images.shape == timm_images.shape
    assert ours_targets.dtype == timm_targets.dtype and ours_targets.shape == timm_targets.shape
    for collate in (timm_collate, ffmix_collate):   # timm's off switch, unmixed: the same batch exactly
        collate.mixup_enabled = False
    torch.testing.assert_close(ffmix_collate(batch)[0], timm_collate(batch)[0], rtol=0, atol=0)
    torch.testing.assert_close(ffmix_collate(batch)[1], timm_collate(batch)[1], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("options, message", [
    (dict(mixup_alpha=-1), "mixup_alpha"),
    (dict(cutmix_alpha=float("inf")), "cutmix_alpha"),
    (dict(prob=1.5), "prob"),
    (dict(prob=0.5, mix_prob=0.6), "same setting"),
    (dict(switch_prob=2), "switch_prob"),
    (dict(mode="half"), "mode"),
    (dict(cutmix_minmax=(0.2, 0.8)), "cutmix_minmax"),
    (dict(correct_lam=False), "correct_lam"),
    (dict(multi_label=True), "multi_label"),
    (dict(num_classes=0), "num_classes"),
    (dict(seed=-1), "seed"),
    (dict(output="fp16"), "output"),
    (dict(mean=(0.5,), std=(0.5,)), "output='float'"),
    (dict(output="float", mean=(0.5,), std=(0.0,)), "std"),
    (dict(targets="dense"), "targets"),
    (dict(lam_range=(0.8, 0.2)), "lam_range"),
    (dict(threads=0), "threads"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(FfmixError, match=message):
        MixCollate(**options)


@pytest.mark.parametrize("batch, message", [
    ([(np.zeros((4, 4, 3), np.float32), 0)] * 2, "uint8"),
    ([(torch.zeros(3, 4, 4), 0)] * 2, "ToTensor"),
    ([(np.zeros((4, 4, 3), np.uint8), 0), (np.zeros((5, 4, 3), np.uint8), 1)], "one size"),
    ([(np.zeros((4, 4, 3), np.uint8), 7)] * 2, "label 7"),
    ([(np.zeros((4, 4, 3), np.uint8), 0.5)] * 2, "integer class label"),
    ([(Image.new("RGBA", (4, 4)), 0)] * 2, "convert"),
    (["not a sample"] * 2, "WithIndex"),
    ([(np.zeros((4, 4, 3), np.uint8), 0, -1)] * 2, "index"),
    ([], "non-empty"),
])
def test_bad_samples_are_explained(collates, batch, message):
    with pytest.raises(FfmixError, match=message):
        collates["uint8"](batch)


# ---------------------------------------------------------------------------------------- training

def test_a_tiny_model_learns_through_mixcollate():
    """Two classes told apart by which half of a 6x6 image is bright; MixUp+CutMix through the collate."""
    rng = np.random.default_rng(0)
    count = 256
    labels = np.arange(count) % 2
    images = rng.integers(0, 60, (count, 6, 6, 1), dtype=np.uint8)
    images[labels == 0, :3] += 150
    images[labels == 1, 3:] += 150
    dataset = WithIndex(ArrayDataset(images, labels))
    collate = MixCollate(0.4, 1.0, num_classes=2, label_smoothing=0.0, output="float", mean=(0.3,), std=(0.3,),
                         seed=1)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.2)
    for epoch in range(6):
        collate.set_epoch(epoch)
        for batch_images, soft in loader:
            loss = torch.sum(-soft * torch.log_softmax(model(batch_images), dim=1), dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    clean = torch.from_numpy((images[..., 0].astype(np.float32) / 255 - 0.3) / 0.3).unsqueeze(1)
    accuracy = (model(clean).argmax(dim=1).numpy() == labels).mean()
    assert accuracy > 0.95, accuracy


# ------------------------------------------------------------------------------------------ bench

def test_bench_collate_quick_runs_and_checks_every_path(tmp_path):
    out = tmp_path / "collate.json"
    # one timed run per measurement (--quick makes 3): the checks and the figures' presence need no median
    done = subprocess.run([sys.executable, "-m", "ffmix.cli", "bench", "collate", "--quick", "--runs", "1", "--quiet",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["results"]["collate"]
    from ffmix.bench.collate import PATHS
    for dataset in ("rgb32", "fmnist"):
        present = {r["path"] for r in rows if r["dataset"] == dataset}
        assert present == set(PATHS), dataset
    for row in rows:
        assert row["images_per_s"] > 0 and row["collate_ms"] > 0, row["path"]
        assert row["check"]["ok"], (row["path"], row["check"])
    targets = [t for t in result["targets"] if t["section"] in ("collate", "collate_ms")]
    assert len(targets) == 6 and all(t["measured"] > 0 for t in targets)
    assert "MixCollate" in done.stdout
    assert done.stdout.count("The DataLoader alone delivers") == 2, "the ceiling beside each dataset's table"


def test_bench_ceiling_check_accepts_its_batch_and_names_what_a_wrong_one_holds():
    from ffmix.bench.collate import ceiling_collate, check_output

    shape = dict(batch_size=4, channels=1, image_shape=(2, 2), num_classes=3)
    assert check_output("ceiling", ceiling_collate([None] * 4), **shape)["ok"]
    short = check_output("ceiling", ceiling_collate([None] * 3), **shape)
    assert not short["ok"] and short["problems"] == ["expected a (4, 1) tensor in a 1-tuple, got (3, 1)"]
    assert check_output("ceiling", [torch.zeros(4, 1)], **shape)["problems"] == [
        "expected a (4, 1) tensor in a 1-tuple, got list"]


def test_a_batch_of_one_warns_once_that_it_cannot_mix():
    collate = MixCollate(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3, seed=0, label_smoothing=0.0)
    image = np.full((4, 4, 3), 9, np.uint8)
    with pytest.warns(Warning, match="batch of one image"):
        images, targets = collate([(image, 2)])
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), image)   # unmixed, as the warning says
    assert targets[0].tolist() == [0.0, 0.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collate([(image, 2)])                      # once per collate and process
        collate([(image, 2), (image, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MixCollate(mixup_alpha=0.0, cutmix_alpha=0.0, num_classes=3)([(image, 2)])   # nothing to mix: silent
