"""The core's promises under stress: every address compiled code reads stays valid (allocation churn and
``gc.collect()`` between batches), Python's changes reach a pipeline only between epochs, batches live as
long as documented, abandoned epochs stop their threads, and kernels stay inside their buffers.

The float-path regression this file guards against: the normalisation constants the compiled code read by
address were replaced when FFCV re-declared the op while allocating, so from then on it read freed memory.
Numpy recycles freed small buffers by size, so churn of small float32 arrays overwrites exactly that memory.
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from ffmix import Mixing, make_loader
from ffmix.convert import convert_arrays
from ffmix.errors import FfmixError
from ffmix.ops.kernels import mix_images, mix_images_planar, mix_normalize, mix_normalize_planar, mix_planes
from ffmix.ops.params import draw_mix_params
from ffmix.ops.reference import (mix_images_planar_reference, mix_images_reference, mix_normalize_planar_reference,
                                  mix_normalize_reference, mix_planes_reference)
from ffmix.ops.rng import batch_key

REPO = Path(__file__).resolve().parents[1]
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 24


def churn(keep: list) -> None:
    """Small allocations of the sizes the op's own constants had (1-3 float32), then a collection."""
    for size in range(1, 9):
        for _ in range(40):
            keep.append(np.full(size % 4 + 1, 1e6, np.float32))
    del keep[:-64]
    gc.collect()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("core")
    rng = np.random.default_rng(5)
    paths = {"rgb": root / "rgb.beton", "gray": root / "gray.beton", "odd": root / "odd.beton"}
    convert_arrays(rng.integers(0, 256, (120, 10, 14, 3), dtype=np.uint8), rng.integers(0, 4, 120), paths["rgb"])
    convert_arrays(rng.integers(0, 256, (72, 9, 7), dtype=np.uint8), rng.integers(0, 3, 72), paths["gray"])
    convert_arrays(rng.integers(0, 256, (9, 5, 3, 3), dtype=np.uint8), rng.integers(0, 3, 9), paths["odd"])
    return paths


def raw_loader(path, **options):
    """Unmixed uint8, sequential: the decoded pixels of each batch, the input every reference starts from."""
    return make_loader(path, batch_size=options.pop("batch_size", BATCH), order="sequential", num_workers=2,
                       dtype=torch.uint8, normalize=False, **options)


def normalised(uint8_nchw: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (uint8_nchw.float() / 255.0 - mean_t) / std_t


# ----------------------------------------------------------------------------------- the float-path regression

@pytest.mark.parametrize("name, channels_last", [("rgb", False), ("rgb", True), ("gray", False), ("gray", True)])
def test_float_output_equals_normalised_uint8_under_allocation_churn(files, name, channels_last):
    path = files[name]
    channels = 3 if name == "rgb" else 1
    mean, std = (RGB_MEAN, RGB_STD) if channels == 3 else ((0.5,), (0.5,))
    floats = make_loader(path, batch_size=BATCH, order="sequential", num_workers=2, channels_last=channels_last)
    raws = raw_loader(path)
    keep: list = []
    batches = 0
    for _ in range(2):   # a second epoch: FFCV re-declares the ops whenever it allocates
        # two loaders in turn, as a training loop with a validation loader does
        for (images, _), (raw, _) in zip(floats, raws):
            churn(keep)
            expected = normalised(raw.contiguous(), mean, std)
            assert images.shape == expected.shape
            if channels_last:
                assert images.is_contiguous(memory_format=torch.channels_last) or channels == 1
            torch.testing.assert_close(images, expected, rtol=0, atol=2e-5)
            batches += 1
    assert batches == 2 * (len(floats))


@pytest.fixture(scope="module")
def mixed_float(files):
    loader = make_loader(files["rgb"], batch_size=BATCH, order="sequential", num_workers=2, seed=3,
                         mixup_alpha=0.7, cutmix_alpha=1.0, mode="elem", mix_prob=0.9)
    return loader


def expected_mixed_float(raw: torch.Tensor, indices: np.ndarray, seed: int, epoch: int, *, mixup_alpha=0.7,
                         cutmix_alpha=1.0, mix_prob=0.9, mode="elem", lam_range=(0.0, 1.0)):
    images = raw.permute(0, 2, 3, 1).contiguous().numpy()   # the decoded NHWC bytes
    count, height, width, _ = images.shape
    key = np.uint64(batch_key(seed, epoch, indices.astype(np.uint64)))
    settings = Mixing(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, mode=mode,
                      lam_range=lam_range).settings_record((height, width))[0]
    partner, weight, box, lam = draw_mix_params(key, count, settings)
    scale = 1.0 / (255.0 * np.asarray(RGB_STD))
    shift = -np.asarray(RGB_MEAN) / np.asarray(RGB_STD)
    return (mix_normalize_reference(images, partner, weight, box, scale.astype(np.float32),
                                    shift.astype(np.float32), False), partner, lam)


def test_mixed_float_batches_equal_the_numpy_reference_over_many_epochs(files, mixed_float):
    """Each epoch draws every batch's parameters from a new key: 4 epochs x 5 batches = 20 keys."""
    raws = [raw.clone() for raw, _ in raw_loader(files["rgb"])]
    keep: list = []
    for epoch in range(4):
        mixed_float.set_epoch(epoch)
        for position, (images, targets) in enumerate(mixed_float):
            churn(keep)
            indices = np.arange(position * BATCH, (position + 1) * BATCH)
            expected, _, _ = expected_mixed_float(raws[position], indices, seed=3, epoch=epoch)
            np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=3e-5)
            np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, atol=1e-6)


# ------------------------------------------------------------------------ changes reach a pipeline between epochs

def test_toggling_mixing_and_epoch_mid_epoch_never_splits_a_batch(files, mixed_float):
    """A thread flips ``mixing_enabled`` and seeks epochs as fast as it can while batches are read: each
    epoch's batches all follow the values committed when that epoch started, pixels and targets alike."""
    raws = [raw.clone() for raw, _ in raw_loader(files["rgb"])]
    stop = threading.Event()

    def meddle():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            mixed_float.mixing_enabled = bool(rng.integers(2))
            mixed_float.set_epoch(int(rng.integers(0, 4)))
            time.sleep(0.0005)

    meddler = threading.Thread(target=meddle)
    meddler.start()
    try:
        checked = 0
        for _ in range(8):
            iterator = iter(mixed_float)
            epoch, enabled = mixed_float.mixing.control.committed_epoch, mixed_float.mixing.control.committed_enabled
            for position, (images, targets) in enumerate(iterator):
                indices = np.arange(position * BATCH, (position + 1) * BATCH)
                if enabled:
                    expected, _, _ = expected_mixed_float(raws[position], indices, seed=3, epoch=epoch)
                else:
                    expected = normalised(raws[position], RGB_MEAN, RGB_STD).numpy()
                    assert torch.all(targets.max(1).values == 1.0), "mixing off: one-hot targets"
                np.testing.assert_allclose(images.numpy(), expected, rtol=0, atol=3e-5)
                checked += 1
    finally:
        stop.set()
        meddler.join()
    assert checked == 8 * len(mixed_float)
    mixed_float.mixing_enabled = True


def test_a_change_takes_effect_at_the_next_iter(files, mixed_float):
    mixed_float.set_epoch(0)
    mixed_float.mixing_enabled = True
    iterator = iter(mixed_float)
    next(iterator)
    mixed_float.mixing_enabled = False               # not for this epoch ...
    still_mixed = [bool((targets.max(1).values < 1.0).any()) for _, targets in iterator]
    assert all(still_mixed) and len(still_mixed) == len(mixed_float) - 1
    for _, targets in mixed_float:                   # ... but from the next one on
        assert torch.all(targets.max(1).values == 1.0)
    mixed_float.mixing_enabled = True


def test_one_mixing_for_two_image_sizes_is_refused(files):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader
    from ffcv.transforms import ToTensor

    mixing = Mixing(cutmix_alpha=1.0, image_size=(10, 14))
    pipelines = {"image": [SimpleRGBImageDecoder(), mixing.image_op(), ToTensor()],
                 "label": [IntDecoder(), mixing.label_op(num_classes=3), ToTensor()]}
    with pytest.raises(FfmixError, match="built for 10x14 images but the image pipeline gives 9x7"):
        Loader(str(files["gray"]), batch_size=8, num_workers=1, pipelines=pipelines)
    for build_op in (lambda mixing: mixing.image_op(), lambda mixing: mixing.label_op(num_classes=3)):
        with pytest.raises(FfmixError, match="CutMix needs the image size"):
            build_op(Mixing(cutmix_alpha=1.0))


def test_pair_targets_with_label_smoothing_are_refused(files):
    with pytest.raises(FfmixError, match="cannot carry label_smoothing"):
        make_loader(files["rgb"], batch_size=8, mixup_alpha=0.2, label_smoothing=0.1, targets="pair")
    with pytest.raises(FfmixError, match="cannot carry label_smoothing"):
        Mixing(mixup_alpha=0.2, label_smoothing=0.1).label_op(num_classes=3, targets="pair")


# ------------------------------------------------------------------------------------------- batch lifetime

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, GPU])])
def test_a_held_batch_stays_valid_until_the_next_is_requested_across_epochs(files, device):
    """Checked just before each request: after it, the batch's slot may be refilled (as documented)."""
    loader = make_loader(files["rgb"], batch_size=BATCH, num_workers=2, batches_ahead=2, mixup_alpha=0.5, seed=1,
                         device=device)
    held = None
    for _ in range(3):
        iterator = iter(loader)   # a new epoch starts while the last batch of the previous one is held
        while True:
            time.sleep(0.05)      # the thread runs as far ahead as its ring allows
            if held is not None:
                if device == "cuda":
                    torch.cuda.synchronize()
                assert torch.equal(held[0], held[2]) and torch.equal(held[1], held[3]), \
                    "a batch changed before the next one was requested"
            try:
                images, targets = next(iterator)
            except StopIteration:
                break
            held = (images, targets, images.clone(), targets.clone())
    loader.close()


def test_abandoned_epochs_stop_their_threads_and_memory_stays_flat(files):
    loader = make_loader(files["rgb"], batch_size=8, num_workers=2, mixup_alpha=0.5, cutmix_alpha=1.0)
    process = psutil.Process()

    def abandon(how):
        try:
            for position, _ in enumerate(loader):
                if position == 2:
                    if how == "raise":
                        raise KeyError("from the training loop")
                    break
        except KeyError:
            pass

    for how in ("break", "raise"):
        abandon(how)
    gc.collect()
    rss_before, threads_before = process.memory_info().rss, threading.active_count()
    for round_number in range(40):
        abandon("break" if round_number % 2 else "raise")
        assert not any(t.name == "ffmix-epoch" and t.is_alive() for t in threading.enumerate()), \
            "an abandoned epoch's thread still runs"
    gc.collect()
    assert threading.active_count() <= threads_before
    assert process.memory_info().rss - rss_before < 30 * 2**20
    assert sum(1 for _ in loader) == len(loader), "a full epoch still follows"


def test_close_and_context_manager_stop_a_running_epoch(files):
    with make_loader(files["rgb"], batch_size=8, num_workers=2) as loader:
        iterator = iter(loader)
        next(iterator)
        assert any(t.name == "ffmix-epoch" and t.is_alive() for t in threading.enumerate())
    assert not any(t.name == "ffmix-epoch" and t.is_alive() for t in threading.enumerate())
    assert sum(1 for _ in loader) == len(loader)


EXIT_ENDINGS = [(1, "pass"), (3, "pass"), (2, "sys.exit(0)"), (2, "del iterator")]

# One program per ending, forked from a parent that imported torch and ffmix and made (compiled) the loader
# once: most of a program's time, which four separate programs paid four times. No thread runs before the
# fork (the parent starts no epoch), so each child is a program of its own from there: it starts its epoch,
# reads its batches, runs its ending at module level and exits by itself, its output in its own files.
EXIT_MID_EPOCH = """
import json, os, sys, threading, torch, ffmix
beton, folder = sys.argv[1:3]
endings = json.loads(sys.argv[3])
loader = ffmix.make_loader(beton, batch_size=8, num_workers=2, mixup_alpha=0.5, cutmix_alpha=1.0,
                           batches_ahead=3)
assert threading.active_count() == 1, "a thread before the fork"
children = []
for index, (batches, ending) in enumerate(endings):
    pid = os.fork()
    if pid == 0:
        for stream, name in ((1, "out"), (2, "err")):
            os.dup2(os.open(f"{folder}/{index}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream)
        break
    children.append(pid)
else:   # the parent: each child's exit code, then nothing else
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print(json.dumps(codes), flush=True)
    sys.exit(0)
iterator = iter(loader)
for _ in range(batches):
    images, targets = next(iterator)
print("left", flush=True)
exec(ending)
"""


def test_a_program_that_exits_mid_epoch_exits_cleanly(files, tmp_path):
    """Each ending in its own program (a forked child); they run side by side and are checked one by one
    afterwards, each failure naming its ending."""
    program = subprocess.run([sys.executable, "-c", EXIT_MID_EPOCH, str(files["rgb"]), str(tmp_path),
                              json.dumps(EXIT_ENDINGS)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert program.returncode == 0, program.stderr
    codes = json.loads(program.stdout.strip().splitlines()[-1])
    assert len(codes) == len(EXIT_ENDINGS), program.stdout
    for index, ((batches, ending), code) in enumerate(zip(EXIT_ENDINGS, codes)):
        out, err = (tmp_path / f"{index}.out").read_text(), (tmp_path / f"{index}.err").read_text()
        case = f"{batches} batch(es) then {ending!r}"
        assert code == 0, (case, err)
        assert out.strip() == "left", (case, out)
        assert "Traceback" not in err and "Exception" not in err, (case, err)


# ---------------------------------------------------------------------------------- kernels stay in bounds

EDGE_BOXES = [(0, 1, 0, 1), (0, 5, 0, 7), (4, 5, 6, 7), (0, 5, 6, 7), (4, 5, 0, 1), (2, 3, 0, 7), (0, 5, 3, 4),
              (-3, 2, -5, 2), (3, 99, 4, 99), (-10, 99, -10, 99), (3, 3, 2, 6), (4, 1, 5, 2)]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_kernels_match_the_reference_for_boxes_at_every_edge(count):
    rng = np.random.default_rng(count)
    height, width, channels = 5, 7, 3
    for box_row in EDGE_BOXES:
        images = rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)
        partner = np.roll(np.arange(count), 1)
        weight = np.full(count, 256, np.int32)
        box = np.tile(np.asarray(box_row, np.int32), (count, 1))
        # guard bands around the output catch any write outside it
        guarded = np.full((count + 2, height, width, channels), 7, np.uint8)
        mix_images(images, guarded[1:-1], partner, weight, box)
        assert (guarded[0] == 7).all() and (guarded[-1] == 7).all()
        np.testing.assert_array_equal(guarded[1:-1], mix_images_reference(images, partner, weight, box))
        scale, shift = np.full(channels, 1 / 255, np.float32), np.zeros(channels, np.float32)
        for channels_last in (False, True):
            shape = (count + 2, height, width, channels) if channels_last else (count + 2, channels, height, width)
            floats = np.full(shape, -9.0, np.float32)
            mix_normalize(images, floats[1:-1], partner, weight, box, scale, shift, channels_last)
            assert (floats[0] == -9).all() and (floats[-1] == -9).all()
            np.testing.assert_allclose(floats[1:-1], mix_normalize_reference(images, partner, weight, box, scale,
                                                                             shift, channels_last), atol=1e-6)
        # the planar (N, C, H, W) kernels MixCollate uses
        planes = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        for kernel, source, reference in ((mix_images_planar, images, mix_images_planar_reference),
                                          (mix_planes, planes, mix_planes_reference)):
            guarded = np.full((count + 2, channels, height, width), 7, np.uint8)
            kernel(source, guarded[1:-1], partner, weight, box)
            assert (guarded[0] == 7).all() and (guarded[-1] == 7).all()
            np.testing.assert_array_equal(guarded[1:-1], reference(source, partner, weight, box))
        floats = np.full((count + 2, channels, height, width), -9.0, np.float32)
        mix_normalize_planar(planes, floats[1:-1], partner, weight, box, scale, shift)
        assert (floats[0] == -9).all() and (floats[-1] == -9).all()
        np.testing.assert_allclose(floats[1:-1], mix_normalize_planar_reference(planes, partner, weight, box, scale,
                                                                                shift), atol=1e-6)


def test_kernels_refuse_partners_outside_the_batch():
    images = np.zeros((2, 3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="outside the batch"):
        mix_images(images, np.empty_like(images), np.array([1, 2]), np.full(2, 128, np.int32),
                   np.zeros((2, 4), np.int32))


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_tiny_and_odd_batches_of_odd_sized_images(files, batch_size):
    loader = make_loader(files["odd"], batch_size=batch_size, order="sequential", num_workers=2, seed=2,
                         mixup_alpha=0.7, cutmix_alpha=1.0, mode="elem", mix_prob=0.9, drop_last=False)
    raws = [raw.clone() for raw, _ in raw_loader(files["odd"], batch_size=batch_size, drop_last=False)]
    keep: list = []
    for position, (images, targets) in enumerate(loader):
        churn(keep)
        count = images.shape[0]
        indices = np.arange(position * batch_size, position * batch_size + count)
        expected, partner, _ = expected_mixed_float(raws[position], indices, seed=2, epoch=0)
        np.testing.assert_allclose(images.numpy(), expected, atol=3e-5)
        np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, atol=1e-6)
        if count >= 2:
            assert (partner != np.arange(count)).all(), "nobody is their own partner"
    assert position == len(loader) - 1


# --------------------------------------------------------------------------------------- orders (issue 9)

def test_neighbouring_seeds_share_no_epoch_order(files):
    orders = {}
    for seed in (0, 1):
        loader = make_loader(files["rgb"], batch_size=BATCH, num_workers=1, seed=seed, targets="label")
        orders[seed] = []
        for epoch in range(6):
            loader.set_epoch(epoch)
            orders[seed].append(loader.ffcv_loader.next_traversal_order())
    for epoch_a in range(6):
        for epoch_b in range(6):
            assert not np.array_equal(orders[0][epoch_a], orders[1][epoch_b]), (epoch_a, epoch_b)


@pytest.mark.parametrize("samples, world_size", [(120, 2), (120, 7), (9, 2), (9, 4)])
def test_distributed_shares_are_disjoint_and_equal(files, monkeypatch, samples, world_size):
    from ffmix.epochs import ResilientLoader

    path = files["rgb"] if samples == 120 else files["odd"]
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: world_size)
    shares = []
    for rank in range(world_size):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
        loader = ResilientLoader(str(path), batch_size=1, num_workers=1, distributed=True, seed=4)
        shares.append(loader.next_traversal_order())
    per_rank = samples // world_size
    assert all(len(share) == per_rank for share in shares)
    everything = np.concatenate(shares)
    assert len(np.unique(everything)) == len(everything) == per_rank * world_size
