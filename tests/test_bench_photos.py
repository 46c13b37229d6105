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
