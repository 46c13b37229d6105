"""The bench's real-photograph datasets: distinct JPEGs of the stated sizes from scikit-image's photographs,
reproducible, and usable by ffmix's loader at 224 and 160 px."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage", reason="the photos datasets read scikit-image's photographs (bench/test extra)")

from ffmix.bench import data  # noqa: E402
from ffmix.bench.photos import PHOTO_FILES, photo_image, photos  # noqa: E402


def test_photo_images_are_distinct_reproducible_and_of_the_stated_sizes():
    images = [photo_image(index % len(PHOTO_FILES), seed=index, side_range=(300, 500)) for index in range(24)]
    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 300 <= max(image.shape[:2]) <= 500
        assert image.std() > 10                        # a photograph, not a flat fill
    shapes = {image.shape for image in images}
    assert len(shapes) > 12                            # crops and resizes vary
    again = photo_image(3, seed=3, side_range=(300, 500))
    np.testing.assert_array_equal(again, images[3])
    assert len(photos()) == len(PHOTO_FILES) == 9


def test_photos_dataset_is_written_and_loads_at_both_sizes(tmp_path):
    import torch

    from ffmix import make_loader

    specs = {s.name: s for s in data.photo_specs(quick=True)}
    spec = specs["photos160"]
    from dataclasses import replace
    small = replace(spec, count=18)
    dataset = data.prepare(small, tmp_path, workers=1)
    assert dataset.count == 18 and len(dataset.files) == 18 and dataset.image_shape == (160, 160)
    loader = make_loader(dataset.beton, batch_size=6, image_size=160, num_workers=2, dtype=torch.uint8,
                         normalize=False, mixup_alpha=0.2, cutmix_alpha=1.0)
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (6, 3, 160, 160)
    assert specs["photos"].crop == 224 and specs["photos"].side_range == (300, 500)


# ------------------------------------------------------------------ the photo set's bench rows (issues 19, 20)

BATCH = 8


@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory):
    """24 photographs (300-500 px stored), cropped to 64 px by the loaders."""
    from dataclasses import replace

    spec = replace(data.photo_specs(quick=True)[0], count=24, crop=64)
    return data.prepare(spec, tmp_path_factory.mktemp("photos"), workers=1)


def _first_batch(loader):
    stream = iter(loader)
    try:
        images, targets = next(stream)
        return images.clone(), targets.clone()
    finally:
        for _ in stream:    # end at an epoch boundary (FFCV's threads)
            pass


@pytest.mark.parametrize("key", ["ffmix_uint8", "ffmix_uint8_off", "dl_recipe", "dali_decode"])
def test_photo_rows_deliver_the_contract(tiny_photos, key):
    import torch

    from ffmix.bench import registry
    from ffmix.bench.alternatives import check_batch

    pipeline = registry.PIPELINES[key]
    if not pipeline.available():
        pytest.skip(f"{pipeline.requires} is not installed")
    assert pipeline.runs_on("photos") and pipeline.runs_on("photos160") and not pipeline.runs_on("jpeg224")
    loader = registry.build_loader(key, tiny_photos, batch_size=BATCH, workers=2 if key != "dl_recipe" else 0,
                                   device=torch.device("cpu"))
    assert len(loader) == tiny_photos.count // BATCH
    images, targets = _first_batch(loader)
    check = check_batch(images, targets, batch_size=BATCH, channels=3, image_shape=(64, 64), num_classes=9,
                        mixed=pipeline.mixed, dtype=getattr(torch, pipeline.output))
    assert check["ok"], check
    assert float(images.float().std()) > 10 * (1 if pipeline.output == "uint8" else 1 / 255)   # photographs


def test_decode_limit_decodes_every_file_in_full_once_per_epoch(tiny_photos):
    """The limit's batches say what it decoded: each file once per epoch, at its stored size (PIL's)."""
    import torch
    from PIL import Image

    from ffmix.bench import registry
    from ffmix.bench.decode_limit import check_sizes

    assert registry.PIPELINES["decode_limit"].limit and not registry.PIPELINES["decode_limit"].mixed
    loader = registry.build_loader("decode_limit", tiny_photos, batch_size=BATCH, workers=2,
                                   device=torch.device("cpu"))
    stored = {}
    for path, label in zip(tiny_photos.files, tiny_photos.labels):
        with Image.open(path) as image:
            stored.setdefault(int(label), []).append((image.height, image.width, 3))
    for _ in range(2):
        seen = {}
        for sizes, labels in loader:
            assert check_sizes(sizes, batch_size=BATCH, side_range=(300, 500))["ok"]
            for size, label in zip(sizes.tolist(), labels.tolist()):
                seen.setdefault(label, []).append(tuple(size))
        assert {k: sorted(v) for k, v in seen.items()} == {k: sorted(v) for k, v in stored.items()}
    loader.close()


def test_decode_limit_check_catches_what_is_not_a_full_decode():
    from ffmix.bench.decode_limit import check_sizes

    full = np.array([[400, 300, 3], [320, 480, 3]])
    assert check_sizes(full, batch_size=2, side_range=(300, 500))["ok"]
    assert not check_sizes(full // [2, 2, 1], batch_size=2, side_range=(300, 500))["ok"]     # a 1/2-scale decode
    assert not check_sizes(full * [1, 1, 0] + [0, 0, 1], batch_size=2, side_range=(300, 500))["ok"]   # gray
    assert not check_sizes(full[:1], batch_size=2, side_range=(300, 500))["ok"]


def test_recipe_rows_deliver_the_contract_and_the_full_recipe_augments(tiny_photos):
    """The recipe section's rows: float32 normalised, mixed soft targets; ffmix's full recipe is the crop +
    flip + mix loader's batch with RandAugment and erasing applied (same seed: same crops, partners and λ's,
    different pixels)."""
    import torch

    from ffmix.bench import recipe
    from ffmix.bench.alternatives import check_batch

    batches = {}
    for key, pipeline in recipe.PIPELINES.items():
        if not pipeline.available():
            continue
        loader = pipeline.build(tiny_photos, batch_size=BATCH, workers=2 if key != "dl_full" else 0,
                                device=torch.device("cpu"))
        batches[key] = _first_batch(loader)
        check = check_batch(*batches[key], batch_size=BATCH, channels=3, image_shape=(64, 64), num_classes=9,
                            mixed=True)
        assert check["ok"], (key, check)
    full, plain = batches["ffmix_full"], batches["ffmix_crop_flip_mix"]
    torch.testing.assert_close(full[1], plain[1])                      # the same mixing draws
    changed = (full[0] - plain[0]).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert int(changed.sum()) >= BATCH // 2                            # RandAugment (2 ops, always on) acted


def test_a_target_whose_optional_row_is_missing_is_not_measured():
    """No DALI installed: its target is listed as not measured (with why), neither met nor missed, and the
    other photo targets are evaluated as usual; the report says so."""
    from ffmix.bench import report, targets

    def row(pipeline, rate):
        return {"section": "e2e", "dataset": "photos", "dataset_title": "photos: x", "pipeline": pipeline,
                "label": pipeline, "images_per_s": rate, "ms_per_batch": 1.0, "vs_ffmix": 1.0, "x_memcpy": 1.0,
                "warmup_s": 1.0, "batch_size": 8, "workers": 2, "device": "cpu", "check": {"ok": True}}

    results = {"e2e": [row("ffmix_uint8", 1500.0), row("ffmix_uint8_off", 1550.0), row("ffcv_decode", 900.0),
                       row("decode_limit", 1200.0), row("dl_recipe", 200.0)]}
    skipped = {"e2e dali_decode": "nvidia.dali is not installed"}
    evaluated = {t["target"]: t for t in targets.evaluate_targets(results, quick=False)}
    absent = {t["target"]: t for t in targets.not_measured(results, skipped)}
    dali = "photos 224, uint8: ffmix MixUp+CutMix / DALI CPU decode + crop + resize"
    assert dali in absent and dali not in evaluated
    assert absent[dali]["missing"] == ["dali_decode"] and "not installed" in absent[dali]["why"]
    ffcv = evaluated["photos 224, uint8: ffmix MixUp+CutMix / FFCV's RRC decoder pipeline"]
    assert ffcv["measured"] == pytest.approx(1500 / 900) and ffcv["met"]
    assert evaluated["photos 224: ffmix uint8 MixUp+CutMix / DataLoader + PIL RandomResizedCrop recipe"]["met"]
    stretch = evaluated["photos 224, uint8 (stretch): ffmix MixUp+CutMix / full-size decode-only limit"]
    assert stretch["measured"] == pytest.approx(1.25) and stretch["met"]
    # photos160 and the recipe section were not run at all: their targets are not listed
    assert not any(t["where"] == "photos160" or t["section"] == "recipe" for t in absent.values())
    text = report.not_measured_text(list(absent.values()))
    assert "not measured" in text and "nvidia.dali is not installed" in text
