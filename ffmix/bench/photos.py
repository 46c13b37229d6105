"""Real photographs for the JPEG benchmark: scikit-image's bundled colour photos, made into many distinct
images by random crops, flips and resizes (the ``photos`` datasets of ``ffmix bench``).

scikit-image is a bench/test extra (``pip install ffmix[bench]``): only the photo files inside its package are
read (nothing of it is imported), so any installed version that ships them will do.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..errors import FfmixError

# The colour photographs among scikit-image's data files (not the charts, phantoms or gray images).
PHOTO_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
               "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")
SCALE, LOG_RATIO = (0.25, 1.0), (np.log(3 / 4), np.log(4 / 3))   # the crop's share of the area, its W / H


def photo_folder() -> Path:
    """scikit-image's data folder; FfmixError naming the extra when scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FfmixError("the photos datasets read scikit-image's bundled photographs: "
                         "`pip install scikit-image` (or ffmix's bench extra)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [name for name in PHOTO_FILES if not (folder / name).is_file()]
    if missing:
        raise FfmixError(f"scikit-image at {folder.parent} lacks the photographs {missing}; install a release "
                         "that ships them (0.19 and later do)")
    return folder


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(photo_folder() / name) as image:
        return np.asarray(image.convert("RGB"))


def photos() -> List[np.ndarray]:
    """The photographs as uint8 (H, W, 3) arrays, in ``PHOTO_FILES`` order."""
    return [_photo(name) for name in PHOTO_FILES]


def photo_image(label: int, seed: int, side_range: Tuple[int, int]) -> np.ndarray:
    """One distinct image of photograph ``label`` (mod their count): a random crop (a quarter to all of the
    area, W / H in [3/4, 4/3]), flipped half the time, resized (Lanczos) so its longer side is drawn in
    ``side_range``. Reproducible from ``seed``. uint8 (H, W, 3)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    source = photos()[label % len(PHOTO_FILES)]
    height, width = source.shape[:2]
    area = height * width * rng.uniform(*SCALE)
    ratio = np.exp(rng.uniform(*LOG_RATIO))
    box_width = int(min(width, round(np.sqrt(area * ratio))))
    box_height = int(min(height, round(np.sqrt(area / ratio))))
    top = int(rng.integers(0, height - box_height + 1))
    left = int(rng.integers(0, width - box_width + 1))
    crop = source[top:top + box_height, left:left + box_width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    longer = int(rng.integers(side_range[0], side_range[1] + 1))
    scale = longer / max(box_height, box_width)
    size = (max(1, round(box_width * scale)), max(1, round(box_height * scale)))   # PIL: (W, H)
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.LANCZOS))
