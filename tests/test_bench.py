"""``ffmix bench``: the quick run end to end (every row there, every rate positive, every path's output
checked), and the competitor implementations value for value, so none of them is fast because it does less.
No speed thresholds here: those are the benchmark's job, on a quiet machine."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import datagen
from ffmix import cli
from ffmix.errors import FfmixError
from ffmix.bench import alternatives, ops, registry, report, targets
from ffmix.bench.alternatives import (MixingCollate, TorchvisionCollate, check_batch, numpy_mixup_per_sample,
                                      torch_cutmix, torch_mixup)
from ffmix.normalization import RGB_MEAN, RGB_STD, default_mean_std

REPO = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT_S = 600


# ------------------------------------------------------------------------------- the quick run, once

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``ffmix bench --quick --json`` in a fresh process: (report dict, stdout)."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    plot = folder / "bench.png"
    done = subprocess.run([sys.executable, "-m", "ffmix.cli", "bench", "--quick", "--quiet", "--json", str(out),
                           "--plot", str(plot), "--work-dir", str(folder / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, plot


def test_quick_header_names_machine_and_versions(quick):
    result, stdout, _ = quick
    machine = result["machine"]
    assert machine["cpu"] and machine["cores"] >= 1
    for package in ("ffmix", "ffcv", "torch", "numba", "numpy"):
        assert machine["versions"][package]
    assert result["config"]["quick"] is True
    assert machine["cpu"] in stdout and "versions:" in stdout
    assert result["command"] == "ffmix bench --quick" and "command: ffmix bench --quick" in stdout


def test_quick_ops_has_every_implementation_at_both_shapes(quick):
    rows = quick[0]["results"]["ops"]
    for shape in ("64x64x64x3", "256x32x32x3"):
        present = {r["impl"] for r in rows if r["shape"] == shape}
        assert present == set(ops.IMPLEMENTATIONS), shape
    for row in rows:
        assert row["images_per_s"] > 0 and row["ms_per_batch"] > 0
        assert len(row["runs_s"]) >= 1 and all(s > 0 for s in row["runs_s"])
        assert row["check"]["ok"], (row["impl"], row["check"])
        assert math.isfinite(row["vs_ffmix"]) and math.isfinite(row["x_memcpy"])


def test_quick_augment_ops_time_every_op_and_match_torchvision(quick):
    from ffmix.ops.auto_augment_kernels import OP_NAMES
    rows = quick[0]["results"]["augment_ops"]
    assert [r["op"] for r in rows] == list(OP_NAMES) + ["RandAugment(2, 9) incl. copy"]
    for row in rows:
        assert row["check"]["ok"], row["op"]
        assert row["ffmix_ms"] > 0 and row["tv_image_ms"] > 0 and math.isfinite(row["x_tv_image"])
    assert "Augmentation ops" in quick[1]


def test_quick_e2e_has_every_pipeline_with_checked_output(quick):
    rows = quick[0]["results"]["e2e"]
    wanted = {p for name in {r["dataset"] for r in rows} for p in registry.pipelines_for(name, registry.PIPELINES)}
    assert {r["pipeline"] for r in rows} == wanted | {"memcpy", "memcpy_uint8"}
    for row in rows:
        assert row["images_per_s"] > 0, row["pipeline"]
        if row["pipeline"].startswith("memcpy"):
            assert row["threads"] == quick[0]["config"]["workers"]
            continue
        assert row["check"]["values"] == "checked", row["pipeline"]
        assert row["warmup_s"] > 0 and len(row["runs_s"]) == quick[0]["config"]["runs"]
        record = registry.PIPELINES[row["pipeline"]]
        assert (row["label"], row["output"], row["note"]) == (record.label, record.output, record.note)
        if row["pipeline"] == "ffcv_mixup":
            # FFCV 1.0.2's MixupToOneHot overwrites same-class rows; that is the only problem tolerated
            assert all("do not sum to one" in p for p in row["check"]["problems"]), row["check"]
            assert row["note"]
        else:
            assert row["check"]["ok"], (row["pipeline"], row["check"])


def test_quick_scaling_and_targets(quick):
    result = quick[0]
    scaling = result["results"]["scaling"]
    grid = [r for r in scaling if r["kind"] == "workers_batch"]
    sizes = [r for r in scaling if r["kind"] == "dataset_size"]
    assert grid and all(r["images_per_s"] > 0 for r in grid)
    assert {r["workers"] for r in grid} >= {1}
    assert sizes and all(r["epoch_s_large"] > 0 and r["epoch_s_small"] > 0 for r in sizes)
    assert "startup" in result["skipped"]
    assert result["targets"], "the targets whose rows ran are evaluated"
    for target in result["targets"]:
        assert target["measured"] > 0 and isinstance(target["met"], bool) and target["quick"]


def test_quick_prints_tables_and_plot(quick):
    result, stdout, plot = quick
    assert "| pipeline" in stdout and "| implementation" in stdout and "Targets" in stdout
    _assert_plot_shows(result)
    from PIL import Image
    with Image.open(plot) as image:      # the file the run wrote is that figure: two panels at 110 dpi
        assert image.size == (round(13 * 110), round(2 * 5.2 * 110))


# ------------------------------------------------------------------------------ the competitors' maths

def _basis_images(count: int) -> np.ndarray:
    """float32 (count, 1, 1, count): image k is the unit vector e_k, so a blend of two images shows which two
    and with what weights (the pixel at k is image k's weight)."""
    return np.eye(count, dtype=np.float32).reshape(count, 1, 1, count)


def _blend_weights(mixed: np.ndarray):
    """For each row of a batch of blended basis images: (own weight, partner index, partner weight); the
    partner is the row itself when nothing else was blended in. Asserts every row is a convex combination of
    its own image and at most one other."""
    count = len(mixed)
    weights = mixed.reshape(count, count).astype(np.float64)
    own = weights[np.arange(count), np.arange(count)]
    others = weights.copy()
    others[np.arange(count), np.arange(count)] = 0.0
    assert (weights >= -1e-6).all() and np.allclose(weights.sum(1), 1.0, atol=1e-5), "not a convex combination"
    assert ((others > 1e-6).sum(1) <= 1).all(), "more than two images blended in one row"
    partner = np.where(others.max(1) > 1e-6, others.argmax(1), np.arange(count))
    return own, partner, 1.0 - own


def _check_mixup_batch(mixed, targets, labels, num_classes):
    """The properties every MixUp batch has, read from its basis-image pixels: a convex blend of the row's own
    image and one partner, the partners distinct (a permutation's), and the target row carrying the same
    weights as the pixels (own weight on the own label, the rest on the partner's label), summing to one."""
    own, partner, partner_weight = _blend_weights(np.asarray(mixed))
    blended = partner != np.arange(len(labels))
    assert len(set(partner[blended].tolist())) == int(blended.sum()), "a sample is the partner of two rows"
    expected = np.zeros((len(labels), num_classes))
    np.add.at(expected, (np.arange(len(labels)), labels), own)
    np.add.at(expected, (np.arange(len(labels)), labels[partner]), partner_weight)
    np.testing.assert_allclose(np.asarray(targets, np.float64), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets, np.float64).sum(1), 1.0, atol=1e-5)
    return own


def _beta_moments_match(lams: np.ndarray, alpha: float) -> None:
    """λ pooled over many batches has Beta(α, α)'s mean 1/2 and variance 1 / (4 (2α + 1)) (within 4 standard
    errors, so a wrong α or a uniform draw fails, a true Beta passes)."""
    count = len(lams)
    variance = 1.0 / (4.0 * (2.0 * alpha + 1.0))
    assert abs(lams.mean() - 0.5) < 4 * math.sqrt(variance / count), lams.mean()
    # the sample variance's standard error, from Beta(α, α)'s fourth central moment 3 / (16 (2α + 1) (2α + 3))
    fourth = 3.0 / (16.0 * (2.0 * alpha + 1.0) * (2.0 * alpha + 3.0))
    error = math.sqrt((fourth - variance ** 2) / count)
    assert abs(lams.var() - variance) < 4 * error, (lams.var(), variance)


@pytest.mark.parametrize("alpha", [0.4, 0.8])
def test_numpy_loop_blends_each_sample_with_one_partner_by_its_target_weights(alpha):
    count, num_classes = 12, 4
    images = _basis_images(count)
    lams = []
    for seed in range(60):
        labels = np.random.default_rng(seed).integers(0, num_classes, count)   # same-class partners included
        mixed, targets = numpy_mixup_per_sample(images, labels, num_classes, alpha, np.random.default_rng(seed))
        assert mixed.dtype == np.float32 and targets.dtype == np.float32
        own = _check_mixup_batch(mixed, targets, labels, num_classes)
        partner = _blend_weights(mixed)[1]
        lams.extend(own[partner != np.arange(count)])     # a row whose partner is itself shows no λ
    _beta_moments_match(np.array(lams), alpha)


@pytest.mark.parametrize("alpha", [0.4, 0.8])
def test_torch_mixup_blends_each_sample_with_one_partner_by_its_own_lambda(alpha):
    count, num_classes = 12, 4
    images = torch.from_numpy(_basis_images(count))
    lams = []
    for seed in range(60):
        torch.manual_seed(seed)
        labels = torch.randint(0, num_classes, (count,))
        mixed, targets = torch_mixup(images, labels, num_classes, alpha)
        assert mixed.dtype == torch.float32 and targets.dtype == torch.float32
        own = _check_mixup_batch(mixed.numpy(), targets.numpy(), labels.numpy(), num_classes)
        partner = _blend_weights(mixed.numpy())[1]
        drawn = own[partner != np.arange(count)]
        assert len(np.unique(np.round(drawn, 6))) == len(drawn), "λ is drawn per sample"
        lams.extend(drawn)
    _beta_moments_match(np.array(lams), alpha)


def test_mixup_property_checks_catch_a_wrong_blend():
    """The checks above fail on what a broken MixUp would give: targets of the other weight, three images in
    one row, or a weight that is not convex."""
    count, labels = 6, np.array([0, 1, 2, 3, 0, 1])
    images = _basis_images(count)
    mixed, targets = numpy_mixup_per_sample(images, labels, 4, 0.8, np.random.default_rng(1))
    swapped = targets[:, ::-1].copy()
    with pytest.raises(AssertionError):
        _check_mixup_batch(mixed, swapped, labels, 4)
    three = mixed.copy().reshape(count, count)
    three[0] = 0.0
    three[0, [0, 1, 2]] = [0.5, 0.25, 0.25]
    with pytest.raises(AssertionError):
        _blend_weights(three.reshape(mixed.shape))
    with pytest.raises(AssertionError):
        _blend_weights(mixed * 1.1)
    with pytest.raises(AssertionError):
        _beta_moments_match(np.random.default_rng(0).uniform(size=800), 0.4)   # uniform λ is not Beta(0.4, 0.4)
    with pytest.raises(AssertionError):
        _beta_moments_match(np.random.default_rng(0).beta(0.8, 0.8, size=800), 0.4)   # nor is Beta(0.8, 0.8)


def test_torch_cutmix_pastes_the_partners_box_and_weighs_by_area():
    images = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).view(4, 1, 8, 8)
    original = images.clone()
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    mixed, targets = torch_cutmix(images, labels, 4, 1.0)
    changed = (mixed != original).flatten(1).any(dim=1)            # samples whose partner is another one
    area = int((mixed != original).any(dim=0)[0].sum())              # one box for the whole batch
    assert changed.any() and 0 < area < 64
    own = targets[torch.arange(4), labels]
    assert torch.allclose(own[changed], torch.full((int(changed.sum()),), 1 - area / 64))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_collates_give_the_contract():
    samples = [(torch.rand(3, 6, 6), k % 5) for k in range(10)]
    for collate in (MixingCollate(5, 0.8, 1.0), TorchvisionCollate(5, 0.8, 1.0)):
        for _ in range(4):  # both branches (MixUp and CutMix) are drawn over a few calls
            images, targets = collate(samples)
            result = check_batch(images, targets, batch_size=10, channels=3, image_shape=(6, 6), num_classes=5,
                                 mixed=True)
            assert result["ok"], result


def test_check_batch_catches_what_would_make_a_path_look_faster():
    images = torch.zeros(4, 3, 2, 2)
    one_hot = torch.eye(4)
    assert check_batch(images, one_hot, batch_size=4, channels=3, image_shape=(2, 2), num_classes=4,
                       mixed=False)["ok"]
    unmixed = check_batch(images, one_hot, batch_size=4, channels=3, image_shape=(2, 2), num_classes=4, mixed=True)
    assert not unmixed["ok"] and "not mixed" in unmixed["problems"][0]
    ffcv_like = one_hot * 0.7
    ffcv_like[0, 1] = 0.3
    bad = check_batch(images, ffcv_like, batch_size=4, channels=3, image_shape=(2, 2), num_classes=4, mixed=True)
    assert bad["bad_rows"] == 3
    wrong_shape = check_batch(images[:, :1], one_hot, batch_size=4, channels=3, image_shape=(2, 2), num_classes=4,
                              mixed=False)
    assert not wrong_shape["ok"]


def test_ffcv_mixup_to_one_hot_drops_weight_for_same_class_partners():
    """Why the FFCV row is flagged: its MixupToOneHot assigns where it should add."""
    from ffcv.transforms.mixup import MixupToOneHot

    one_hotter = MixupToOneHot(3).generate_code()
    rows = torch.tensor([[1.0, 1.0, 0.7], [2.0, 0.0, 0.6]])  # (label, partner label, λ)
    targets = one_hotter(rows, torch.empty(2, 3))
    assert targets[0].sum().item() == pytest.approx(0.3)    # should be 1
    assert targets[1].sum().item() == pytest.approx(1.0)


def test_ops_check_needs_a_change_inside_the_input_range():
    images = np.random.default_rng(0).integers(10, 200, (6, 4, 4, 3), dtype=np.uint8)
    mixed = ((images.astype(np.uint16) + np.roll(images, 1, axis=0)) // 2).astype(np.uint8)
    assert ops.check_mixed(images, mixed)["ok"]
    assert not ops.check_mixed(images, images.copy())["ok"]
    assert not ops.check_mixed(images, np.full_like(images, 255))["ok"]
    assert not ops.check_mixed(images, mixed, targets=np.full((6, 10), 0.2))["ok"]


def test_jpeg_dataset_gives_normalised_crops(tmp_path):
    written = datagen.write_image_folder(tmp_path, ["a", "b"], per_class=2, sizes=[(40, 50), (36, 30)], ext=".jpg")
    files = [path for path, _, _ in written]
    labels = np.array([label for _, label, _ in written])
    dataset = alternatives.JpegFiles(files, labels, 24)
    image, label = dataset[3]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and label == 1
    assert image.min() < 0 < image.max()


def test_array_dataset_gray_and_rgb():
    gray = alternatives.ArrayImages(np.full((2, 5, 5), 255, np.uint8), np.array([0, 1]), channels=1)
    image, _ = gray[0]
    assert image.shape == (1, 5, 5) and torch.allclose(image, torch.ones(1, 5, 5))   # (1 - 0.5) / 0.5
    rgb = alternatives.ArrayImages(np.zeros((2, 5, 5, 3), np.uint8), np.array([0, 1]), channels=3)
    image, _ = rgb[1]
    assert image.shape == (3, 5, 5)
    expected = -torch.tensor(RGB_MEAN) / torch.tensor(RGB_STD)
    torch.testing.assert_close(image[:, 0, 0], expected)


# ----------------------------------------------------------------------------- registry and targets

def test_registry_says_where_each_pipeline_runs():
    every = list(registry.PIPELINES)
    assert len({registry.PIPELINES[k].label for k in every}) == len(every), "labels tell the rows apart"
    rgb, fmnist, jpeg = (set(registry.pipelines_for(name, every)) for name in ("rgb32", "fmnist", "jpeg224"))
    assert {"ffmix_mixup", "ffmix_uint8", "ffmix_uint8_off"} <= rgb and not {"ffcv_decode", "ffmix_decode"} & rgb
    assert {"ffmix_uint8", "ffmix_uint8_off"} <= fmnist and "ffmix_mixup" not in fmnist
    assert {"ffcv_decode", "ffmix_decode"} <= jpeg and not {"ffmix_mixup", "ffmix_uint8"} & jpeg
    assert registry.pipelines_for("rgb32-probe", every) == registry.pipelines_for("rgb32", every)
    assert registry.pipelines_for("rgb32", ["ffmix_off", "ffmix"]) == ["ffmix_off", "ffmix"]   # the order asked
    timm = registry.PIPELINES["timm_fast_collate"]
    assert (timm.output_on(torch.device("cpu")), timm.output_on(torch.device("cuda"))) == ("uint8", "float32")
    unmixed = {k for k in every if not registry.PIPELINES[k].mixed}
    assert unmixed == {"ffcv_plain", "ffmix_off", "ffmix_uint8_off", "ffcv_decode", "ffmix_decode",
                       "ffmix_decode_exact", "dali_decode", "decode_limit"}
    photos = set(registry.pipelines_for("photos", every))
    assert {"ffmix_uint8", "ffmix_uint8_off", "ffcv_decode", "dl_recipe", "decode_limit"} <= photos
    assert not {"dl_recipe", "decode_limit", "dali_decode"} & (jpeg | rgb)
    assert [k for k in every if registry.PIPELINES[k].limit] == ["decode_limit"]
    with pytest.raises(ValueError, match="output"):
        registry.Pipeline("bad", "bad", build=lambda *a, **k: None, output="float16")


class _ToyLoader:
    """Unmixed float batches of one dataset's shape: what a new peer's builder returns."""

    def __init__(self, dataset, batch_size):
        self.dataset, self.batch_size = dataset, batch_size

    def __len__(self):
        return self.dataset.count // self.batch_size

    def __iter__(self):
        height, width = self.dataset.image_shape
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            labels = torch.from_numpy(self.dataset.labels[start:start + self.batch_size]).long()
            yield (torch.zeros(self.batch_size, self.dataset.channels, height, width),
                   torch.nn.functional.one_hot(labels, self.dataset.num_classes).float())


class _Progress:
    def set_postfix_str(self, text):
        pass

    def update(self, steps):
        pass


def test_a_peer_added_to_the_registry_runs_end_to_end(monkeypatch, tmp_path):
    """Adding a pipeline is one record: the CLI accepts it, the e2e section builds, checks and times it, and
    its row carries the record's label, output and note."""
    import ffmix.bench as bench
    from ffmix.bench import e2e
    from ffmix.bench.data import BenchDataset, DatasetSpec

    built = []

    def build_toy(dataset, *, batch_size, workers, device, indices=None, seed=0):
        built.append((dataset.name, batch_size, workers))
        return _ToyLoader(dataset, batch_size)

    toy = registry.Pipeline("toy", "a toy peer, unmixed", build=build_toy, mixed=False, note="toy note",
                            datasets=frozenset({"tiny"}))
    monkeypatch.setitem(registry.PIPELINES, "toy", toy)
    settings = bench._settings(_parsed(["bench", "e2e", "--pipelines", "toy"]))
    assert settings["pipelines"] == ["toy"]
    dataset = BenchDataset(spec=DatasetSpec(name="tiny", title="tiny", count=64, size=(4, 4)),
                           beton=tmp_path / "unused.beton", labels=np.arange(64) % 4, class_names=list("abcd"),
                           image_shape=(4, 4))
    rows = e2e.run_e2e([dataset], pipelines=["toy"], batch_sizes={"tiny": 8}, workers=1, runs=2, min_run_s=0.0,
                       device=torch.device("cpu"), progress=_Progress())
    row = [r for r in rows if r["pipeline"] == "toy"][0]
    assert (row["label"], row["output"], row["note"]) == ("a toy peer, unmixed", "float32", "toy note")
    assert row["check"]["ok"] and row["images_per_s"] > 0 and len(row["runs_s"]) == 2
    assert built[0] == ("tiny", 8, 1)
    assert e2e.pipelines_for("rgb32", ["toy", "ffmix"]) == ["ffmix"]      # its datasets only


def test_every_target_compares_rows_that_exist():
    """A target names rows by key: each must be a row the section can produce (a typo would leave the target
    silently unevaluated)."""
    from ffmix.bench import collate, recipe, startup

    known = {"e2e": set(registry.PIPELINES) | {"memcpy", "memcpy_uint8"}, "ops": set(ops.IMPLEMENTATIONS),
             "startup": set(startup.LOADERS), "collate": set(collate.PATHS), "recipe": set(recipe.PIPELINES)}
    places = {"e2e": {"fmnist", "rgb32", "jpeg224", "photos", "photos160"}, "ops": {"imagenet", "cifar"},
              "startup": {"warm", "cold"}, "collate": set(collate.DATASETS), "recipe": {recipe.DATASET}}
    assert len({t.what for t in targets.TARGETS}) == len(targets.TARGETS), "each target's words are its name"
    for target in targets.TARGETS:
        rows = targets.COMPARED[target.section].rows
        assert {target.mine, target.other} <= known[rows], target
        assert target.where in places[rows], target
        if rows == "e2e":
            for key in (target.mine, target.other):
                assert registry.PIPELINES[key].runs_on(target.where), (target.what, key)
    with pytest.raises(ValueError, match="comparison"):
        targets.Target("x", section="e2e", where="rgb32", mine="ffmix", other="ffmix_off", comparison=">",
                       threshold=1.0)


def test_targets_give_the_kept_runs_verdicts():
    """Every kept run under docs/bench/ evaluated again with today's table: the runs of today's format give
    their kept targets exactly (ratio, threshold, met, failed checks); older runs agree on every target that
    kept its name."""
    kept = sorted((REPO / "docs" / "bench").glob("*.json"))
    assert kept
    by_name = {t.what: t for t in targets.TARGETS}
    for path in kept:
        run = json.loads(path.read_text())
        quick = bool(run.get("config", {}).get("quick", False))
        again = targets.evaluate_targets(run["results"], quick)
        if "command" in run:
            assert again == run["targets"], path.name
            continue
        again = {t["target"]: t for t in again}
        compared = [t for t in run["targets"] if t["target"] in by_name]
        assert compared, path.name
        for old in compared:
            new = again[old["target"]]
            assert {k: new[k] for k in old} == old, (path.name, old["target"])


def test_uint8_samples_hand_out_chw_from_either_layout():
    rng = np.random.default_rng(0)
    channels_last = rng.integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    channels_first = np.ascontiguousarray(channels_last.transpose(0, 3, 1, 2))
    labels = np.arange(5)
    laid_out = alternatives.Uint8Samples(channels_last, labels)
    as_is = alternatives.Uint8Samples(channels_first, labels, channels_first=True)
    for k in range(5):
        (a, label_a), (b, label_b) = laid_out[k], as_is[k]
        assert a.shape == (3, 4, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
        assert label_a == label_b == k
        assert np.shares_memory(b, channels_first)        # no work per sample when already CHW
    gray, _ = alternatives.Uint8Samples(channels_last[..., 0], labels)[2]
    np.testing.assert_array_equal(gray, channels_last[2, None, :, :, 0])
    with pytest.raises(FfmixError, match="channels_first"):
        alternatives.Uint8Samples(channels_last[..., 0], labels, channels_first=True)


# ------------------------------------------------------------------------------------- report, CLI

def _fake_results():
    e2e_rows = []
    for dataset in ("rgb32", "jpeg224"):
        for pipeline, rate in (("ffmix", 1000.0), ("ffmix_off", 1100.0), ("dl_collate", 40.0),
                               ("dl_torchvision", 60.0), ("ffcv_mixup", 300.0)):
            e2e_rows.append({"section": "e2e", "dataset": dataset, "dataset_title": f"{dataset}: x",
                             "pipeline": pipeline, "label": pipeline, "images_per_s": rate,
                             "ms_per_batch": 1.0, "vs_ffmix": rate / 1000, "x_memcpy": 2.0, "warmup_s": 1.0,
                             "batch_size": 8, "workers": 2, "device": "cpu", "check": {"ok": True}})
    ops_rows = [{"section": "ops", "shape": "8x4x4x3", "shape_role": "imagenet", "impl": impl, "label": impl,
                 "input": "uint8", "threads": 2, "images_per_s": rate, "ms_per_batch": ms, "vs_ffmix": 1.0,
                 "x_memcpy": 1.0, "check": {"ok": True}}
                for impl, rate, ms in (("ffmix", 900.0, 2.0), ("ffcv", 100.0, 18.0), ("torch", 30.0, 60.0),
                                       ("memcpy", 3000.0, 1.0))]
    startup_rows = [{"section": "startup", "loader": loader, "label": loader, "cache": "warm", "to_first_batch_s": s,
                     "ffmix_import_s": 0.0, "build_s": 0.1, "first_batch_s": s, "import_s": 1.0, "runs_s": [s],
                     "batch_size": 8, "workers": 2, "check": {"ok": True}}
                    for loader, s in (("ffmix", 3.0), ("ffcv_plain", 2.0))]
    return {"e2e": e2e_rows, "ops": ops_rows, "startup": startup_rows}


def test_targets_are_ratios_of_the_rows():
    evaluated = {t["target"]: t for t in targets.evaluate_targets(_fake_results(), quick=False)}
    collate = evaluated["end to end 32x32 raw: ffmix / DataLoader + collate_fn"]
    assert collate["measured"] == pytest.approx(25.0) and collate["met"]
    assert not evaluated["end to end 32x32 raw: ffmix / FFCV + its ImageMixup"]["met"]          # 3.33 < 4
    copy = evaluated["mixing alone, ImageNet batch: ffmix time / same-thread copy"]
    assert copy["measured"] == pytest.approx(2.0) and not copy["met"]                          # 2.0 > 1.5
    startup = evaluated["start-up, warm cache: ffmix first mixed batch / FFCV first unmixed batch"]
    assert startup["measured"] == pytest.approx(1.5) and startup["met"]
    assert "mixing alone, CIFAR batch: ffmix / FFCV ImageMixup" not in evaluated   # no such rows: not evaluated


def test_a_target_is_not_met_by_an_ffmix_row_that_failed_its_check():
    results = _fake_results()
    for row in results["e2e"]:
        if row["pipeline"] == "ffmix" and row["dataset"] == "rgb32":
            row["check"] = {"ok": False, "problems": ["probe: wrong values"]}
    evaluated = {t["target"]: t for t in targets.evaluate_targets(results, quick=False)}
    collate = evaluated["end to end 32x32 raw: ffmix / DataLoader + collate_fn"]
    assert collate["measured"] == pytest.approx(25.0) and not collate["met"] and collate["failed_check"] == ["ffmix"]
    assert "check failed: ffmix" in report.targets_text(list(evaluated.values()))


def _probe_batch(labels, levels, partner, lam, box=None):
    """A probe batch mixed by hand: constant-colour images of ``labels``, MixUp (λ) or a CutMix box."""
    count, channels = len(labels), levels.shape[1]
    own = np.broadcast_to(levels[labels][:, :, None, None], (count, channels, 8, 8)).astype(np.float64)
    other = own[partner]
    if box is None:
        images = lam[:, None, None, None] * own + (1 - lam[:, None, None, None]) * other
    else:
        y0, y1, x0, x1 = box
        images = own.copy()
        images[:, :, y0:y1, x0:x1] = other[:, :, y0:y1, x0:x1]
        lam = np.full(count, 1 - (y1 - y0) * (x1 - x0) / 64)
    targets = np.zeros((count, len(levels)))
    np.add.at(targets, (np.arange(count), labels), lam)
    np.add.at(targets, (np.arange(count), labels[partner]), 1 - lam)
    return torch.from_numpy(np.rint(images).astype(np.uint8)), torch.from_numpy(targets.astype(np.float32))


def test_value_check_passes_true_mixes_and_catches_wrong_weights():
    levels = alternatives.class_levels(4, 3)
    labels = np.array([0, 1, 2, 3, 1, 2])
    partner = np.array([5, 4, 3, 2, 1, 0])
    lam = np.array([0.3, 0.9, 0.5, 0.5, 0.9, 0.3])
    for box in (None, (2, 6, 1, 5)):
        images, targets = _probe_batch(labels, levels, partner, lam, box)
        assert alternatives.check_values(images, targets, levels=levels)["ok"]
        swapped = targets.clone()                  # the weights of the other partner: pixels and labels disagree
        swapped[0] = targets[5]
        bad = alternatives.check_values(images, swapped, levels=levels)
        assert not bad["ok"] and bad["worst"] > 5
    # normalised float: un-normalised with the path's mean and std before comparing
    images, targets = _probe_batch(labels, levels, partner, lam)
    mean, std = default_mean_std(3)
    floats = (images.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert alternatives.check_values(floats.float(), targets, levels=levels, mean=mean, std=std)["ok"]
    assert not alternatives.check_values(floats.float(), targets, levels=levels)["ok"]   # not un-normalised
    # a foreign colour (e.g. a wrong partner) is caught even where the mean happens to fit
    images, targets = _probe_batch(labels, levels, partner, np.ones(6))
    images[1, :, :4] = torch.from_numpy(levels[3] - 30).view(3, 1, 1).to(torch.uint8)
    images[1, :, 4:] = torch.from_numpy(levels[1] * 2 - (levels[3] - 30)).view(3, 1, 1).to(torch.uint8)
    assert not alternatives.check_values(images, targets, levels=levels)["ok"]


def test_timm_paths_give_the_contract_and_true_values():
    levels = alternatives.class_levels(5, 3)
    labels = np.arange(32) % 5
    images = np.broadcast_to(levels[labels][:, None, None, :], (32, 6, 6, 3)).astype(np.uint8).copy()
    args = alternatives.timm_mixup_args(5, 0.8, 1.0, 0.5, 0.0)
    mean, std = default_mean_std(3)
    unmixed = "no target row mixes two classes"
    np.random.seed(0)   # timm draws λ and MixUp-or-CutMix from NumPy's global generator
    for kind, source in (("fast_collate", alternatives.Uint8Samples(images, labels)),
                         ("mixup", alternatives.ArrayImages(images, labels, 3))):
        loader = alternatives.timm_loader(source, kind=kind, batch_size=8, workers=0, device=torch.device("cpu"),
                                          channels=3, mix_args=args)
        mixed_batches = 0
        for batch_images, targets in loader:
            raw = kind == "fast_collate"
            assert batch_images.dtype == (torch.uint8 if raw else torch.float32)
            report = check_batch(batch_images, targets, batch_size=8, channels=3, image_shape=(6, 6), num_classes=5,
                                 mixed=True, dtype=batch_images.dtype)
            # On 6x6 images a CutMix λ above 35/36 gives timm a box of no pixels, and the batch stays whole
            # (about one batch in 75): a batch may be unmixed, but not wrong, and most must be mixed.
            assert [p for p in report["problems"] if not p.startswith(unmixed)] == [], (kind, report)
            mixed_batches += report["ok"]
            result = alternatives.check_values(batch_images, targets, levels=levels, mean=None if raw else mean,
                                               std=None if raw else std)
            assert result["ok"], (kind, result)
        assert mixed_batches >= 3, (kind, mixed_batches)
    with pytest.raises(ValueError, match="even"):
        alternatives.timm_loader(source, kind="mixup", batch_size=7, workers=0, device=torch.device("cpu"),
                                 channels=3, mix_args=args)


@pytest.mark.skipif(not registry.PIPELINES["kornia_mix"].available(), reason="kornia is not installed (bench extra)")
def test_kornia_path_gives_the_contract_and_true_values():
    from torch.utils.data import default_collate

    levels = alternatives.class_levels(5, 3)
    labels = np.arange(32) % 5
    images = np.broadcast_to(levels[labels][:, None, None, :], (32, 6, 6, 3)).astype(np.uint8).copy()
    mean, std = default_mean_std(3)
    source = alternatives.ArrayImages(images, labels, 3)
    torch.manual_seed(0)
    for switch in (0.0, 1.0):          # MixUp only, CutMix only
        loader = alternatives.KorniaMixLoader(alternatives.dataloader(
            source, batch_size=8, workers=0, collate=default_collate, device=torch.device("cpu")), 5, switch)
        for batch_images, targets in loader:
            assert check_batch(batch_images, targets, batch_size=8, channels=3, image_shape=(6, 6), num_classes=5,
                               mixed=True)["ok"] or switch == 1.0   # a batch of tiny cuts may leave all rows whole
            result = alternatives.check_values(batch_images, targets, levels=levels, mean=mean, std=std)
            assert result["ok"], (switch, result)


def test_render_shows_every_section_and_the_verdicts():
    results = _fake_results()
    full = {"results": results, "targets": targets.evaluate_targets(results, quick=False), "skipped": {},
            "machine": {"date": "2026-01-01T00:00", "cpu": "Some CPU", "cores": 2, "memory_gib": 8, "gpu": None,
                        "os": "Linux", "load_average": [0.1, 0.1, 0.1], "versions": {"ffmix": "0.1.0"}},
            "config": {"quick": False, "sections": ["ops", "e2e", "startup"], "workers": 2, "device": "cpu",
                       "runs": 5, "min_run_s": 0.5}, "seconds": 1.0}
    text = report.render(full)
    assert "Some CPU" in text and "Start-up" in text and "MISSED" in text and "met" in text
    assert text.count("| pipeline") == 2   # one end-to-end table per dataset


def _bars(axis):
    """{bar label: [(x position, height), ...]} of one panel, read back from matplotlib's bar containers."""
    return {container.get_label(): [(patch.get_x() + patch.get_width() / 2, patch.get_height())
                                    for patch in container.patches] for container in axis.containers}


def _assert_plot_shows(full):
    """The figure of ``full`` shows what the rows say: per panel (e2e, then ops) a group per dataset or shape
    named below it, a bar per row at its group with the row's images/s as height, labelled with the row's
    label in the legend, on a log scale."""
    import matplotlib.pyplot as plt

    figure = report.plot_figure(full)
    try:
        results = full["results"]
        panels = [(name, results[name]) for name in ("e2e", "ops") if results.get(name)]
        assert len(figure.axes) == len(panels)
        for axis, (name, rows) in zip(figure.axes, panels):
            group_key, bar_key = ("dataset", "pipeline") if name == "e2e" else ("shape", "impl")
            groups = list(dict.fromkeys(r[group_key] for r in rows))
            ticks = [label.get_text() for label in axis.get_xticklabels()]
            if name == "e2e":
                titles = {r["dataset"]: r["dataset_title"].split(":")[0] for r in rows}
                assert ticks == [titles[g] for g in groups]
            else:
                assert ticks == [f"batch {g} uint8" for g in groups]
            assert axis.get_yscale() == "log"
            bars = _bars(axis)
            assert set(bars) == {r["label"] for r in rows}
            assert [t.get_text() for t in axis.get_legend().get_texts()] == list(bars)
            for row in rows:
                group = groups.index(row[group_key])
                placed = [height for x, height in bars[row["label"]] if abs(x - group) < 0.4]
                assert placed == [pytest.approx(row["images_per_s"])], (name, row[bar_key])
            assert sum(len(v) for v in bars.values()) == len(rows)
    finally:
        plt.close(figure)


def test_plot_shows_every_row_as_a_bar_of_its_rate(tmp_path):
    full = {"results": _fake_results(), "machine": {"date": "2026-01-01T00:00", "cpu": "cpu", "cores": 2},
            "config": {"workers": 2}}
    _assert_plot_shows(full)
    # the same rows on one panel only; a report without e2e or ops has nothing to plot
    _assert_plot_shows({**full, "results": {"e2e": full["results"]["e2e"]}})
    with pytest.raises(FfmixError, match="nothing to plot"):
        report.plot_figure({**full, "results": {"startup": full["results"]["startup"]}})
    report.write_plot(full, tmp_path / "p.png")
    from PIL import Image
    with Image.open(tmp_path / "p.png") as image:
        assert image.size == (round(13 * 110), round(2 * 5.2 * 110))
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]        # written atomically: no temporary left


def _parsed(argv):
    return cli.build_parser(argv).parse_args(argv)


def test_command_line_names_what_was_measured_not_where_it_went():
    import ffmix.bench as bench

    args = _parsed(["bench", "e2e", "--quick", "--datasets", "rgb32,fmnist", "--json", "docs/bench/", "--quiet"])
    assert bench.command_line(args) == "ffmix bench e2e --quick --datasets rgb32,fmnist"
    assert bench.command_line(_parsed(["bench", "--device", "cuda", "--runs", "3"])) == \
        "ffmix bench --device cuda --runs 3"


def test_json_folder_gets_a_date_machine_file(tmp_path):
    import ffmix.bench as bench

    header = {"date": "2026-12-01T10:00:00+00:00", "cpu": "AMD EPYC 7B13", "cores": 2, "gpu": None}
    assert bench.json_path(f"{tmp_path}/", header, quick=True) == tmp_path / "2026-12-01-amd-epyc-7b13-2c-quick.json"
    assert bench.json_path(str(tmp_path / "x.json"), header, quick=False) == tmp_path / "x.json"
    assert bench.json_path("d/", header, quick=False, section="e2e").name == "2026-12-01-amd-epyc-7b13-2c-e2e.json"
    gpu = {**header, "gpu": "NVIDIA H200"}
    assert bench.json_path("docs/bench/", gpu, quick=False).name == "2026-12-01-amd-epyc-7b13-2c-nvidia-h200.json"


def test_kept_json_prints_its_tables_with_the_command(tmp_path, capsys):
    results = _fake_results()
    kept = {"command": "ffmix bench e2e", "results": results, "skipped": {}, "seconds": 1.0,
            "targets": targets.evaluate_targets(results, quick=False),
            "machine": {"date": "2026-01-01T00:00", "cpu": "Some CPU", "cores": 2, "memory_gib": 8, "gpu": None,
                        "os": "Linux", "load_average": [0.1, 0.1, 0.1], "versions": {"ffmix": "0.1.0"}},
            "config": {"quick": False, "sections": ["e2e"], "workers": 2, "device": "cpu", "runs": 5,
                       "min_run_s": 0.5}}
    path = tmp_path / "kept.json"
    report.write_json(kept, path)
    assert report.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "command: ffmix bench e2e" in out and out.count("| pipeline") == 2 and "Targets" in out
    assert report.main([str(tmp_path / "missing.json")]) == 1


def test_cli_rejects_bad_options(capsys):
    assert cli.main(["bench", "--datasets", "imagenet", "--quiet"]) == 1
    assert "--datasets" in capsys.readouterr().err
    assert cli.main(["bench", "--runs", "0", "--quiet"]) == 1
    if not torch.cuda.is_available():
        assert cli.main(["bench", "ops", "--device", "cuda", "--quiet"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err


def test_jpeg_section_writes_only_its_own_lines_to_stderr(tmp_path):
    """Two JPEG loaders alive together, then collected: FFCV 1.0.2 used to rewrite a Numba type both had
    compiled with, and Numba's dispatcher finaliser printed 'Exception ignored ... KeyError' (issue 9)."""
    done = subprocess.run([sys.executable, "-m", "ffmix.cli", "bench", "e2e", "--quick", "--quiet", "--datasets",
                           "jpeg224", "--pipelines", "ffcv_plain,ffmix", "--work-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "| FFCV Loader, no mixing" in done.stdout and "| ffmix make_loader" in done.stdout


def test_cli_rejects_unknown_pipelines(capsys):
    assert cli.main(["bench", "e2e", "--pipelines", "ffmix,nonsense", "--quiet"]) == 1
    assert "--pipelines" in capsys.readouterr().err


def test_startup_probe_reports_times(tmp_path):
    """The start-up probe's measurement, run in this process (the section runs it in fresh ones)."""
    from ffmix.bench import startup
    from ffmix.convert import convert_arrays

    beton = tmp_path / "s.beton"
    convert_arrays(datagen.smooth_images(64, 8, 8), datagen.labels_for(64, 4), beton, force=True)
    for loader in ("ffmix", "ffcv_plain"):
        result = startup.measure(loader, str(beton), batch_size=16, workers=1, num_classes=4)
        assert result["first_batch_s"] > 0 and result["batch_shape"][0] == 16
        assert startup._check(result, 16, 4, loader)["ok"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_e2e_delivers_on_the_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "ffmix.cli", "bench", "e2e", "--quick", "--quiet", "--device", "cuda",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]["e2e"]
    assert all(r["device"] == "cuda" and r["images_per_s"] > 0 for r in rows)
    assert all(r["check"]["ok"] for r in rows if r["pipeline"] not in ("memcpy", "ffcv_mixup"))


def test_collate_targets_follow_their_rows_checks():
    """A MixCollate row that passed its check can meet a target; one that failed cannot."""
    from ffmix.bench.targets import evaluate_targets

    def row(path, rate, ms, ok=True):
        return {"path": path, "dataset": "rgb32", "images_per_s": rate, "collate_ms": ms,
                "check": {"ok": ok, "problems": []}}

    rows = [row("ffmix_uint8", 600.0, 1.0), row("timm", 100.0, 9.0), row("default_collate", 500.0, 2.0)]
    met = {t["target"]: t["met"] for t in evaluate_targets({"collate": rows}, quick=False)}
    assert met["DataLoader 32x32 RGB: MixCollate / timm FastCollateMixup"] is True
    assert met["collate alone 32x32 RGB: MixCollate time / default_collate"] is True
    rows[0]["check"]["ok"] = False
    met = {t["target"]: t["met"] for t in evaluate_targets({"collate": rows}, quick=False)}
    assert met["DataLoader 32x32 RGB: MixCollate / timm FastCollateMixup"] is False


def test_unusable_output_paths_are_refused_before_measuring(tmp_path, capsys, monkeypatch):
    """bench once measured for minutes, then found --json/--plot unwritable and named a hidden temporary file."""
    monkeypatch.setattr(ops, "run_ops", lambda **kwargs: pytest.fail("measured before checking the outputs"))
    (tmp_path / "a-file").write_text("x")
    for option, target in [("--json", tmp_path / "a-file" / "r.json"), ("--plot", tmp_path / "a-file" / "r.png"),
                           ("--json", f"{tmp_path / 'a-file'}/")]:
        code = cli.main(["bench", "ops", "--quick", "--quiet", option, str(target)])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith(f"ffmix bench: error: cannot write {option} "), err
        assert "is not a folder" in err and "\n" not in err


def test_a_failed_plot_or_json_write_names_the_option_and_path(tmp_path):
    from fsize import file_size_limit
    from ffmix.errors import FfmixError, command_line
    kept = {"results": {"ops": [{"shape": "8x8", "impl": "ffmix", "label": "ffmix", "images_per_s": 1.0}]},
            "machine": {"date": "2026-12-02", "cpu": "cpu", "cores": 2}, "config": {"workers": 1}}
    for option, write, name in [("--plot", report.write_plot, "p.png"), ("--json", report.write_json, "r.json")]:
        target = tmp_path / name
        target.write_bytes(b"kept")
        with command_line(), file_size_limit(100), pytest.raises(FfmixError) as caught:
            write(kept, target)
        assert str(caught.value).startswith(f"cannot write {option} {target}: ") and ".tmp" not in str(caught.value)
        assert target.read_bytes() == b"kept"


def test_an_fmnist_folder_that_is_not_one_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    """bench --fmnist FILE quietly measured synthetic data instead."""
    monkeypatch.setattr(ops, "run_ops", lambda **kwargs: pytest.fail("measured"))
    (tmp_path / "notes.txt").write_text("x")
    for given in (tmp_path / "notes.txt", tmp_path):
        assert cli.main(["bench", "ops", "--quick", "--quiet", "--fmnist", str(given)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ffmix bench: error: --fmnist {given} is not a Fashion-MNIST IDX folder"), err


def test_wait_until_idle_waits_for_background_work_and_no_longer():
    """A loader's background refill (here a child process burning CPU for ~0.6 s) is waited for, so it is not
    timed in the next loader's run; an idle process tree returns at once."""
    import multiprocessing
    import time

    from ffmix.bench.measure import wait_until_idle

    def burn(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    worker = multiprocessing.get_context("fork").Process(target=burn, args=(0.6,))
    worker.start()
    try:
        waited = wait_until_idle(max_s=5.0)
    finally:
        worker.join()
    assert 0.4 < waited < 3.0
    assert wait_until_idle(max_s=5.0) < 0.5
