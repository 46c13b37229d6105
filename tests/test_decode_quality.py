"""The default JPEG crop decoding (the box's region, DCT-scaled) against the exact one (whole decode + OpenCV
INTER_AREA), on a small photo set: the per-scale differences stay within the bounds docs/decoding.md states
(a little looser than measured there, over 300 photos)."""
from __future__ import annotations

import pytest

pytest.importorskip("skimage", reason="the photos are scikit-image's photographs (bench/test extra)")

from ffmix.bench.decode_quality import photo_jpegs, quality, table  # noqa: E402

# scale -> (largest mean absolute difference in levels, smallest PSNR in dB)
BOUNDS = {"1/1": (0.08, 52.0), "1/2": (2.4, 35.5), "1/4": (3.5, 33.0), "1/8": (4.5, 31.0)}


@pytest.fixture(scope="module")
def rows():
    return quality(photo_jpegs(60, seed=1), sizes=(160, 64, 32), seed=1)


def test_every_scale_is_measured(rows):
    counts = {scale: sum(r["count"] for r in rows if r["scale"] == scale) for scale in BOUNDS}
    assert all(count >= 10 for count in counts.values()), counts


def test_default_decoding_stays_within_the_stated_bounds(rows):
    for row in rows:
        if not row["count"]:
            continue
        largest_mad, smallest_psnr = BOUNDS[row["scale"]]
        assert row["mad"] <= largest_mad and row["psnr"] >= smallest_psnr, table(rows)
