"""The targets ``ffmix bench`` checks: one table (``TARGETS``) of named records, each a ratio of two measured rows
against a threshold, evaluated on a run's results (``evaluate_targets``).

A target names the section it compares (``COMPARED`` says where that section's rows are, which field names a
row, which field the target's ``where`` picks, and which figure is divided), the two rows (``mine``, ``other``),
and the ratio needed. The kept runs under ``docs/bench/`` are re-evaluated against this table by the tests, so a
target whose rows were renamed, or a changed threshold, shows up there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

COMPARISONS = (">=", "<=")


@dataclass(frozen=True)
class Compared:
    """Where the rows a target compares are: ``results[rows]``, a row's key in field ``key``, its place (the
    target's ``where``) in field ``where``; the ratio divides field ``metric``. ``cpu_only``: only rows
    delivered on the CPU count (the end-to-end targets are set for that)."""

    rows: str
    key: str
    where: str
    metric: str
    cpu_only: bool = False


# by a target's section: its rows and the figure it divides ("ops_memcpy": ffmix time over the copy's time;
# "collate_ms": a collate's time alone; "startup": warm first-batch times)
COMPARED: Dict[str, Compared] = {
    "e2e": Compared("e2e", key="pipeline", where="dataset", metric="images_per_s", cpu_only=True),
    "ops": Compared("ops", key="impl", where="shape_role", metric="images_per_s"),
    "ops_memcpy": Compared("ops", key="impl", where="shape_role", metric="ms_per_batch"),
    "startup": Compared("startup", key="loader", where="cache", metric="to_first_batch_s"),
    "collate": Compared("collate", key="path", where="dataset", metric="images_per_s"),
    "collate_ms": Compared("collate", key="path", where="dataset", metric="collate_ms"),
    "recipe": Compared("recipe", key="pipeline", where="dataset", metric="images_per_s", cpu_only=True),
}


@dataclass(frozen=True)
class Target:
    """``mine``'s figure over ``other``'s, in ``section`` at ``where``, must be ``comparison`` ``threshold``;
    ``what`` says it in words (the tables and the JSON show it)."""

    what: str
    section: str
    where: str
    mine: str
    other: str
    comparison: str
    threshold: float

    def __post_init__(self):
        if self.section not in COMPARED:
            raise ValueError(f"target {self.what!r}: section must be one of {sorted(COMPARED)}, got {self.section!r}")
        if self.comparison not in COMPARISONS:
            raise ValueError(f"target {self.what!r}: comparison must be one of {COMPARISONS}, "
                             f"got {self.comparison!r}")

    def met_by(self, ratio: float) -> bool:
        return ratio >= self.threshold if self.comparison == ">=" else ratio <= self.threshold


TARGETS = (
    # issue 10, 2 threads: float output at 32x32 raw
    Target("end to end 32x32 raw, float: ffmix / timm Mixup in the loop",
           section="e2e", where="rgb32", mine="ffmix", other="timm_mixup", comparison=">=", threshold=10.0),
    Target("end to end 32x32 raw: ffmix / DataLoader + collate_fn",
           section="e2e", where="rgb32", mine="ffmix", other="dl_collate", comparison=">=", threshold=20.0),
    Target("end to end 32x32 raw: ffmix / FFCV + its ImageMixup",
           section="e2e", where="rgb32", mine="ffmix", other="ffcv_mixup", comparison=">=", threshold=4.0),
    Target("end to end 32x32 raw, float: ffmix mixed / FFCV unmixed",
           section="e2e", where="rgb32", mine="ffmix", other="ffcv_plain", comparison=">=", threshold=1.0),
    # uint8 output at 32x32 raw; float on Fashion-MNIST
    Target("end to end 32x32 raw, uint8: ffmix / timm FastCollateMixup",
           section="e2e", where="rgb32", mine="ffmix_uint8", other="timm_fast_collate",
           comparison=">=", threshold=10.0),
    Target("end to end 32x32 raw, uint8: ffmix mixed / unmixed",
           section="e2e", where="rgb32", mine="ffmix_uint8", other="ffmix_uint8_off", comparison=">=", threshold=0.8),
    Target("end to end Fashion-MNIST, uint8: ffmix mixed / unmixed",
           section="e2e", where="fmnist", mine="ffmix_uint8", other="ffmix_uint8_off", comparison=">=", threshold=0.8),
    Target("end to end Fashion-MNIST, float: ffmix mixed / FFCV unmixed",
           section="e2e", where="fmnist", mine="ffmix", other="ffcv_plain", comparison=">=", threshold=0.9),
    Target("mixing alone, ImageNet batch: ffmix time / same-thread copy",
           section="ops_memcpy", where="imagenet", mine="ffmix", other="memcpy", comparison="<=", threshold=1.5),
    # earlier issues
    Target("end to end 32x32 raw: ffmix / DataLoader + torchvision v2 MixUp/CutMix",
           section="e2e", where="rgb32", mine="ffmix", other="dl_torchvision", comparison=">=", threshold=20.0),
    Target("end to end 224 JPEG: ffmix / DataLoader + collate_fn",
           section="e2e", where="jpeg224", mine="ffmix", other="dl_collate", comparison=">=", threshold=5.0),
    Target("end to end 32x32 raw: ffmix mixing on / mixing off",
           section="e2e", where="rgb32", mine="ffmix", other="ffmix_off", comparison=">=", threshold=0.8),
    Target("end to end 224 JPEG: ffmix mixing on / mixing off",
           section="e2e", where="jpeg224", mine="ffmix", other="ffmix_off", comparison=">=", threshold=0.9),
    Target("mixing alone, ImageNet batch: ffmix / FFCV ImageMixup",
           section="ops", where="imagenet", mine="ffmix", other="ffcv", comparison=">=", threshold=8.0),
    Target("mixing alone, ImageNet batch: ffmix / vectorised float PyTorch",
           section="ops", where="imagenet", mine="ffmix", other="torch", comparison=">=", threshold=20.0),
    Target("mixing alone, CIFAR batch: ffmix / FFCV ImageMixup",
           section="ops", where="cifar", mine="ffmix", other="ffcv", comparison=">=", threshold=4.0),
    Target("start-up, warm cache: ffmix first mixed batch / FFCV first unmixed batch",
           section="startup", where="warm", mine="ffmix", other="ffcv_plain", comparison="<=", threshold=1.5),
    # DataLoader collate_fn: images/s delivered (collate) and the collate"s time alone (collate_ms)
    Target("DataLoader 32x32 RGB: MixCollate / timm FastCollateMixup",
           section="collate", where="rgb32", mine="ffmix_uint8", other="timm", comparison=">=", threshold=5.0),
    Target("DataLoader 32x32 RGB: MixCollate float / tutorial",
           section="collate", where="rgb32", mine="ffmix_float", other="tutorial", comparison=">=", threshold=10.0),
    Target("collate alone 32x32 RGB: MixCollate time / default_collate",
           section="collate_ms", where="rgb32", mine="ffmix_uint8", other="default_collate",
           comparison="<=", threshold=1.5),
    Target("DataLoader 28x28 gray: MixCollate / timm FastCollateMixup",
           section="collate", where="fmnist", mine="ffmix_uint8", other="timm", comparison=">=", threshold=5.0),
    Target("DataLoader 28x28 gray: MixCollate float / tutorial",
           section="collate", where="fmnist", mine="ffmix_float", other="tutorial", comparison=">=", threshold=10.0),
    Target("collate alone 28x28 gray: MixCollate time / default_collate",
           section="collate_ms", where="fmnist", mine="ffmix_uint8", other="default_collate",
           comparison="<=", threshold=1.5),
    Target("224 JPEG random-resized-crop: ffmix's seeded decoder / FFCV's decoder",
           section="e2e", where="jpeg224", mine="ffmix_decode", other="ffcv_decode", comparison=">=", threshold=0.95),
    # issue 19, the photo set, 2 threads, uint8, batch 128
    Target("photos 224, uint8: ffmix MixUp+CutMix / FFCV's RRC decoder pipeline",
           section="e2e", where="photos", mine="ffmix_uint8", other="ffcv_decode", comparison=">=", threshold=1.5),
    Target("photos 224, uint8: ffmix MixUp+CutMix / DALI CPU decode + crop + resize",
           section="e2e", where="photos", mine="ffmix_uint8", other="dali_decode", comparison=">=", threshold=1.5),
    Target("photos 224, uint8 (stretch): ffmix MixUp+CutMix / full-size decode-only limit",
           section="e2e", where="photos", mine="ffmix_uint8", other="decode_limit", comparison=">=", threshold=1.0),
    Target("photos 160, uint8: ffmix MixUp+CutMix / FFCV's RRC decoder pipeline",
           section="e2e", where="photos160", mine="ffmix_uint8", other="ffcv_decode", comparison=">=",
           threshold=2.0),
    Target("photos 224, uint8: ffmix mixing on / mixing off",
           section="e2e", where="photos", mine="ffmix_uint8", other="ffmix_uint8_off", comparison=">=",
           threshold=0.95),
    Target("photos 160, uint8: ffmix mixing on / mixing off",
           section="e2e", where="photos160", mine="ffmix_uint8", other="ffmix_uint8_off", comparison=">=",
           threshold=0.95),
    Target("photos 224: ffmix uint8 MixUp+CutMix / DataLoader + PIL RandomResizedCrop recipe",
           section="e2e", where="photos", mine="ffmix_uint8", other="dl_recipe", comparison=">=", threshold=6.0),
    # issue 20, the photo set at 224, 2 threads, float on the CPU
    Target("photos 224, full recipe: ffmix / DataLoader + torchvision RandAugment, RandomErasing, timm Mixup",
           section="recipe", where="photos", mine="ffmix_full", other="dl_full", comparison=">=", threshold=5.0),
    Target("photos 224: ffmix full recipe / ffmix crop + flip + mix alone",
           section="recipe", where="photos", mine="ffmix_full", other="ffmix_crop_flip_mix", comparison=">=",
           threshold=0.7),
)


def rows_of(results: Dict[str, List[dict]], section: str, where: str) -> Dict[str, dict]:
    """The rows a target of ``section`` at ``where`` compares, by their key."""
    compared = COMPARED[section]
    return {row[compared.key]: row for row in results.get(compared.rows, [])
            if row.get(compared.where) == where and (not compared.cpu_only or row.get("device", "cpu") == "cpu")}


def ratio(results: Dict[str, List[dict]], target: Target) -> Optional[float]:
    """``target``'s measured ratio, or ``None`` when either row is missing from ``results``."""
    rows = rows_of(results, target.section, target.where)
    if target.mine not in rows or target.other not in rows:
        return None
    metric = COMPARED[target.section].metric
    return rows[target.mine][metric] / rows[target.other][metric]


def not_measured(results: Dict[str, List[dict]], skipped: Optional[Dict[str, str]] = None) -> List[dict]:
    """The targets whose place was measured (rows of its section at its ``where``) but one of whose rows was
    not: an optional peer that is not installed (DALI), or a row left out with --pipelines. Each with the missing
    rows and why (``skipped``: the run's skip notes, by "e2e KEY"). These are neither met nor missed."""
    skipped = skipped or {}
    absent = []
    for target in TARGETS:
        rows = rows_of(results, target.section, target.where)
        missing = [key for key in (target.mine, target.other) if key not in rows]
        if not rows or not missing:
            continue
        why = "; ".join(f"{key}: {skipped.get(f'{target.section} {key}', 'not run')}" for key in missing)
        absent.append({"target": target.what, "section": target.section, "where": target.where,
                       "missing": missing, "why": why})
    return absent


def evaluate_targets(results: Dict[str, List[dict]], quick: bool) -> List[dict]:
    """Each target whose rows were measured: the measured ratio, the threshold and whether it is met. A ratio
    of an ffmix row whose output failed its check meets nothing. Targets with a row missing are left out here
    (``not_measured`` lists them), so a missing optional peer is neither a failure nor an error."""
    evaluated = []
    for target in TARGETS:
        measured = ratio(results, target)
        if measured is None:
            continue
        rows = rows_of(results, target.section, target.where)
        failed = [key for key in (target.mine, target.other)
                  if key.startswith("ffmix") and not (rows[key].get("check") or {}).get("ok", True)]
        evaluated.append({"target": target.what, "section": target.section, "where": target.where,
                          "measured": measured, "comparison": target.comparison, "threshold": target.threshold,
                          "met": target.met_by(measured) and not failed, "failed_check": failed, "quick": quick})
    return evaluated
