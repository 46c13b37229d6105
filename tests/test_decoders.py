"""ffmix's decoders and flip: boxes and flips against the Python reference, pixels against FFCV's decoders,
reproducibility through real loaders (workers, batch sizes, epochs, seeds), and the raw decoder that mixes
bit for bit as decode-then-mix does.

Loaders compile Numba code (a second or two each), so data and loaders are shared through module fixtures.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch
from ffcv.fields.decoders import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, SimpleRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import ToTensor

import datagen
from ffmix import Mixing, make_loader
from ffmix.convert import convert, convert_arrays
from ffmix.ffcv_compat import field_table, open_reader
from ffmix.loader import _image_decoder
from ffmix.metadata import read_meta
from ffmix.ops import augment, augment_reference as reference
from ffmix.ops.decode_kernels import flip_images
from ffmix.ops.decoders import (CenterCropDecoder, MixingRawDecoder, RandomFlip, RandomResizedCropDecoder)
from ffmix.ops.kernels import mix_images
from ffmix.ops.mixing import FloatOutput
from ffmix.ops.params import draw_mix_params
from ffmix.ops.rng import batch_key
from ffmix.sources import open_source

# FFCV's own compiled imdecode leaves a KeyError in a Numba finaliser when its dispatcher is collected (FFCV, not
# ffmix); pytest would report it as an unraisable-exception warning in whichever test happens to collect it.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SIZES = [(40, 56), (64, 48), (33, 70), (80, 80), (50, 31), (45, 90)]   # (H, W): tall, wide, square
CROP = (24, 28)
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    datagen.write_image_folder(root / "folder", ["a", "b", "c"], 12, SIZES, ext=".jpg")
    paths = {"jpg": root / "jpg.beton", "raw_varied": root / "raw_varied.beton"}
    convert(open_source(root / "folder"), paths["jpg"], write_mode="jpg")
    convert(open_source(root / "folder"), paths["raw_varied"], write_mode="raw")
    rng = np.random.default_rng(0)
    paths["raw"] = root / "raw.beton"
    convert_arrays(rng.integers(0, 256, (60, 12, 20, 3), dtype=np.uint8), rng.integers(0, 5, 60), paths["raw"])
    # Class 0 all black, class 1 all white: a mixed image's white fraction is the weight its target gives class 1.
    labels = rng.integers(0, 2, 64)
    labels[:2] = [0, 1]
    paths["encoded"] = root / "encoded.beton"
    convert_arrays(np.repeat((labels * 255).astype(np.uint8), 12 * 20 * 3).reshape(-1, 12, 20, 3), labels,
                   paths["encoded"], class_names=["black", "white"])
    return paths


def ffcv_images(path, decoder, *, batch_size=6, workers=2, order=OrderOption.SEQUENTIAL, seed=0, extra=(),
                churn=False, epochs=1):
    """All image batches of a plain FFCV Loader, concatenated per epoch."""
    loader = Loader(str(path), batch_size=batch_size, num_workers=workers, order=order, seed=seed,
                    pipelines={"image": [decoder, *extra, ToTensor()], "label": [IntDecoder(), ToTensor()]})
    runs = []
    for _ in range(epochs):
        batches = []
        for images, _ in loader:
            batches.append(images.numpy().copy())
            if churn:
                _churn()
        runs.append(np.concatenate(batches))
    return runs if epochs > 1 else runs[0]


def _churn():
    # Allocate and drop many arrays, then collect: memory compiled code should not hold gets reused.
    garbage = [np.full(4096 * (k % 7 + 1), k, np.uint8) for k in range(200)]
    del garbage
    gc.collect()


def stored_image(reader, mm, index):
    """Sample ``index``'s decoded full-size pixels, by FFCV's own imdecode (JPEG) or straight from the file."""
    row = field_table(reader, "image")[index]
    height, width, pointer = int(row["height"]), int(row["width"]), int(row["data_ptr"])
    table = reader.alloc_table
    size = int(table["size"][np.searchsorted(table["ptr"], pointer)])
    data = np.ascontiguousarray(mm[pointer:pointer + size])
    if row["mode"] == 1:
        return data.reshape(height, width, 3)
    image = np.zeros((height, width, 3), np.uint8)
    imdecode(data, image, height, width, height, width, 0, 0, 1, 1, False, False)
    return image


def collect(loader, churn=False):
    out = []
    for images, targets in loader:
        out.append((images.clone(), targets.clone()))
        if churn:
            _churn()
    return out


def set_control(mixing, epoch=None, enabled=None):
    """What a MixLoader does at ``iter()``, for plain FFCV Loaders: hand epoch and on/off to compiled code."""
    if epoch is not None:
        mixing.set_epoch(epoch)
    if enabled is not None:
        mixing.enabled = enabled
    commit = getattr(mixing.control, "commit", None)   # control blocks that hold changes until committed
    if commit is not None:
        commit()


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


# ------------------------------------------------------------------------------- draws vs the reference

def test_crop_boxes_match_the_reference_over_many_samples():
    rng = np.random.default_rng(1)
    for index in range(3000):
        height, width = (int(v) for v in rng.integers(1, 400, 2))
        scale = (0.08, 1.0) if index % 3 else (0.3, 0.6)
        ratio = (3 / 4, 4 / 3) if index % 5 else (0.5, 2.5)
        key = augment.sample_key(7, 3, index, augment.CROP_STREAM)
        assert int(key) == reference.sample_key(7, 3, index, int(augment.CROP_STREAM))
        got = augment.random_crop_box(np.uint64(key), height, width, scale[0], scale[1], math.log(ratio[0]),
                                      math.log(ratio[1]))
        assert tuple(int(v) for v in got) == reference.random_crop_box(int(key), height, width, scale, ratio)
        out = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        got = augment.center_crop_box(height, width, *out, 0.875)
        assert tuple(int(v) for v in got) == reference.center_crop_box(height, width, *out, 0.875)


def test_boxes_lie_inside_and_follow_the_scale_and_ratio_ranges():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    areas, ratios, tries = [], [], []
    for index in range(4000):
        height, width = SIZES[index % len(SIZES)]
        top, left, h, w, attempts = reference.random_crop_box(
            reference.sample_key(0, 0, index, int(augment.CROP_STREAM)), height, width, scale, ratio)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h >= 1 and w >= 1
        tries.append(attempts)
        if attempts <= augment.FALLBACK_TRIES:
            # Sides are rounded to whole pixels: the drawn sides lie within half a pixel of them.
            area = height * width
            assert (h + 0.5) * (w + 0.5) >= scale[0] * area and (h - 0.5) * (w - 0.5) <= scale[1] * area
            assert (w + 0.5) / max(h - 0.5, 0.5) >= ratio[0] and (w - 0.5) / (h + 0.5) <= ratio[1]
            areas.append(h * w / (height * width))
            ratios.append(math.log(w / h))
    areas, ratios = np.array(areas), np.array(ratios)
    # The accepted draws spread over the ranges (the area is uniform before rejection of boxes too big).
    assert areas.min() < 0.12 and areas.max() > 0.9 and 0.3 < np.median(areas) < 0.6
    assert ratios.min() < LOG_RATIO[0] + 0.05 and ratios.max() > LOG_RATIO[1] - 0.05
    assert abs(np.mean(ratios)) < 0.03
    assert np.mean(np.array(tries) == 1) > 0.5


@pytest.mark.parametrize("height, width, ratio, expected", [
    (60, 40, (2.0, 3.0), (20, 0, 20, 40)),     # taller than the ratio range: full width, h = round(w / 2)
    (20, 90, (0.5, 2.0), (0, 25, 20, 40)),     # wider: full height, w = round(h * 2)
    (30, 30, (0.9, 1.1), (0, 0, 30, 30)),      # in range: the whole image
])
def test_fallback_after_ten_tries_is_the_clamped_centre_crop(height, width, ratio, expected):
    scale = (1.5, 2.0) if ratio == (0.9, 1.1) else (0.9, 1.0)   # boxes that cannot fit
    for index in range(20):
        key = reference.sample_key(0, 0, index, int(augment.CROP_STREAM))
        box = reference.random_crop_box(key, height, width, scale, ratio)
        assert box == expected + (augment.FALLBACK_TRIES + 1,)
        got = augment.random_crop_box(np.uint64(key), height, width, scale[0], scale[1], math.log(ratio[0]),
                                      math.log(ratio[1]))
        assert tuple(int(v) for v in got) == box


@pytest.mark.parametrize("channels, width", [(3, 7), (3, 8), (1, 5)])
def test_flips_match_the_reference(channels, width):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (40, 5, width, channels), dtype=np.uint8)
    indices = rng.permutation(1000)[:40].astype(np.uint64)
    flipped = reference.flips(11, 2, indices)
    assert 0.25 < flipped.mean() < 0.75
    expected = reference.flip_reference(images, flipped)
    flip_images(images, indices, 11, 2, 0.5)
    np.testing.assert_array_equal(images, expected)
    assert reference.flips(11, 2, indices, probability=0.0).sum() == 0
    assert reference.flips(11, 2, indices, probability=1.0).all()


# --------------------------------------------------------------------------- pixels vs FFCV's decoders

@pytest.mark.parametrize("kind", ["jpg", "raw_varied"])
def test_centre_crops_equal_ffcvs_centre_crop_decoder(files, kind):
    expected = ffcv_images(files[kind], CenterCropRGBImageDecoder((24, 24), ratio=224 / 256))
    np.testing.assert_array_equal(ffcv_images(files[kind], CenterCropDecoder((24, 24), exact_decode=True)), expected)


@pytest.mark.parametrize("kind", ["jpg", "raw_varied"])
def test_random_crops_equal_ffcvs_decode_and_resize_of_the_reference_box(files, kind):
    seed, epoch = 5, 0
    got = ffcv_images(files[kind], RandomResizedCropDecoder(CROP, seed=seed, exact_decode=True))
    reader = open_reader(files[kind])
    mm = np.memmap(files[kind], np.uint8, mode="r")
    table = field_table(reader, "image")
    boxes = reference.crop_boxes(seed, epoch, range(len(got)), zip(table["height"], table["width"]))
    assert len(set(map(tuple, boxes))) > len(boxes) // 2     # the boxes really vary
    for index, (top, left, h, w) in enumerate(boxes):
        expected = np.zeros((*CROP, 3), np.uint8)
        resize_crop(stored_image(reader, mm, index), top, top + h, left, left + w, expected)
        np.testing.assert_array_equal(got[index], expected)


@pytest.mark.parametrize("exact_decode", [True, False], ids=["whole", "region"])
def test_dct_scaled_decoding_stays_close_to_full_size_decoding(files, exact_decode):
    # Large boxes over a small output: most samples are decoded at 1/2 scale or less.
    options = dict(seed=1, scale=(0.6, 1.0))
    full = ffcv_images(files["jpg"], RandomResizedCropDecoder((12, 12), exact_decode=True, **options))
    scaled = ffcv_images(files["jpg"], RandomResizedCropDecoder((12, 12), dct_scaling=True,
                                                                exact_decode=exact_decode, **options))
    difference = np.abs(full.astype(np.int64) - scaled)
    assert difference.any() and difference.mean() < 3 and np.percentile(difference, 99) < 16


@pytest.mark.parametrize("kind", ["random", "center"])
def test_region_decoding_at_full_scale_stays_within_a_level_of_ffcvs_pixels(files, kind):
    # Without DCT scaling the region decoder's box pixels are a full decode's (tests/test_jpeg_region.py), so
    # the default path differs from FFCV's only by the resampler (ffmix's area filter vs OpenCV's INTER_AREA).
    def decoder(**options):
        if kind == "random":
            return RandomResizedCropDecoder(CROP, seed=2, dct_scaling=False, **options)
        return CenterCropDecoder(CROP, dct_scaling=False, **options)
    exact = ffcv_images(files["jpg"], decoder(exact_decode=True)).astype(np.int64)
    difference = np.abs(ffcv_images(files["jpg"], decoder(), churn=True) - exact)
    assert difference.max() <= 1 and difference.mean() < 0.2


def test_without_the_region_decoder_the_default_path_gives_the_exact_pixels_and_warns(files, monkeypatch):
    import warnings

    from ffmix.errors import FfmixWarning
    from ffmix.ops import decoders

    exact = ffcv_images(files["jpg"], RandomResizedCropDecoder((12, 12), seed=4, exact_decode=True))
    monkeypatch.setattr(decoders, "jpeg_region_function", lambda: None)
    monkeypatch.setattr(decoders, "unavailable_reason", lambda: "no compiler here; install gcc")
    monkeypatch.setattr(decoders, "_warned_no_region", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = ffcv_images(files["jpg"], RandomResizedCropDecoder((12, 12), seed=4))
    np.testing.assert_array_equal(fallback, exact)
    assert sum(issubclass(w.category, FfmixWarning) and "install gcc" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize("crop", ["random", "center"])
def test_make_loaders_exact_decode_reaches_the_decoder(files, crop):
    meta = read_meta(files["jpg"])
    for exact in (False, True):
        decoder = _image_decoder(meta, CROP, crop, shuffled=True, mixing=Mixing(), exact_decode=exact)
        assert decoder.exact_decode is exact


def test_default_decoding_uses_dct_scaling_and_exact_decoding_does_not():
    assert RandomResizedCropDecoder(8).max_dct == 8 and CenterCropDecoder(8).max_dct == 8
    assert RandomResizedCropDecoder(8, exact_decode=True).max_dct == 1
    assert RandomResizedCropDecoder(8, exact_decode=True, dct_scaling=True).max_dct == 8
    assert CenterCropDecoder(8, dct_scaling=False).max_dct == 1


# --------------------------------------------------------------------- reproducible through real loaders

@pytest.fixture(scope="module")
def crop_runs(files):
    """Sequential order, random crops + flips, no mixing: (workers, batch size) -> all images of epoch 0, 1."""
    runs = {}
    for workers, batch_size in ((1, 4), (2, 6), (2, 9)):
        control = Mixing(seed=3).control
        runs[workers, batch_size] = ffcv_images(
            files["jpg"], RandomResizedCropDecoder(CROP, control=control, seed=3), batch_size=batch_size,
            workers=workers, extra=[RandomFlip(control=control, seed=3)], churn=(workers == 2), epochs=1)
    return runs


def test_crops_and_flips_do_not_depend_on_workers_or_batch_size(crop_runs):
    runs = list(crop_runs.values())
    shortest = min(len(run) for run in runs)
    for run in runs[1:]:
        np.testing.assert_array_equal(run[:shortest], runs[0][:shortest])


def test_crops_and_flips_equal_the_reference_draws(files, crop_runs):
    reader = open_reader(files["jpg"])
    mm = np.memmap(files["jpg"], np.uint8, mode="r")
    table = field_table(reader, "image")
    control = Mixing(seed=3).control
    got = ffcv_images(files["jpg"], RandomResizedCropDecoder(CROP, control=control, seed=3, exact_decode=True),
                      batch_size=4, workers=1, extra=[RandomFlip(control=control, seed=3)])
    boxes = reference.crop_boxes(3, 0, range(len(got)), zip(table["height"], table["width"]))
    crops = np.zeros((len(got), *CROP, 3), np.uint8)
    for index, (top, left, h, w) in enumerate(boxes):
        resize_crop(stored_image(reader, mm, index), top, top + h, left, left + w, crops[index])
    np.testing.assert_array_equal(got, reference.flip_reference(crops, reference.flips(3, 0, range(len(got)))))


@pytest.fixture(scope="module")
def loader_runs(files):
    """make_loader on the JPEG folder (random order, crops, flips, MixUp + CutMix), two epochs per setting."""
    def run(seed=0, workers=2, epochs=2, churn=False, **options):
        loader = make_loader(files["jpg"], batch_size=8, mixup_alpha=0.5, cutmix_alpha=1.0, image_size=CROP,
                             hflip=True, seed=seed, num_workers=workers, dtype=torch.uint8, normalize=False,
                             **options)
        return loader, [collect(loader, churn) for _ in range(epochs)]
    loader, epochs = run()
    return {"loader": loader, "epochs": epochs, "one_worker": run(workers=1, churn=True)[1],
            "other_seed": run(seed=1, epochs=1)[1]}


def test_loader_runs_are_bit_identical_for_one_and_two_workers(loader_runs):
    for epoch in range(2):
        assert same_batches(loader_runs["epochs"][epoch], loader_runs["one_worker"][epoch])


def test_epochs_and_seeds_differ(loader_runs):
    first, second = loader_runs["epochs"]
    assert not torch.equal(first[0][0], second[0][0])
    assert not torch.equal(first[0][0], loader_runs["other_seed"][0][0][0])


def test_set_epoch_replays_crops_flips_and_mixing(loader_runs):
    loader = loader_runs["loader"]
    loader.set_epoch(1)
    assert same_batches(collect(loader), loader_runs["epochs"][1])
    loader.set_epoch(0)
    assert same_batches(collect(loader), loader_runs["epochs"][0])


def test_sequential_epochs_crop_differently_and_replay(files):
    loader = make_loader(files["jpg"], batch_size=6, image_size=CROP, crop="random", order="sequential",
                         targets="label", dtype=torch.uint8, normalize=False, num_workers=2)
    first, second = collect(loader), collect(loader)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, second))       # same samples ...
    assert not torch.equal(first[0][0], second[0][0])                          # ... other crops
    loader.set_epoch(0)
    assert same_batches(collect(loader), first)


@pytest.mark.parametrize("order, expected", [("random", RandomResizedCropDecoder), ("quasi_random",
                                             RandomResizedCropDecoder), ("sequential", CenterCropDecoder)])
@pytest.mark.parametrize("mixing", [Mixing(), Mixing(mixup_alpha=0.2)], ids=["unmixed", "mixed"])
def test_auto_crop_follows_the_order_not_the_mixing(files, order, expected, mixing):
    meta = read_meta(files["jpg"])
    decoder = _image_decoder(meta, CROP, "auto", shuffled=(order != "sequential"), mixing=mixing)
    assert type(decoder) is expected
    assert type(_image_decoder(meta, CROP, "center", shuffled=True, mixing=mixing)) is CenterCropDecoder


# --------------------------------------------------------------------------- the raw decoder that mixes

MIX_SETTINGS = [dict(mixup_alpha=0.4), dict(cutmix_alpha=1.0, mode="elem"),
                dict(mixup_alpha=1.0, cutmix_alpha=1.0, mode="pair", mix_prob=0.8)]


@pytest.mark.parametrize("settings", MIX_SETTINGS[1:], ids=["cutmix-elem", "both-pair"])
def test_mixing_raw_decoder_equals_decode_then_mix_bit_for_bit(files, settings):
    mixing = Mixing(seed=4, image_size=(12, 20), **settings)
    options = dict(order=OrderOption.RANDOM, seed=4, batch_size=7, epochs=2)
    set_control(mixing, epoch=1)
    fused = ffcv_images(files["raw"], MixingRawDecoder(mixing), churn=True, **options)
    separate = ffcv_images(files["raw"], SimpleRGBImageDecoder(), extra=[mixing.image_op()], **options)
    for epoch in range(2):
        np.testing.assert_array_equal(fused[epoch], separate[epoch])


@pytest.mark.parametrize("settings", MIX_SETTINGS[:2], ids=["mixup", "cutmix-elem"])
def test_mixing_raw_decoder_equals_the_mix_kernel_on_the_stored_pixels(files, settings):
    mixing = Mixing(seed=2, image_size=(12, 20), **settings)
    set_control(mixing, epoch=5)
    batch_size = 10
    got = ffcv_images(files["raw"], MixingRawDecoder(mixing), batch_size=batch_size)
    stored = ffcv_images(files["raw"], SimpleRGBImageDecoder(), batch_size=batch_size)
    for start in range(0, len(got), batch_size):
        indices = np.arange(start, start + batch_size, dtype=np.uint64)
        key = np.uint64(batch_key(2, 5, indices))
        partner, weight, box, _ = draw_mix_params(key, batch_size, mixing.record[0])
        expected = np.empty((batch_size, 12, 20, 3), np.uint8)
        mix_images(stored[start:start + batch_size], expected, partner, weight, box)
        np.testing.assert_array_equal(got[start:start + batch_size], expected)
    assert not np.array_equal(got, stored)


def test_mixing_raw_decoder_copies_when_mixing_is_off(files):
    mixing = Mixing(mixup_alpha=1.0, seed=0)
    set_control(mixing, enabled=False)
    np.testing.assert_array_equal(ffcv_images(files["raw"], MixingRawDecoder(mixing)),
                                  ffcv_images(files["raw"], SimpleRGBImageDecoder()))


@pytest.mark.parametrize("settings", MIX_SETTINGS, ids=["mixup", "cutmix-elem", "both-pair"])
def test_make_loader_mixes_raw_images_in_the_decoder_and_labels_agree(files, settings):
    loader = make_loader(files["encoded"], batch_size=16, num_workers=2, dtype=torch.uint8, normalize=False,
                         seed=1, **settings)
    image_pipeline = loader.ffcv_loader.pipeline_specs["image"]
    assert isinstance(image_pipeline.decoder, MixingRawDecoder)
    mixed = 0
    for images, targets in collect(loader, churn=True):
        white = images.double().mean(dim=(1, 2, 3)).numpy() / 255.0
        # uint8 pixels: 255 * λ rounded to a whole level (CutMix boxes are exact)
        np.testing.assert_allclose(white, targets[:, 1].double().numpy(), atol=1 / 255)
        mixed += int(((white > 0) & (white < 1)).sum())
    assert mixed > 0


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("settings", MIX_SETTINGS + [dict()], ids=["mixup", "cutmix-elem", "both-pair", "unmixed"])
def test_mixing_raw_decoder_writes_the_float_op_s_floats_bit_for_bit(files, settings, channels_last):
    mixing = Mixing(seed=3, image_size=(12, 20), **settings)
    set_control(mixing, epoch=2)
    output = FloatOutput(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), channels=3, channels_last=channels_last)
    options = dict(order=OrderOption.RANDOM, seed=3, batch_size=7, epochs=2)
    fused = ffcv_images(files["raw"], MixingRawDecoder(mixing, output), churn=True, **options)
    separate = ffcv_images(files["raw"], SimpleRGBImageDecoder(), extra=[mixing.image_op(output)], **options)
    for epoch in range(2):
        assert fused[epoch].dtype == np.float32
        np.testing.assert_array_equal(fused[epoch].view(np.uint32), separate[epoch].view(np.uint32))


def test_mixing_raw_decoder_floats_keep_one_channel_and_follow_the_switch(files):
    mixing = Mixing(mixup_alpha=1.0, seed=0, image_size=(12, 20))
    output = FloatOutput(mean=(0.5,), std=(0.25,), channels=1)
    for enabled in (True, False):
        set_control(mixing, enabled=enabled)
        fused = ffcv_images(files["raw"], MixingRawDecoder(mixing, output))
        separate = ffcv_images(files["raw"], SimpleRGBImageDecoder(), extra=[mixing.image_op(output)])
        assert fused.shape[1:] == (1, 12, 20)
        np.testing.assert_array_equal(fused.view(np.uint32), separate.view(np.uint32))
    stored = ffcv_images(files["raw"], SimpleRGBImageDecoder())   # switched off: the stored pixels, normalised
    np.testing.assert_allclose(fused[:, 0], (stored[..., 0] / 255.0 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_make_loader_float_path_reads_raw_images_once(files, channels_last):
    loader = make_loader(files["encoded"], batch_size=16, num_workers=2, seed=1, mixup_alpha=0.4, cutmix_alpha=1.0,
                         channels_last=channels_last)
    image_pipeline = loader.ffcv_loader.pipeline_specs["image"]
    assert isinstance(image_pipeline.decoder, MixingRawDecoder) and not image_pipeline.transforms[:-1]
    flipped = make_loader(files["encoded"], batch_size=16, num_workers=2, seed=1, hflip=True)
    assert not isinstance(flipped.ffcv_loader.pipeline_specs["image"].decoder, MixingRawDecoder)


def test_mixing_raw_decoder_refuses_jpeg_and_varying_sizes(files):
    for kind, message in (("jpg", "vary"), ("raw_varied", "vary")):
        with pytest.raises(ValueError, match=message):
            ffcv_images(files[kind], MixingRawDecoder(Mixing(mixup_alpha=0.2)))
    mixed_modes = files["raw"].parent / "smart.beton"
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
    convert_arrays(images, np.arange(8) % 2, mixed_modes, write_mode="jpg")
    with pytest.raises(ValueError, match="JPEG"):
        ffcv_images(mixed_modes, MixingRawDecoder(Mixing(mixup_alpha=0.2)))


def test_bad_decoder_options_are_refused():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropDecoder(8, scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCropDecoder(8, ratio=(0, 1))
    with pytest.raises(ValueError, match="output_size"):
        CenterCropDecoder((8, 0))
    with pytest.raises(ValueError, match="probability"):
        RandomFlip(probability=1.5)
