"""``make_loader`` end to end through real FFCV Loaders: images and labels agree, runs repeat bit for bit,
epochs differ, memory stays flat, bad input fails early with a message that says what to do.

Loaders compile Numba code (about a second each with a warm cache), so files and loaders are shared
through module-scoped fixtures.
"""
from __future__ import annotations

import gc
import os
import shutil
import threading
import warnings

import numpy as np
import psutil
import pytest
import torch

from ffmix import Mixing, make_loader
from ffmix.convert import convert_arrays
from ffmix.metadata import meta_path

HEIGHT, WIDTH = 12, 20   # not square, so a CutMix box transposed by mistake would show


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    # Each image says its class: class 0 all black, class 1 all white. The white fraction of a mixed image
    # is then exactly the weight of class 1 its target must carry.
    labels = rng.integers(0, 2, 160)
    labels[:2] = [0, 1]
    encoded = np.repeat((labels * 255).astype(np.uint8), HEIGHT * WIDTH * 3).reshape(-1, HEIGHT, WIDTH, 3)
    noise = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (64, 8, 8), dtype=np.uint8)
    paths = {"encoded": root / "encoded.beton", "noise": root / "noise.beton", "gray": root / "gray.beton"}
    convert_arrays(encoded, labels, paths["encoded"], class_names=["black", "white"])
    convert_arrays(noise, rng.integers(0, 10, 200), paths["noise"])
    convert_arrays(gray, rng.integers(0, 3, 64), paths["gray"])
    sizes = [rng.integers(0, 256, (10 + k, 14 + 2 * k, 3), dtype=np.uint8) for k in range(8)]
    paths["varied"] = root / "varied.beton"
    convert_arrays(sizes, np.arange(8) % 2, paths["varied"])
    return paths


def white_fraction(images: torch.Tensor) -> np.ndarray:
    return images.double().mean(dim=(1, 2, 3)).numpy() / 255.0


def class_one_weight(targets: torch.Tensor, smoothing: float) -> np.ndarray:
    return (targets[:, 1].double().numpy() - smoothing / 2) / (1 - smoothing)


def collect(loader, epochs=1):
    batches = []
    for _ in range(epochs):
        for images, targets in loader:
            batches.append((images.clone(), targets.clone() if torch.is_tensor(targets) else
                            tuple(t.clone() for t in targets)))
    return batches


# ------------------------------------------------------------------------------- images agree with labels

@pytest.mark.parametrize("options", [
    dict(mixup_alpha=0.4, mode="batch"),
    dict(cutmix_alpha=1.0, mode="elem"),
    dict(mixup_alpha=1.0, cutmix_alpha=1.0, mode="pair", label_smoothing=0.1, mix_prob=0.8),
], ids=["mixup-batch", "cutmix-elem", "both-pair-smoothed"])
def test_pixels_and_targets_carry_the_same_weights(files, options):
    loader = make_loader(files["encoded"], batch_size=32, num_workers=2, dtype=torch.uint8, normalize=False,
                         seed=3, **options)
    smoothing = options.get("label_smoothing", 0.0)
    mixed_any = False
    for images, targets in collect(loader, epochs=3):
        assert images.shape == (32, 3, HEIGHT, WIDTH) and targets.shape == (32, 2)
        np.testing.assert_allclose(targets.sum(dim=1).numpy(), 1.0, atol=1e-6)
        np.testing.assert_allclose(white_fraction(images), class_one_weight(targets, smoothing), atol=1 / 255)
        mixed_any |= bool(((targets[:, 1] > 0.06) & (targets[:, 1] < 0.94)).any())
    assert mixed_any, "the loader never mixed anything"


@pytest.mark.parametrize("channels_last", [False, True])
def test_float_pixels_carry_exactly_the_label_weight(files, channels_last):
    # Float output is mixed, converted and normalised in one pass without rounding to uint8 in between, so
    # the agreement is exact up to float32 arithmetic. mean 0, std 1 keeps pixels in [0, 1].
    loader = make_loader(files["encoded"], batch_size=32, num_workers=2, mixup_alpha=0.7, cutmix_alpha=1.0,
                         mode="elem", mean=(0, 0, 0), std=(1, 1, 1), channels_last=channels_last, seed=8)
    for images, targets in collect(loader, epochs=2):
        assert images.dtype == torch.float32 and images.shape == (32, 3, HEIGHT, WIDTH)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        assert images.is_contiguous(memory_format=memory_format)
        np.testing.assert_allclose(images.double().mean(dim=(1, 2, 3)).numpy(), targets[:, 1].numpy(), atol=1e-5)


def test_pair_targets_agree_with_the_pixels(files):
    loader = make_loader(files["encoded"], batch_size=32, num_workers=2, dtype=torch.uint8, normalize=False,
                         mixup_alpha=0.5, cutmix_alpha=1.0, mode="elem", targets="pair")
    for images, (y_a, y_b, lam) in collect(loader):
        assert y_a.dtype == y_b.dtype == torch.int64
        weight_of_white = lam.double() * (y_a == 1) + (1 - lam.double()) * (y_b == 1)
        np.testing.assert_allclose(white_fraction(images), weight_of_white.numpy(), atol=1 / 255)


# --------------------------------------------------------------------------------------------- determinism

@pytest.fixture(scope="module")
def mixed_runs(files):
    """Two epochs of the same settings read with one and with two worker threads."""
    runs = {}
    for workers in (1, 2):
        loader = make_loader(files["noise"], batch_size=50, num_workers=workers, dtype=torch.uint8,
                             normalize=False, mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem", seed=11)
        runs[workers] = collect(loader, epochs=2)
    return runs


def test_same_seed_same_batches_for_any_number_of_workers(mixed_runs):
    for (images_1, targets_1), (images_2, targets_2) in zip(mixed_runs[1], mixed_runs[2]):
        assert torch.equal(images_1, images_2) and torch.equal(targets_1, targets_2)


def test_epochs_differ(mixed_runs):
    first, second = mixed_runs[1][:4], mixed_runs[1][4:]
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_sequential_epochs_mix_differently_and_set_epoch_replays(files):
    loader = make_loader(files["noise"], batch_size=50, num_workers=2, dtype=torch.uint8, normalize=False,
                         mixup_alpha=0.4, cutmix_alpha=1.0, order="sequential", seed=5)
    epoch_0, epoch_1 = collect(loader), collect(loader)
    assert loader.epoch == 2
    assert not torch.equal(epoch_0[0][0], epoch_1[0][0])
    loader.set_epoch(1)
    replay = collect(loader)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch_1, replay))


def test_mixing_can_be_switched_off_without_rebuilding(files):
    loader = make_loader(files["noise"], batch_size=50, num_workers=2, dtype=torch.uint8, normalize=False,
                         mixup_alpha=0.4, cutmix_alpha=1.0, order="sequential", label_smoothing=0.1)
    plain = make_loader(files["noise"], batch_size=50, num_workers=2, dtype=torch.uint8, normalize=False,
                        order="sequential", targets="label")
    loader.mixing_enabled = False
    for (images, targets), (raw, labels) in zip(collect(loader), collect(plain)):
        assert torch.equal(images, raw)   # also: the op never wrote into the decoded images
        expected = torch.full((50, 10), 0.01)
        expected[torch.arange(50), labels] = 0.91
        torch.testing.assert_close(targets, expected)
    loader.mixing_enabled = True
    assert loader.mixing_enabled and not torch.equal(collect(loader)[0][0], collect(plain)[0][0])
    plain.mixing_enabled = True   # switched on, but with both alphas 0 there is nothing to mix: it says so
    assert plain.mixing_enabled is False


# ------------------------------------------------------------------------------------- what comes out

def test_float_output_is_normalised_nchw(files):
    loader = make_loader(files["noise"], batch_size=40, num_workers=2, order="sequential",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    raw = make_loader(files["noise"], batch_size=40, num_workers=2, order="sequential", dtype=torch.uint8,
                      normalize=False, targets="label")
    (images, targets), (pixels, labels) = collect(loader)[0], collect(raw)[0]
    assert images.dtype == torch.float32 and images.is_contiguous()
    torch.testing.assert_close(images, (pixels.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(targets, torch.nn.functional.one_hot(labels, 10).float())


def test_grayscale_files_give_one_channel(files):
    loader = make_loader(files["gray"], batch_size=16, num_workers=1, mixup_alpha=0.3, channels_last=True)
    images, targets = next(iter(loader))
    assert images.shape == (16, 1, 8, 8) and targets.shape == (16, 3)
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_images_of_varied_sizes_are_cropped_to_image_size(files):
    loader = make_loader(files["varied"], batch_size=4, num_workers=1, image_size=(9, 11), order="sequential",
                         dtype=torch.uint8, normalize=False, targets="label")
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 9, 11) and labels.tolist() == [0, 1, 0, 1]


# --------------------------------------------------------------------------------------------------- soak

def test_memory_and_threads_stay_flat_over_many_epochs(tmp_path):
    # 64 x 64 images: FFCV's per-epoch buffers are 5 x 50 x 12 KB = 3 MB, so a leak per iter() shows.
    path = tmp_path / "soak.beton"
    rng = np.random.default_rng(1)
    convert_arrays(rng.integers(0, 256, (150, 64, 64, 3), dtype=np.uint8), rng.integers(0, 4, 150), path)
    loader = make_loader(path, batch_size=50, num_workers=2, mixup_alpha=0.2, cutmix_alpha=1.0)
    process = psutil.Process()
    for epoch in range(30):
        for images, targets in loader:
            pass
        if epoch == 1:
            gc.collect()
            rss, threads = process.memory_info().rss, threading.active_count()
    gc.collect()
    assert threading.active_count() <= threads
    assert process.memory_info().rss - rss < 20 * 2**20


def test_a_failing_pipeline_raises_instead_of_hanging(files):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.transforms import ToTensor

    from ffmix.epochs import ResilientLoader as _Loader

    mixing = Mixing(mixup_alpha=0.5)
    broken = _Loader(str(files["encoded"]), batch_size=16, num_workers=1,
                     pipelines={"image": [SimpleRGBImageDecoder(), mixing.image_op(), ToTensor()],
                                "label": [IntDecoder(), mixing.label_op(num_classes=1), ToTensor()]})
    outcome = {}

    def consume():
        try:
            for _ in broken:
                pass
        except RuntimeError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the loader hung"
    assert "label is outside" in outcome["error"]


# ------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("options, error, message", [
    (dict(mixup_alpha=-1), ValueError, "mixup_alpha"),
    (dict(mix_prob=1.2), ValueError, "mix_prob"),
    (dict(mode="rows"), ValueError, "mode"),
    (dict(order="shuffled"), ValueError, "order"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=10_000), ValueError, "larger than"),
    (dict(targets="label", mixup_alpha=0.2), ValueError, "targets='label'"),
    (dict(targets="dense"), ValueError, "targets"),
    (dict(order="quasi_random", distributed=True), ValueError, "quasi_random"),
    (dict(distributed=True), ValueError, "init_process_group"),
    (dict(num_workers=0), ValueError, "num_workers"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(normalize=True, dtype=torch.uint8), ValueError, "floating dtype"),
    (dict(mean=(0.5,), std=(0.5,)), ValueError, "mean and std"),
    (dict(num_classes=3), ValueError, "num_classes=3"),
])
def test_bad_options_fail_before_any_work(files, options, error, message):
    settings = dict(batch_size=16, **options) if "batch_size" not in options else options
    with pytest.raises(error, match=message):
        make_loader(files["encoded"], **settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_is_refused(files):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        make_loader(files["encoded"], batch_size=16, device="cuda")


def test_missing_file_and_missing_metadata(files, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such .beton"):
        make_loader(tmp_path / "absent.beton", batch_size=4)
    bare = tmp_path / "bare.beton"
    shutil.copy(files["encoded"], bare)
    with pytest.raises(FileNotFoundError, match="no ffmix metadata"):
        make_loader(bare, batch_size=4)
    # A plain FFCV file is usable when the caller states the number of classes, and checked against it.
    with pytest.raises(ValueError, match=r"range over \[0, 1\].*1 classes"):
        make_loader(bare, batch_size=4, num_classes=1)


def test_truncated_or_corrupt_files_are_refused(files, tmp_path):
    content = files["encoded"].read_bytes()
    for name, data in [("truncated", content[: len(content) * 2 // 3]), ("garbage", os.urandom(4096))]:
        path = tmp_path / f"{name}.beton"
        path.write_bytes(data)
        shutil.copy(meta_path(files["encoded"]), meta_path(path))
        with pytest.raises(ValueError, match="truncated or corrupt|not a readable|does not belong"):
            make_loader(path, batch_size=4)


def test_varied_sizes_need_image_size(files):
    with pytest.raises(ValueError, match="vary in size"):
        make_loader(files["varied"], batch_size=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_arrive_on_the_gpu(files):
    loader = make_loader(files["encoded"], batch_size=32, device="cuda", mixup_alpha=0.4, cutmix_alpha=1.0,
                         dtype=torch.uint8, normalize=False)
    for images, targets in loader:
        assert images.is_cuda and targets.is_cuda
        np.testing.assert_allclose(white_fraction(images.cpu()), class_one_weight(targets.cpu(), 0.0), atol=1 / 255)


def test_an_image_size_whose_buffers_do_not_fit_is_refused_before_allocating(files, monkeypatch):
    """image_size=4000 (or 100000) was killed for memory with no message; the buffers are estimated first."""
    import ffmix.system
    monkeypatch.setattr(ffmix.system, "available_memory", lambda: 8 * 2 ** 30)
    for size, batch in [(100000, 2), (4000, 16)]:
        with pytest.raises(ValueError, match=rf"batches of {batch} images of {size}x{size} .* would take about "
                                             r"[\d,.]+ GiB of memory, but only 8.0 GiB is available") as caught:
            make_loader(files["noise"], batch_size=batch, image_size=size, mixup_alpha=0.5)
        assert "lower image_size=, batch_size= or batches_ahead=" in str(caught.value)
    # 16 images of 1000x1000 to float32: 5 slots x 16 x 15 MB = 1.1 GiB, within 80% of 8 GiB
    with make_loader(files["noise"], batch_size=16, image_size=1000, num_workers=1) as loader:
        assert loader.meta.num_samples == 200


def test_a_batch_of_one_asked_to_mix_is_said(files):
    """A batch of one has no partner to mix with: it came back unmixed without a word. Any batch size still
    works (test_core's tiny batches), so this is a warning."""
    from ffmix.errors import FfmixWarning
    with pytest.warns(FfmixWarning, match="batch_size=1 cannot mix"):
        make_loader(files["noise"], batch_size=1, mixup_alpha=0.4).close()
    with make_loader(files["noise"], batch_size=1, targets="label") as plain:  # unmixed: fine
        assert len(plain) == 200


def test_a_last_batch_of_one_image_is_announced(files):
    """200 samples: batch_size=199 leaves one image alone in the last batch, where it cannot be mixed."""
    with pytest.warns(Warning, match="last batch of each epoch holds one image"):
        make_loader(files["noise"], batch_size=199, mixup_alpha=0.5, drop_last=False, num_workers=1).close()
    for options in (dict(batch_size=199, drop_last=True, mixup_alpha=0.5), dict(batch_size=100, drop_last=False,
                    mixup_alpha=0.5), dict(batch_size=199, drop_last=False)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make_loader(files["noise"], num_workers=1, **options).close()
