"""Damaged JPEG payloads inside a .beton: never another image's pixels, always raised or stood in for.

The files hold black (class 0) and white (class 1) images, so a batch's pixels and targets agree exactly when
each image's mean brightness / 255 equals its target's weight on class 1: mixing, CutMix and stand-ins keep
that, a stand-in with the wrong label or a slot holding a stale image breaks it.
"""
from __future__ import annotations

import gc
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch

from ffmix import FfmixError, make_loader
from ffmix.convert import convert_arrays
from ffmix.errors import FfmixWarning
from ffmix.ffcv_compat import decodes_with_ffcv, field_table, open_reader
from ffmix.metadata import meta_path
from ffmix.ops.decode_kernels import (DECODE_FAILED, HEADER_MISMATCH, NO_DONOR, STAND_IN, STATUS, TABLE_COLUMNS,
                                      jpeg_header_size, stand_in_donors)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

COUNT, BATCH, SHAPE = 48, 8, (24, 32)
DAMAGE = ("flipped", "zeroed", "random", "other_size")


def payload(path, index):
    """(offset, size) of sample ``index``'s stored JPEG bytes in the file."""
    reader = open_reader(path)
    pointer = int(field_table(reader, "image")["data_ptr"][index])
    table = reader.alloc_table
    return pointer, int(table["size"][np.searchsorted(table["ptr"], pointer)])


def damaged(data: bytes, kind: str, rng) -> bytes:
    """``data`` (a JPEG) damaged in place, same length, in a way FFCV's own decoder reports (checked)."""
    size = len(data)
    for _ in range(100):
        out = bytearray(data)
        if kind == "flipped":          # a few bytes of the entropy-coded data inverted
            for position in rng.integers(size // 2, size - 2, 6):
                out[position] ^= 0xFF
        elif kind == "zeroed":         # the second half zeroed (as a cut-off copy leaves it)
            out[size // 2:] = bytes(size - size // 2)
        elif kind == "random":
            out[:] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        else:                          # a valid JPEG of another size: decodes cleanly, fewer pixels
            ok, other = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
            out[:] = other.tobytes().ljust(size, b"\0")[:size]
            return bytes(out)
        if not decodes_with_ffcv(bytes(out), *SHAPE):
            return bytes(out)
    raise AssertionError(f"no detectable damage of kind {kind}")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A clean file and its damaged copy, the damaged sample indices and their labels."""
    root = tmp_path_factory.mktemp("decode_errors")
    labels = np.tile([0, 1, 1, 0], COUNT // 4)
    images = np.repeat((labels * 255).astype(np.uint8), SHAPE[0] * SHAPE[1] * 3).reshape(COUNT, *SHAPE, 3)
    clean = root / "clean.beton"
    convert_arrays(images, labels, clean, write_mode="jpg", class_names=["black", "white"])
    broken = root / "damaged.beton"
    shutil.copy(clean, broken)
    shutil.copy(meta_path(clean), meta_path(broken))
    # one damaged sample in most batches, each after a sample of the other class (so a stand-in changes class)
    bad = {3: "flipped", 10: "zeroed", 17: "random", 26: "other_size", 33: "flipped", 41: "zeroed"}
    rng = np.random.default_rng(0)
    with open(broken, "r+b") as handle:
        for index, kind in bad.items():
            offset, size = payload(clean, index)
            handle.seek(offset)
            original = handle.read(size)
            handle.seek(offset)
            handle.write(damaged(original, kind, rng))
    return {"clean": clean, "broken": broken, "bad": sorted(bad), "labels": labels}


def churn():
    garbage = [np.full(4096 * (k % 7 + 1), k, np.uint8) for k in range(200)]
    del garbage
    gc.collect()


def batches(loader):
    out = []
    for images, targets in loader:
        out.append((images.clone(), targets.clone()))
        churn()
    return out


def loader_for(path, *, workers, dtype, mixing, policy, image_size=None, order="sequential"):
    mix = dict(mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem") if mixing else {}
    return make_loader(path, batch_size=BATCH, num_workers=workers, dtype=dtype, normalize=False,
                       order=order, image_size=image_size, on_decode_error=policy, **mix)


def white_share(images):
    """Each image's mean brightness / 255, from (N, C, H, W) uint8 or 0..255 floats."""
    return images.float().mean(dim=(1, 2, 3)) / 255.0


COMBOS = [  # (workers, dtype, mixing, image_size): pairs of every setting, not their full product
    (1, torch.uint8, False, None), (2, torch.float32, True, None), (1, torch.float32, True, (16, 16)),
    (2, torch.uint8, True, (16, 16)), (2, torch.uint8, False, (20, 20)), (1, torch.uint8, True, None)]


@pytest.mark.parametrize("workers,dtype,mixing,image_size", COMBOS)
def test_skip_replaces_damaged_samples_and_pixels_and_targets_agree(files, workers, dtype, mixing, image_size):
    loader = loader_for(files["broken"], workers=workers, dtype=dtype, mixing=mixing, policy="skip",
                        image_size=image_size)
    for epoch in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = batches(loader)
        assert len(run) == COUNT // BATCH
        assert loader.decode_stand_ins == len(files["bad"])
        message = [str(w.message) for w in caught if issubclass(w.category, FfmixWarning)]
        assert len(message) == 1 and f"{len(files['bad'])} sample(s)" in message[0]
        assert "ffmix inspect --verify" in message[0] and str(files["bad"]) in message[0]
        images = torch.cat([b[0] for b in run])
        targets = torch.cat([b[1] for b in run])
        # pixels and targets agree everywhere (a stand-in carries its donor's label; no stale slot)
        tolerance = 0.02 if mixing else 0.005
        np.testing.assert_allclose(white_share(images).numpy(), targets[:, 1].numpy(), atol=tolerance)
        if not mixing:
            expected = files["labels"].copy()
            for index in files["bad"]:
                expected[index] = expected[index - 1]       # the donor: the sample before, same batch
            np.testing.assert_array_equal(targets.argmax(1).numpy(), expected)


@pytest.mark.parametrize("workers,dtype,mixing,image_size", COMBOS[:4])
def test_raise_names_the_sample_the_file_and_the_fix(files, workers, dtype, mixing, image_size):
    loader = loader_for(files["broken"], workers=workers, dtype=dtype, mixing=mixing, policy="raise",
                        image_size=image_size)
    seen = 0
    with pytest.raises(FfmixError) as failure:
        for _ in loader:
            seen += 1
            churn()
    text = str(failure.value)
    assert seen == files["bad"][0] // BATCH            # every batch before the first damaged one arrived
    assert f"sample {files['bad'][0]} could not be decoded" in text and str(files["broken"]) in text
    assert "ffmix inspect --verify" in text and "on_decode_error='skip'" in text
    # the loader can run again (the failed thread is gone), and fails again at the same sample
    with pytest.raises(FfmixError, match=f"sample {files['bad'][0]} "):
        for _ in loader:
            pass


def test_each_kind_of_damage_is_caught_with_its_reason(files):
    loader = make_loader(files["broken"], batch_size=1, order="sequential", num_workers=1, dtype=torch.uint8,
                         normalize=False, indices=[26], drop_last=False)
    with pytest.raises(FfmixError, match="header does not give the height and width"):
        list(loader)
    # flipped bytes and a zeroed half: libjpeg-turbo's error or warning; random bytes: no JPEG header at all
    reasons = {3: "libjpeg-turbo reported", 10: "libjpeg-turbo reported", 17: "header does not give"}
    for index, reason in reasons.items():
        loader = make_loader(files["broken"], batch_size=1, order="sequential", num_workers=1, dtype=torch.uint8,
                             normalize=False, indices=[index], drop_last=False)
        with pytest.raises(FfmixError, match=f"sample {index} could not be decoded: the JPEG's {reason}"
                           if reason.startswith("header") else f"sample {index} could not be decoded: {reason}"):
            list(loader)


def test_a_batch_with_no_decodable_sample_raises_even_when_skipping(files):
    loader = make_loader(files["broken"], batch_size=2, order="sequential", num_workers=1, dtype=torch.uint8,
                         normalize=False, indices=[3, 10], on_decode_error="skip")
    with pytest.raises(FfmixError, match="sample 3 could not be decoded"):
        list(loader)


def test_clean_file_gives_the_same_batches_under_both_policies(files):
    runs = [batches(loader_for(files["clean"], workers=2, dtype=torch.uint8, mixing=True, policy=policy))
            for policy in ("raise", "skip")]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))


def test_bad_policy_is_refused(files):
    with pytest.raises(FfmixError, match="on_decode_error must be one of"):
        make_loader(files["clean"], batch_size=BATCH, on_decode_error="ignore")


# ------------------------------------------------------------------------- kernels against references

def test_jpeg_header_size_matches_opencv_over_many_sizes():
    rng = np.random.default_rng(1)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 300, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        progressive = int(rng.integers(0, 2))
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])
        assert jpeg_header_size(data.ravel()) == cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2]
    assert jpeg_header_size(np.zeros(100, np.uint8)) == (-1, -1)
    assert jpeg_header_size(np.frombuffer(b"\xff\xd8\xff\xda\x00\x02", np.uint8)) == (-1, -1)


@pytest.mark.parametrize("seed", range(20))
def test_stand_in_donors_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 12))
    table = np.zeros((count, TABLE_COLUMNS), np.int64)
    table[:, STATUS] = np.where(rng.random(count) < 0.4, DECODE_FAILED, 0)
    decoded = [i for i in range(count) if table[i, STATUS] == 0]
    found = stand_in_donors(table)
    assert found == bool(decoded)
    if decoded:
        expected = [max([j for j in decoded if j <= i], default=max(decoded)) for i in range(count)]
        np.testing.assert_array_equal(table[:, STAND_IN], expected)
    assert NO_DONOR not in table[:, STAND_IN] or not decoded
    assert HEADER_MISMATCH != DECODE_FAILED


def test_inspect_verify_lists_every_damaged_sample_and_fails(files, capsys):
    from ffmix import cli
    from ffmix.verify import verify_beton

    bad = verify_beton(files["broken"], progress=False)
    assert [b.index for b in bad] == files["bad"]
    assert [b.label for b in bad] == [int(files["labels"][i]) for i in files["bad"]]
    assert "header does not give" in bad[files["bad"].index(26)].reason
    assert cli.main(["inspect", "--verify", str(files["broken"])]) == 1
    out = capsys.readouterr().out
    assert f"{len(files['bad'])} of {COUNT} images" in out and "ffmix convert" in out
    assert cli.main(["inspect", "--verify", str(files["clean"])]) == 0
    assert f"all {COUNT} images" in capsys.readouterr().out


def test_skip_with_plain_labels_gives_stand_ins_their_donors_labels(files):
    # the evaluation loader of `ffmix train --on-decode-error skip`: int64 labels, no label op
    loader = make_loader(files["broken"], batch_size=BATCH, order="sequential", targets="label", num_workers=2,
                         dtype=torch.float32, normalize=False, on_decode_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FfmixWarning)
        run = batches(loader)
    images, labels = torch.cat([b[0] for b in run]), torch.cat([b[1] for b in run])
    expected = files["labels"].copy()
    for index in files["bad"]:
        expected[index] = expected[index - 1]
    np.testing.assert_array_equal(labels.numpy(), expected)
    np.testing.assert_allclose(white_share(images).numpy(), expected, atol=0.005)
    assert loader.decode_stand_ins == len(files["bad"])
