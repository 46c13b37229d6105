"""The settings records: every field reaches the compiled code under its own name (a swap or a drop fails).

Two checks per record. By name: each field gets a distinct value and a probe compiled like the kernels reads
the record at its address field by field. By effect: changing one field alone changes what the C entry point
writes, called through its address exactly as the FFCV operations call it; a field that no kernel read (a
drop) would leave the output unchanged.
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import math

import numpy as np
import pytest
from numba import njit

from ffmix import FfmixError, Mixing
from ffmix.ops.auto_augment import RandAugment, augment_batch
from ffmix.ops.auto_augment_draws import RAND_AUGMENT, TRIVIAL_AUGMENT
from ffmix.ops.batch import mix_label_batch, mix_normalize_batch
from ffmix.ops.control import ControlBlock
from ffmix.ops.erasing import MODES as ERASE_MODES
from ffmix.ops.erasing import RandomErasing, erase_batch
from ffmix.ops.mixing import FloatOutput, MixLabels
from ffmix.ops.params import MODES
from ffmix.ops.settings import (AUGMENT_RECORD, AUGMENT_SETTINGS, CROP_RECORD, CROP_SETTINGS, ENTRY_POINTS,
                                ERASE_RECORD, ERASE_SETTINGS, FLIP_RECORD, FLIP_SETTINGS, FLOAT_RECORD,
                                FLOAT_SETTINGS, MIX_RECORD, MIX_SETTINGS, TARGET_RECORD, TARGET_SETTINGS,
                                entry_point, make_record, read_settings)

# Every Mixing field that reaches the record, each a value no other field has.
DISTINCT = dict(seed=7, mixup_alpha=0.3, cutmix_alpha=0.7, mix_prob=0.85, switch_prob=0.35, mode="pair",
                lam_range=(0.15, 0.95), image_size=(13, 17))
EXPECTED_MIX = dict(seed=7, mixup_alpha=0.3, cutmix_alpha=0.7, mix_prob=0.85, switch_prob=0.35, mode=MODES["pair"],
                    lam_low=0.15, lam_high=0.95, box_height=13, box_width=17)


@njit
def probe_mix(address):
    s = read_settings(address, MIX_RECORD)
    return (s.seed, s.mixup_alpha, s.cutmix_alpha, s.mix_prob, s.switch_prob, s.mode, s.lam_low, s.lam_high,
            s.box_height, s.box_width)


@njit
def probe_target(address):
    s = read_settings(address, TARGET_RECORD)
    return s.num_classes, s.label_smoothing, s.soft


@njit
def probe_float(address):
    s = read_settings(address, FLOAT_RECORD)
    return s.out_channels, s.channels_last, s.scale[0], s.scale[1], s.scale[2], s.shift[0], s.shift[1], s.shift[2]


@njit
def probe_augment(address):
    s = read_settings(address, AUGMENT_RECORD)
    return (s.seed, s.policy, s.num_ops, s.magnitude_bin, s.num_bins, s.apply_prob, s.magnitude_std, s.max_bin,
            s.gray)


@njit
def probe_erase(address):
    s = read_settings(address, ERASE_RECORD)
    return (s.seed, s.probability, s.mode, s.min_count, s.max_count, s.min_area, s.max_area, s.log_aspect_low,
            s.log_aspect_high, s.channels_last)


# The ops' constructor arguments, chosen so that every record field gets a value no other field has.
AUGMENT_ARGUMENTS = dict(num_ops=3, magnitude=5, num_magnitude_bins=11, apply_prob=0.625, magnitude_std=1.5,
                         max_magnitude=8, seed=7, grayscale=True)
EXPECTED_AUGMENT = dict(seed=7, policy=RAND_AUGMENT, num_ops=3, magnitude_bin=5, num_bins=11, apply_prob=0.625,
                        magnitude_std=1.5, max_bin=8, gray=1)
ERASE_ARGUMENTS = dict(probability=0.625, mode="pixel", max_count=4, min_count=3, min_area=0.125, max_area=0.25,
                       min_aspect=0.5, channels_last=True, seed=7)
EXPECTED_ERASE = dict(seed=7, probability=0.625, mode=ERASE_MODES["pixel"], min_count=3, max_count=4, min_area=0.125,
                      max_area=0.25, log_aspect_low=math.log(0.5), log_aspect_high=math.log(2.0), channels_last=1)


def _closure_value(function, name):
    """The value ``function`` (an op's ``generate_code`` result) captured under ``name``."""
    return function.__closure__[function.__code__.co_freevars.index(name)].cell_contents


@pytest.mark.parametrize("make_op, expected, probe, address_name", [
    (lambda: RandAugment(**AUGMENT_ARGUMENTS), EXPECTED_AUGMENT, probe_augment, "augment_at"),
    (lambda: RandomErasing(**ERASE_ARGUMENTS), EXPECTED_ERASE, probe_erase, "erase_at")], ids=["augment", "erase"])
def test_every_augment_and_erase_field_is_read_under_its_own_name(make_op, expected, probe, address_name):
    op = make_op()
    assert set(expected) == set(op.record.dtype.names)
    assert len(set(expected.values())) == len(expected)   # distinct, so a swap would show
    assert {name: op.settings[name] for name in expected} == pytest.approx(expected)
    # The address the op's compiled closure passes is the op's own record, readable after allocation churn.
    address = int(_closure_value(op.generate_code(), address_name))
    assert address == op.record.ctypes.data
    churn = [np.full(1000, i, np.float64) for i in range(200)]
    del churn
    gc.collect()
    assert dict(zip(op.record.dtype.names, probe(address))) == pytest.approx(expected)


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


# The augment and erase records, each field changed alone; the ops' constructors couple some fields (the
# aspect range is one argument), so these records are filled directly, by name.
AUGMENT_BASE = dict(seed=3, policy=RAND_AUGMENT, num_ops=2, magnitude_bin=9, num_bins=31, apply_prob=0.5,
                    magnitude_std=1.0, max_bin=20, gray=0)
AUGMENT_CHANGES = dict(seed=4, policy=TRIVIAL_AUGMENT, num_ops=3, magnitude_bin=15, num_bins=21, apply_prob=0.9,
                       magnitude_std=0.0, max_bin=9, gray=1)
ERASE_BASE = dict(seed=5, probability=0.5, mode=ERASE_MODES["rand"], min_count=1, max_count=3, min_area=0.02,
                  max_area=1 / 3, log_aspect_low=math.log(0.3), log_aspect_high=math.log(1 / 0.3), channels_last=0)
ERASE_CHANGES = dict(seed=6, probability=0.9, mode=ERASE_MODES["pixel"], min_count=2, max_count=2, min_area=0.1,
                     max_area=0.2, log_aspect_low=math.log(0.6), log_aspect_high=math.log(1.2), channels_last=1)


def test_changes_cover_every_augment_and_erase_field():
    assert set(AUGMENT_CHANGES) == set(AUGMENT_BASE) == set(AUGMENT_SETTINGS.names)
    assert set(ERASE_CHANGES) == set(ERASE_BASE) == set(ERASE_SETTINGS.names)
    assert all(AUGMENT_CHANGES[name] != AUGMENT_BASE[name] for name in AUGMENT_BASE)
    assert all(ERASE_CHANGES[name] != ERASE_BASE[name] for name in ERASE_BASE)


def augmented(record: np.ndarray, control: ControlBlock) -> np.ndarray:
    """The RGB batch after ``augment_batch`` under ``record``, called through its C address."""
    images = np.random.default_rng(2).integers(0, 256, (COUNT, 12, 15, 3), dtype=np.uint8)
    scratch = np.empty_like(images)
    status = c_entry(augment_batch)(images.ctypes.data, scratch.ctypes.data, INDICES.ctypes.data, COUNT, 12, 15, 3,
                                    control.address, record.ctypes.data)
    assert status == COUNT
    return images


def erased(record: np.ndarray, control: ControlBlock) -> np.ndarray:
    """The float32 (COUNT, 3, 11, 13) batch after ``erase_batch`` under ``record``, called through its C address."""
    images = np.random.default_rng(3).normal(size=(COUNT, 3, 11, 13)).astype(np.float32)
    status = c_entry(erase_batch)(images.ctypes.data, INDICES.ctypes.data, COUNT, 3, 11, 13, control.address,
                                  record.ctypes.data)
    assert status == COUNT
    return images


@pytest.mark.parametrize("name", AUGMENT_SETTINGS.names)
def test_each_augment_field_changes_what_the_entry_point_writes(name):
    control = ControlBlock()
    base = augmented(make_record(AUGMENT_SETTINGS, **AUGMENT_BASE), control)
    np.testing.assert_array_equal(augmented(make_record(AUGMENT_SETTINGS, **AUGMENT_BASE), control), base)
    changed = make_record(AUGMENT_SETTINGS, **{**AUGMENT_BASE, name: AUGMENT_CHANGES[name]})
    assert not np.array_equal(augmented(changed, control), base)


@pytest.mark.parametrize("name", ERASE_SETTINGS.names)
def test_each_erase_field_changes_what_the_entry_point_writes(name):
    control = ControlBlock()
    base = erased(make_record(ERASE_SETTINGS, **ERASE_BASE), control)
    np.testing.assert_array_equal(erased(make_record(ERASE_SETTINGS, **ERASE_BASE), control), base)
    changed = make_record(ERASE_SETTINGS, **{**ERASE_BASE, name: ERASE_CHANGES[name]})
    assert not np.array_equal(erased(changed, control), base)


# ------------------------------------------------------------------------------- crop decoders and flips

@njit
def probe_crop(address):
    s = read_settings(address, CROP_RECORD)
    return (s.seed, s.kind, s.scale_low, s.scale_high, s.log_ratio_low, s.log_ratio_high, s.center_ratio,
            s.max_dct, s.exact, s.policy)


@njit
def probe_flip(address):
    s = read_settings(address, FLIP_RECORD)
    return s.seed, s.probability


def test_every_crop_and_flip_field_is_read_under_its_own_name():
    import math

    from ffmix.ops.decode_kernels import CROP_RANDOM, STAND_IN_POLICY
    from ffmix.ops.decoders import RandomFlip, RandomResizedCropDecoder

    decoder = RandomResizedCropDecoder((24, 20), seed=11, scale=(0.3, 0.9), ratio=(0.6, 1.7), dct_scaling=True,
                                       exact_decode=True, on_decode_error="skip")
    decoder.decode_report.has_label_side = True   # as make_loader's stand-in pipeline sets it
    decoder.metadata = np.zeros(0, [("mode", "<u1"), ("height", "<u4"), ("width", "<u4"), ("data_ptr", "<u8")])
    decoder.generate_code()                        # fills the record, as FFCV's compile does
    expected = (11, CROP_RANDOM, 0.3, 0.9, math.log(0.6), math.log(1.7), decoder._center_ratio, 8, 1, STAND_IN_POLICY)
    assert set(CROP_SETTINGS.names) == {"seed", "kind", "scale_low", "scale_high", "log_ratio_low", "log_ratio_high",
                                        "center_ratio", "max_dct", "exact", "policy"}
    assert probe_crop(decoder.crop_record.ctypes.data) == pytest.approx(expected)
    flip = RandomFlip(seed=13, probability=0.3)
    assert probe_flip(flip.flip_record.ctypes.data) == pytest.approx((13, 0.3))


@pytest.mark.parametrize("name, value", [("seed", 14), ("probability", 0.7)])
def test_each_flip_field_changes_what_the_kernel_writes(name, value):
    from ffmix.ops.control import ControlBlock
    from ffmix.ops.decode_kernels import flip_batch

    images = np.random.default_rng(2).integers(0, 256, (COUNT, 6, 9, 3), dtype=np.uint8)
    control = ControlBlock()

    def flipped(**fields) -> np.ndarray:
        record = make_record(FLIP_SETTINGS, **{"seed": 13, "probability": 0.3, **fields})
        out = images.copy()
        c_entry(flip_batch)(out.ctypes.data, INDICES.ctypes.data, COUNT, 6, 9, 3, control.address,
                            record.ctypes.data)
        return out

    base = flipped()
    assert not np.array_equal(base, images)
    assert not np.array_equal(flipped(**{name: value}), base)
