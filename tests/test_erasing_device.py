"""RandomErasing on the device (uint8 batches normalised by torch, as on a GPU), run here on CPU tensors: the
pipeline's draw table against the Python reference, the torch writer against the reference and the CPU kernel
(same boxes, same values, every mode), and ``make_loader`` with the device path forced on the CPU
(``loader.fused_on_cpu`` off): the reference applied to the unerased batches, the CPU fused path's values at
the erased pixels, targets unchanged, one and two workers alike, ``set_epoch`` replays."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import ffmix.loader as loader_module
from ffmix import make_loader
from ffmix.convert import convert_arrays
from ffmix.ops.augment_reference import Stream, sample_key
from ffmix.ops.erasing import ERASE_STREAM, MODES, RandomErasing, erase_images
from ffmix.ops.erasing_device import box_noise_rows, erase_on_device, noise_length
from ffmix.ops.erasing_draws import (HEIGHT, LEFT, NOISE_KEY, SLOT_FIXED, TOP, USED, WIDTH, draw_table, slot_start,
                                     table_columns)
from ffmix.ops.erasing_reference import erase_reference, normal_pairs, sample_erasures

BATCH = 16


def _table(indices, epoch, channels, height, width, settings):
    table = np.zeros((len(indices), table_columns(int(settings.max_count), channels)), np.int64)
    return draw_table(table, np.asarray(indices, np.uint64), epoch, channels, height, width, settings)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_draw_table_holds_the_reference_boxes_and_colours(mode):
    settings = RandomErasing(0.6, mode=mode, max_count=3, seed=11).settings
    indices = np.random.default_rng(0).permutation(5000)[:300]
    for channels in (1, 3):
        table = _table(indices, 4, channels, 17, 23, settings)
        for row, index in zip(table, indices):
            reference = sample_erasures(sample_key(11, 4, int(index), int(ERASE_STREAM)), channels, 17, 23, settings)
            assert row[USED] == len(reference)
            for slot, (top, left, box_h, box_w, values) in enumerate(reference):
                start = slot_start(slot, channels)
                assert tuple(row[start + f] for f in (TOP, LEFT, HEIGHT, WIDTH)) == (top, left, box_h, box_w)
                colours = row[start + SLOT_FIXED:start + SLOT_FIXED + channels].astype(np.int32).view(np.float32)
                if mode == "rand":
                    np.testing.assert_array_equal(colours, values[:, 0, 0])
                else:
                    assert not colours.any()
            assert not row[slot_start(len(reference), channels):].any()   # unused slots stay 0


def test_box_noise_follows_the_sequential_stream():
    """The counter-based formula against the Python stream, odd and even lengths, any 64-bit key."""
    rng = np.random.default_rng(1)
    keys = [int(rng.integers(0, 2 ** 63)) * 2 + int(rng.integers(0, 2)) for _ in range(20)]
    signed = torch.tensor([key - (1 << 64) if key >= 1 << 63 else key for key in keys])
    for length in (1, 2, 3001):
        got = box_noise_rows(signed, length).numpy()
        for row, key in zip(got, keys):
            np.testing.assert_allclose(row, normal_pairs(Stream(key), length), rtol=1e-6, atol=1e-6)


def test_noise_length_covers_every_box_drawn():
    for max_area, height, width in ((1 / 3, 17, 23), (0.9, 9, 10), (1.0, 5, 31)):
        settings = RandomErasing(1.0, mode="pixel", max_area=max_area, min_aspect=0.1, seed=8).settings
        table = _table(range(3000), 0, 1, height, width, settings)
        areas = table[:, slot_start(0, 1) + HEIGHT] * table[:, slot_start(0, 1) + WIDTH]
        assert areas.max() <= noise_length(1, height, width, max_area)
        assert noise_length(3, height, width, max_area) == 3 * noise_length(1, height, width, max_area)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("max_count", [1, 3])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_device_writer_matches_the_reference_and_the_cpu_kernel(mode, max_count, memory_format):
    settings = RandomErasing(0.7, mode=mode, max_count=max_count, seed=5).settings
    rng = np.random.default_rng(max_count)
    images = rng.normal(size=(40, 3, 11, 13)).astype(np.float32)
    for epoch, indices in ((0, rng.permutation(1000)[:40]), (7, np.arange(40))):
        table = torch.from_numpy(_table(indices, epoch, 3, 11, 13, settings))
        on_device = torch.from_numpy(images.copy()).contiguous(memory_format=memory_format)
        got = erase_on_device(on_device, table, settings).numpy()
        expected = erase_reference(images, indices, epoch, settings)
        cpu_kernel = images.copy()
        erase_images(cpu_kernel, np.asarray(indices, np.uint64), epoch, settings)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, cpu_kernel, rtol=1e-6, atol=1e-6)
        assert (got != images).any()


def test_device_writer_keeps_half_precision_and_erases_grayscale():
    settings = RandomErasing(1.0, mode="pixel", max_count=2, seed=3).settings
    images = np.random.default_rng(2).normal(size=(12, 1, 9, 10)).astype(np.float32)
    table = torch.from_numpy(_table(range(12), 1, 1, 9, 10, settings))
    got = erase_on_device(torch.from_numpy(images).to(torch.bfloat16), table, settings)
    assert got.dtype == torch.bfloat16
    expected = torch.from_numpy(erase_reference(images, range(12), 1, settings)).to(torch.bfloat16)
    assert torch.equal(got, expected)


# ----------------------------------------------------------------------------------------------- the loader

@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = tmp_path_factory.mktemp("erasing_device") / "rgb.beton"
    rng = np.random.default_rng(3)
    convert_arrays(rng.integers(0, 256, (64, 12, 16, 3), dtype=np.uint8), rng.integers(0, 4, 64), path)
    return path


@pytest.fixture
def device_path(monkeypatch):
    """make_loader takes the device path (uint8 handed over, torch normalises and erases) on the CPU."""
    monkeypatch.setattr(loader_module, "fused_on_cpu", lambda device, dtype: False)


def _loader(path, **options):
    options.setdefault("num_workers", 2)
    return make_loader(path, batch_size=BATCH, order="random", mixup_alpha=0.5, cutmix_alpha=1.0, mode="elem",
                       seed=2, **options)


def _epoch(loader, churn: bool = False):
    """The epoch's batches, copied; with ``churn``, memory freed and reused (``gc.collect()``) between batches,
    so compiled code reading a freed address (the draw table op's records and buffers) would show."""
    batches, keep = [], []
    for images, targets in loader:
        batches.append((images.clone(), targets.clone()))
        if churn:
            keep.extend(np.full((size, 3, 16, 16), 255, np.uint8) for size in range(1, 30))
            del keep[:-8]
            gc.collect()
    return batches


def _erased_mask(shape, indices, settings):
    """True where the reference writes (it writes finite values over NaN)."""
    return ~np.isnan(erase_reference(np.full(shape, np.nan, np.float32), indices, 0, settings))


@pytest.mark.parametrize("mode, channels_last", [("pixel", False), ("rand", True), ("const", False)])
def test_loader_erases_on_the_device_as_the_reference_and_the_cpu_path(beton, device_path, mode, channels_last):
    plain_loader = _loader(beton, channels_last=channels_last)
    order = plain_loader.ffcv_loader.epoch_order()   # epoch 0's sample order
    plain = _epoch(plain_loader)
    erased = _epoch(_loader(beton, channels_last=channels_last, re_prob=0.5, re_mode=mode, re_count=2), churn=True)
    settings = RandomErasing(0.5, mode=mode, max_count=2, seed=2).settings
    changed = 0
    for position, ((images, targets), (plain_images, plain_targets)) in enumerate(zip(erased, plain)):
        assert torch.equal(targets, plain_targets)
        indices = _batch_indices(order, position)
        expected = erase_reference(plain_images.contiguous().numpy(), indices, 0, settings)
        np.testing.assert_allclose(images.numpy(), expected, rtol=1e-6, atol=1e-6)
        assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
        changed += int((images != plain_images).any(dim=(1, 2, 3)).sum())
    assert 0 < changed < len(plain) * BATCH
    _same_values_as_the_cpu_path(beton, erased, order, settings, mode, channels_last)


def _batch_indices(order, position):
    return order[position * BATCH:(position + 1) * BATCH]


def _same_values_as_the_cpu_path(beton, erased, order, settings, mode, channels_last):
    """The CPU fused path erases the same pixels with the same values (its unerased pixels differ slightly:
    it mixes in float, the device path in uint8)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader_module, "fused_on_cpu", lambda device, dtype: dtype.is_floating_point)
        cpu = _epoch(_loader(beton, channels_last=channels_last, re_prob=0.5, re_mode=mode, re_count=2))
    for position, ((images, targets), (cpu_images, cpu_targets)) in enumerate(zip(erased, cpu)):
        assert torch.equal(targets, cpu_targets)
        mask = _erased_mask(tuple(images.shape), _batch_indices(order, position), settings)
        np.testing.assert_allclose(images.numpy()[mask], cpu_images.numpy()[mask], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(images.numpy()[~mask], cpu_images.numpy()[~mask], atol=0.03)


def test_device_erasing_is_the_same_for_one_and_two_workers_and_replays(beton, device_path):
    runs = [_epoch(_loader(beton, num_workers=w, re_prob=0.5, re_mode="pixel")) for w in (1, 2)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs))
    loader = _loader(beton, num_workers=2, re_prob=0.5, re_mode="pixel")
    first, second = _epoch(loader), _epoch(loader)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, second))
    loader.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, _epoch(loader)))


@pytest.fixture(scope="module")
def jpeg_beton(tmp_path_factory):
    path = tmp_path_factory.mktemp("erasing_device_jpeg") / "photos.beton"
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(20, 40, (48, 2))]
    convert_arrays(images, rng.integers(0, 4, 48), path, write_mode="jpg")
    return path


def test_device_erasing_follows_crops_flips_and_a_new_image_size(jpeg_beton, device_path):
    """The draw table branches off the mixing op here (flips before it) and is drawn for the size of the
    rebuilt pipeline after ``set_image_size``."""
    options = dict(image_size=16, hflip=True, num_workers=2)
    plain_loader, erased_loader = _loader(jpeg_beton, **options), _loader(jpeg_beton, re_prob=0.7, re_mode="rand",
                                                                          re_count=2, **options)
    settings = RandomErasing(0.7, mode="rand", max_count=2, seed=2).settings
    for epoch, size in ((0, (16, 16)), (1, (20, 18))):
        if epoch:
            plain_loader.set_image_size(size)
            erased_loader.set_image_size(size)
        order = plain_loader.ffcv_loader.epoch_order()
        for position, ((images, targets), (plain_images, plain_targets)) in enumerate(
                zip(_epoch(erased_loader), _epoch(plain_loader))):
            assert images.shape[2:] == size and torch.equal(targets, plain_targets)
            expected = erase_reference(plain_images.numpy(), _batch_indices(order, position), epoch, settings)
            np.testing.assert_allclose(images.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_loader_erases_as_the_device_path_on_the_cpu(beton, monkeypatch):
    """The same writer on CUDA tensors (int64 wrap-around, float64 log/cos/sin there) and the draw table crossing
    the bus: the batches equal the device path run on the CPU."""
    on_gpu = _epoch(_loader(beton, device="cuda", re_prob=0.5, re_mode="pixel", re_count=2))
    monkeypatch.setattr(loader_module, "fused_on_cpu", lambda device, dtype: False)
    on_cpu = _epoch(_loader(beton, re_prob=0.5, re_mode="pixel", re_count=2))
    for (gpu_images, gpu_targets), (cpu_images, cpu_targets) in zip(on_gpu, on_cpu):
        assert gpu_images.device.type == "cuda"
        np.testing.assert_allclose(gpu_images.cpu().numpy(), cpu_images.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gpu_targets.cpu().numpy(), cpu_targets.numpy(), rtol=1e-6, atol=1e-6)
