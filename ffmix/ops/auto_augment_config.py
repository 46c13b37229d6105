"""timm's auto-augment config strings (``rand-m9-mstd0.5-inc1``, and ``trivial``) read onto ffmix's ops.

ffmix's ops are torchvision's (op set, magnitude tables, nearest interpolation, fill 0). A ``rand-*`` string
keeps timm's meaning for each option torchvision's RandAugment has a counterpart for, and is refused, with a
message, for the rest; no option is ignored:

=========  ======================================================================  =========================
option     timm's meaning                                                          here
=========  ======================================================================  =========================
``mM``     magnitude M on timm's 0..10 scale (default 10)                          bin 3M of torchvision's
                                                                                   31 (its tables end where
                                                                                   timm's do at M = 10)
``nN``     N ops per image (default 2)                                             ``num_ops=N``
``pP``     chance each op applies (default 0.5)                                    ``apply_prob=P``
``mstdS``  Gaussian noise of std S on M per op, clipped to [0, mmax]; S > 100:     the same, in bins (3S),
           uniform over [0, M]                                                     rounded to a bin
``mmaxK``  clip at K instead of 10                                                 K <= 10: bin 3K; K > 10
                                                                                   refused (no table there)
``incI``   inc1: Solarize/Posterize grow stronger with M (inc0, the default:       inc1 required (
           weaker)                                                                 torchvision's tables grow
                                                                                   stronger); inc0 refused
``tNAME``  another op set                                                          refused (torchvision's
                                                                                   set only)
=========  ======================================================================  =========================

What stays different from timm even so (it is in timm's hyper-parameters, not the string): timm's set has
Invert and SolarizeAdd where torchvision's has Identity; timm's increasing Posterize keeps 4..0 bits where
torchvision's keeps 8..4; timm's TranslateRel ends at 0.45 of the size (torchvision: 150/331 = 0.453);
timm works on PIL images with random bilinear/bicubic resampling and fills with the mean colour (here
nearest, fill 0). See ``docs/auto_augment.md``.

``trivial`` is torchvision's ``TrivialAugmentWide()`` (timm has no string for it).
"""
from __future__ import annotations

import math
import re
from typing import Optional

from ..errors import FfmixError

TIMM_LEVEL_MAX = 10     # timm's magnitude scale: 0..10
NUM_BINS = 31           # torchvision's default table size: bin = 3 x timm's level
BINS_PER_LEVEL = (NUM_BINS - 1) // TIMM_LEVEL_MAX
UNIFORM_ABOVE = 100.0   # timm: mstd > 100 means uniform sampling
_OPTION = re.compile(r"^([a-z]+)(\d.*)$")


def parse_auto_augment(config: str, *, control=None, seed: int = 0, grayscale: bool = False):
    """The FFCV op (``RandAugment`` or ``TrivialAugmentWide``) that timm config string ``config`` ("rand-...",
    or "trivial") describes, keyed by ``control``'s epoch and ``seed``; see the module docstring. Raises
    ``FfmixError`` naming the option for anything without a faithful counterpart."""
    from .auto_augment import RandAugment, TrivialAugmentWide   # here: reading a string needs no Numba
    options = read_auto_augment(config)
    if options is None:
        return TrivialAugmentWide(control=control, seed=seed, grayscale=grayscale)
    return RandAugment(**options, control=control, seed=seed, grayscale=grayscale)


def read_auto_augment(config: str) -> Optional[dict]:
    """``RandAugment``'s keyword arguments for a ``rand-*`` string, None for "trivial"; raises ``FfmixError``
    (see ``parse_auto_augment``). Pure Python, so a command line can check its flag before starting Numba."""
    if not isinstance(config, str):
        raise FfmixError(f"auto_augment must be a string such as 'rand-m9-mstd0.5-inc1' or 'trivial', got {config!r}")
    if config == "trivial":
        return None
    sections = config.split("-")
    if sections[0] != "rand":
        raise FfmixError(f"auto_augment={config!r}: ffmix knows timm's 'rand-*' strings and 'trivial' "
                         "(AutoAugment policies and AugMix are not implemented)")
    level, num_ops, apply_prob, std, level_max, increasing = TIMM_LEVEL_MAX, 2, 0.5, 0.0, TIMM_LEVEL_MAX, False
    for section in sections[1:]:
        if section.startswith("t"):
            raise FfmixError(f"auto_augment={config!r}: option {section!r} picks another op set; ffmix has "
                             "torchvision's RandAugment set only: drop it")
        key, value = _split(section, config)
        if key == "m":
            level = _number(value, int, section, config)
        elif key == "n":
            num_ops = _number(value, int, section, config)
        elif key == "p":
            apply_prob = _number(value, float, section, config)
        elif key == "mstd":
            std = _number(value, float, section, config)
            std = math.inf if std > UNIFORM_ABOVE else std
        elif key == "mmax":
            level_max = _number(value, int, section, config)
        elif key == "inc":
            increasing = bool(_number(value, int, section, config))
        else:
            raise FfmixError(f"auto_augment={config!r}: unknown option {section!r}; timm's are m, n, p, mstd, "
                             "mmax, inc, t")
    if not increasing:
        raise FfmixError(f"auto_augment={config!r}: without inc1, timm's Solarize and Posterize grow weaker as "
                         "the magnitude grows; ffmix implements torchvision's tables, in which every op grows "
                         "stronger as with timm's inc1: add '-inc1'")
    if level_max > TIMM_LEVEL_MAX or level > level_max:
        raise FfmixError(f"auto_augment={config!r}: magnitude {level} (clip {level_max}) lies past the end of "
                         f"torchvision's tables (timm level {TIMM_LEVEL_MAX}); use m <= mmax <= {TIMM_LEVEL_MAX}")
    if level < 0 or num_ops < 0 or std < 0 or not 0.0 <= apply_prob <= 1.0:
        raise FfmixError(f"auto_augment={config!r}: m, n and mstd must be >= 0 and p in [0, 1]")
    return dict(num_ops=num_ops, magnitude=level * BINS_PER_LEVEL, num_magnitude_bins=NUM_BINS,
                apply_prob=apply_prob, magnitude_std=std * BINS_PER_LEVEL, max_magnitude=level_max * BINS_PER_LEVEL)


def _split(section: str, config: str):
    match = _OPTION.match(section)
    if match is None:
        raise FfmixError(f"auto_augment={config!r}: cannot read option {section!r} (a key such as m, n, p, mstd, "
                         "mmax, inc followed by a number, e.g. 'm9')")
    return match.group(1), match.group(2)


def _number(text: str, kind, section: str, config: str):
    try:
        return kind(text)
    except ValueError:
        raise FfmixError(f"auto_augment={config!r}: option {section!r} needs a{'n integer' if kind is int else ' number'}"
                         f", got {text!r}") from None
