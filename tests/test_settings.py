"""The settings records: every field reaches the compiled code under its own name (a swap or a drop fails).

Two checks per record. By name: each field gets a distinct value and a probe compiled like the kernels reads
the record at its address field by field. By effect: changing one field alone changes what the C entry point
writes, called through its address exactly as the FFCV operations call it; a field that no kernel read (a
drop) would leave the output unchanged.
"""
from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest
from numba import njit

from ffmix import FfmixError, Mixing
from ffmix.ops.batch import mix_label_batch, mix_normalize_batch
from ffmix.ops.mixing import FloatOutput, MixLabels
from ffmix.ops.params import MODES
from ffmix.ops.settings import (ENTRY_POINTS, FLOAT_SETTINGS, MIX_SETTINGS, TARGET_SETTINGS, entry_point,
                                make_record, read_float_settings, read_mix_settings, read_target_settings)

# Every Mixing field that reaches the record, each a value no other field has.
DISTINCT = dict(seed=7, mixup_alpha=0.3, cutmix_alpha=0.7, mix_prob=0.85, switch_prob=0.35, mode="pair",
                lam_range=(0.15, 0.95), image_size=(13, 17))
EXPECTED_MIX = dict(seed=7, mixup_alpha=0.3, cutmix_alpha=0.7, mix_prob=0.85, switch_prob=0.35, mode=MODES["pair"],
                    lam_low=0.15, lam_high=0.95, box_height=13, box_width=17)


@njit
def probe_mix(address):
    s = read_mix_settings(address)
    return (s.seed, s.mixup_alpha, s.cutmix_alpha, s.mix_prob, s.switch_prob, s.mode, s.lam_low, s.lam_high,
            s.box_height, s.box_width)


@njit
def probe_target(address):
    s = read_target_settings(address)
    return s.num_classes, s.label_smoothing, s.soft


@njit
def probe_float(address):
    s = read_float_settings(address)
    return s.out_channels, s.channels_last, s.scale[0], s.scale[1], s.scale[2], s.shift[0], s.shift[1], s.shift[2]


def test_every_mixing_field_is_read_under_its_own_name():
    mixing = Mixing(**DISTINCT)
    assert set(EXPECTED_MIX) == set(MIX_SETTINGS.names)
    values = probe_mix(mixing.record.ctypes.data)
    assert dict(zip(MIX_SETTINGS.names, values)) == pytest.approx(EXPECTED_MIX)


def test_every_target_and_float_field_is_read_under_its_own_name():
    labels = MixLabels(Mixing(label_smoothing=0.25), num_classes=11, targets="soft")
    assert probe_target(labels.target_record.ctypes.data) == (11, 0.25, 1)
    output = FloatOutput(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), channels_last=True)
    values = probe_float(output.settings_record().ctypes.data)
    scale, shift = output.scale_and_shift()
    assert values == pytest.approx((3, 1, *scale, *shift))
    assert len(set(scale + shift)) == 6   # distinct, so a swap inside the arrays would show


def test_records_refuse_missing_and_unknown_fields():
    with pytest.raises(TypeError, match="missing"):
        make_record(TARGET_SETTINGS, num_classes=3, soft=1)
    with pytest.raises(TypeError, match="unknown"):
        make_record(TARGET_SETTINGS, num_classes=3, label_smoothing=0.0, soft=1, smoothing=0.1)


def test_an_entry_point_whose_parameters_differ_from_the_table_is_refused():
    def mix_label_batch(labels_at, out_at, count, indices_at, control_at, mix_at, target_at):   # two swapped
        return 0
    with pytest.raises(TypeError, match="ENTRY_POINTS says"):
        entry_point(mix_label_batch)


def test_settings_are_fixed_once_a_mixing_is_built():
    mixing = Mixing(mixup_alpha=0.2)
    with pytest.raises(FfmixError, match="dataclasses.replace"):
        mixing.mixup_alpha = 0.9
    variant = dataclasses.replace(mixing, mixup_alpha=0.9)
    assert probe_mix(variant.record.ctypes.data)[1] == pytest.approx(0.9)
    mixing.enabled = False   # on/off still switches, through the control block
    assert not mixing.enabled


# ------------------------------------------------------------------------------- by effect, through C

def c_entry(function):
    """``function``'s C entry point as ctypes sees it, prototype from ``ENTRY_POINTS``."""
    arguments = [ctypes.c_size_t if name.endswith("_at") else ctypes.c_int64
                 for name in ENTRY_POINTS[function.__name__]]
    return ctypes.CFUNCTYPE(ctypes.c_int64, *arguments)(function.address)


COUNT, CLASSES = 64, 10
LABELS = np.random.default_rng(0).integers(0, CLASSES, COUNT).astype(np.int64)
INDICES = np.arange(100, 100 + COUNT, dtype=np.uint64)


def soft_targets_of(mixing: Mixing, *, num_classes=CLASSES, smoothing_mixing=None, soft=True) -> np.ndarray:
    labels_op = MixLabels(smoothing_mixing or mixing, num_classes, "soft" if soft else "pair")
    out = np.full((COUNT, num_classes if soft else 3), -1, np.float32)
    status = c_entry(mix_label_batch)(LABELS.ctypes.data, out.ctypes.data, INDICES.ctypes.data, COUNT,
                                      mixing.control.address, mixing.record.ctypes.data,
                                      labels_op.target_record.ctypes.data)
    assert status == 1
    return out


BASE = dict(seed=7, mixup_alpha=0.3, cutmix_alpha=0.7, mix_prob=0.85, switch_prob=0.35, mode="elem",
            lam_range=(0.15, 0.95), image_size=(13, 17))
CHANGES = [("seed", 8), ("mixup_alpha", 0.9), ("cutmix_alpha", 2.0), ("mix_prob", 0.5), ("switch_prob", 0.8),
           ("mode", "pair"), ("lam_range", (0.3, 0.95)), ("lam_range", (0.15, 0.7)), ("image_size", (14, 17)),
           ("image_size", (13, 18))]


def test_changes_cover_every_mixing_field():
    changed = {"lam_low" if value == (0.3, 0.95) else "lam_high" if value == (0.15, 0.7)
               else "box_height" if value == (14, 17) else "box_width" if value == (13, 18) else name
               for name, value in CHANGES}
    assert changed == set(MIX_SETTINGS.names)


@pytest.mark.parametrize("name, value", CHANGES)
def test_each_mixing_field_changes_the_targets_the_kernel_writes(name, value):
    base = soft_targets_of(Mixing(**BASE))
    np.testing.assert_allclose(base.sum(axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(soft_targets_of(Mixing(**{**BASE, name: value})), base)


def test_each_target_field_changes_what_the_kernel_writes():
    mixing = Mixing(**BASE)
    base = soft_targets_of(mixing)
    # rows laid out num_classes wide: a kernel that read another width would shift every row after the first
    wider = soft_targets_of(mixing, num_classes=CLASSES + 2)
    np.testing.assert_array_equal(wider, np.pad(base, ((0, 0), (0, 2))))
    smoothed = soft_targets_of(mixing, smoothing_mixing=dataclasses.replace(mixing, label_smoothing=0.2))
    assert not np.array_equal(smoothed, base)
    pairs = soft_targets_of(mixing, soft=False)
    assert pairs.shape == (COUNT, 3) and set(np.unique(pairs[:, :2])) <= set(range(CLASSES))


def test_each_float_field_changes_what_the_kernel_writes():
    mixing = Mixing(**BASE)
    images = np.random.default_rng(1).integers(0, 256, (COUNT, 13, 17, 3), dtype=np.uint8)
    normalize = c_entry(mix_normalize_batch)

    def convert(output: FloatOutput) -> np.ndarray:
        record = output.settings_record()
        out = np.zeros(COUNT * 13 * 17 * 3, np.float32)
        normalize(images.ctypes.data, out.ctypes.data, INDICES.ctypes.data, COUNT, 13, 17, 3,
                  mixing.control.address, mixing.record.ctypes.data, record.ctypes.data)
        return out

    base = FloatOutput(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    reference = convert(base)
    for variant in (dataclasses.replace(base, mean=(0.4, 0.5, 0.7)), dataclasses.replace(base, std=(0.2, 0.25, 0.4)),
                    dataclasses.replace(base, channels_last=True), FloatOutput(mean=(0.4, 0.5), std=(0.2, 0.25))):
        assert not np.array_equal(convert(variant), reference), variant
