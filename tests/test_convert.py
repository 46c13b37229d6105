"""``ffmix convert``: every format round-trips, bad input fails with one line and leaves nothing behind.

Files are read back two ways: through FFCV's ``Loader`` (what training uses; it compiles Numba code, so only
a few tests build one) and through ``read_beton``, which decodes the file's own tables without a Loader.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import datagen
from ffmix import cli
from ffmix import convert as convert_module
from ffmix.convert import convert, convert_arrays
from ffmix.errors import FfmixError
from ffmix.metadata import meta_path, read_meta
from ffmix.sources import ArraySource, open_source
from ffmix.sources.base import to_rgb

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------- helpers

def read_beton(path):
    """``(images, labels, modes)`` of a .beton from FFCV's ``Reader`` tables: raw pixels copied, JPEGs decoded."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    columns = reader.metadata.dtype.names
    table = reader.metadata[columns[reader.field_names.index("image")]]
    labels = reader.metadata[columns[reader.field_names.index("label")]].astype(np.int64)
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    content = np.fromfile(path, dtype=np.uint8)
    images, modes = [], []
    for row in table:
        pointer = int(row["data_ptr"])
        data = content[pointer:pointer + sizes[pointer]]
        height, width = int(row["height"]), int(row["width"])
        if row["mode"] == 1:
            images.append(data.reshape(height, width, 3))
            modes.append("raw")
        else:
            images.append(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])
            modes.append("jpg")
    return images, labels, modes


def stored_samples(path):
    """``[(bytes, mode, (height, width))]`` of a .beton's image field as stored: the blocks' bytes unchanged."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    table = reader.metadata[reader.metadata.dtype.names[reader.field_names.index("image")]]
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    content = Path(path).read_bytes()
    return [(content[int(row["data_ptr"]):int(row["data_ptr"]) + sizes[int(row["data_ptr"])]],
             "raw" if row["mode"] == 1 else "jpg", (int(row["height"]), int(row["width"]))) for row in table]


def load_with_ffcv(path):
    """All ``(images, labels)`` through an FFCV Loader in file order (fixed-size images)."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(path), batch_size=512, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    images, labels = [], []
    for image_batch, label_batch in loader:  # the loader reuses its buffers: copy
        images.append(np.array(image_batch))
        labels.append(np.array(label_batch).reshape(-1))
    return np.concatenate(images), np.concatenate(labels)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_nothing_left(out: Path):
    assert not out.exists(), f"{out} was left behind"
    assert not meta_path(out).exists(), "the sidecar was left behind"
    leftovers = [p.name for p in out.parent.glob(f".{out.name}.*")]
    assert leftovers == [], f"temporary files left: {leftovers}"


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffmix convert: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------------------------- datasets

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Every source format, generated once for the module."""
    root = tmp_path_factory.mktemp("convert")
    found = {"root": root}
    found["cifar10"] = datagen.write_cifar(root / "cifar10", "cifar10", per_batch=8)
    found["cifar100"] = datagen.write_cifar(root / "cifar100", "cifar100", per_batch=30)
    idx_train = (datagen.smooth_images(40, 28, 28, 1, seed=3), datagen.labels_for(40, 10, seed=3))
    idx_test = (datagen.smooth_images(20, 28, 28, 1, seed=4), datagen.labels_for(20, 10, seed=4))
    datagen.write_idx_dataset(root / "idx-gz", {"train": idx_train, "test": idx_test}, gz=True)
    datagen.write_idx_dataset(root / "idx-raw", {"train": idx_train, "test": idx_test}, gz=False)
    found["idx"] = {"train": idx_train, "test": idx_test}
    found["npz-gray"] = (datagen.smooth_images(30, 12, 10, 1, seed=5), datagen.labels_for(30, 4, seed=5))
    datagen.write_npz(root / "gray.npz", *found["npz-gray"])
    found["npz-colour"] = (datagen.smooth_images(48, 64, 64, 3, seed=6), datagen.labels_for(48, 5, seed=6))
    datagen.write_npz(root / "colour.npz", *found["npz-colour"], class_names=list("abcde"))
    sizes = [(40, 60), (33, 21), (50, 50), (8, 8)]
    found["png"] = datagen.write_image_folder(root / "png", ["cat", "dog", "bird"], 4, sizes, ext=".png")
    found["jpg"] = datagen.write_image_folder(root / "jpg", ["x", "y"], 5, sizes, ext=".jpg")
    mixed = datagen.write_image_folder(root / "mixed", ["colour"], 2, [(16, 16)], ext=".png")
    mixed += datagen.write_image_folder(root / "mixed", ["gray"], 2, [(16, 16)], ext=".png", gray=True, seed=9)
    found["mixed"] = [(p, 0 if "colour" in str(p) else 1, x) for p, _, x in mixed]
    found["gray-folder"] = datagen.write_image_folder(root / "grayfolder", ["a", "b"], 2, [(10, 12)],
                                                      ext=".png", gray=True)
    return found


# ------------------------------------------------------------------------------------------ round trips

def test_cifar10_round_trip_through_the_ffcv_loader(data, tmp_path, capsys):
    out = tmp_path / "c10.beton"
    code, stdout, _ = run_cli(["convert", data["root"] / "cifar10", out, "--workers", "2"], capsys)
    assert code == 0 and "wrote 40 samples" in stdout and "samples/s" in stdout
    images, labels = load_with_ffcv(out)
    expected = data["cifar10"]["train"]
    assert np.array_equal(images, expected["images"])
    assert labels.tolist() == expected["labels"].tolist()
    meta = read_meta(out)
    assert meta.channels == 3 and meta.image_shape == (32, 32) and meta.source_format == "cifar10"
    assert meta.class_names == data["cifar10"]["class_names"] and meta.split == "train"
    assert meta.label_counts == np.bincount(expected["labels"], minlength=10).tolist()


def _expected(data, name):
    """(format args, [(pixels, label)], channels) for the exact (raw mode) round trips."""
    root = data["root"]
    if name == "cifar100-coarse-test":
        split = data["cifar100"]["test"]
        return ([root / "cifar100", "--split", "test", "--label-kind", "coarse"],
                list(zip(split["images"], split["coarse_labels"])), 3)
    if name in ("idx-gz", "idx-raw"):
        images, labels = data["idx"]["test"]
        return [root / name, "--split", "test"], list(zip(images, labels)), 1
    if name == "npz-gray":
        images, labels = data["npz-gray"]
        return [root / "gray.npz"], list(zip(images, labels)), 1
    if name == "npz-colour":
        images, labels = data["npz-colour"]
        return [root / "colour.npz"], list(zip(images, labels)), 3
    folder = {"png-folder": "png", "jpeg-folder": "jpg", "mixed-folder": "mixed", "gray-folder": "grayfolder"}[name]
    key = {"png-folder": "png", "jpeg-folder": "jpg", "mixed-folder": "mixed", "gray-folder": "gray-folder"}[name]
    channels = 1 if name == "gray-folder" else 3
    return [root / folder], [(pixels, label) for _, label, pixels in data[key]], channels


@pytest.mark.parametrize("name", ["cifar100-coarse-test", "idx-gz", "idx-raw", "npz-gray", "npz-colour",
                                  "png-folder", "jpeg-folder", "mixed-folder", "gray-folder"])
def test_raw_mode_round_trip_is_exact(data, tmp_path, capsys, name):
    source_args, expected, channels = _expected(data, name)
    out = tmp_path / f"{name}.beton"
    code, _, err = run_cli(["convert", *source_args, out, "--workers", "2", "--quiet"], capsys)
    assert code == 0, err
    images, labels, modes = read_beton(out)
    assert len(images) == len(expected) and set(modes) == {"raw"}
    for i, (image, (pixels, label)) in enumerate(zip(images, expected)):
        assert np.array_equal(image, to_rgb(np.asarray(pixels))), f"image {i} differs"
        assert labels[i] == label
    meta = read_meta(out)
    assert meta.num_samples == len(expected) and meta.channels == channels
    sizes = {np.asarray(p).shape[:2] for p, _ in expected}
    assert meta.image_shape == (sizes.pop() if len(sizes) == 1 else None)
    assert sum(meta.label_counts) == len(expected) and len(meta.label_counts) == meta.num_classes


def test_jpg_mode_is_close_and_the_ffcv_loader_agrees(data, tmp_path):
    images, labels = data["npz-colour"]
    out = tmp_path / "jpg.beton"
    meta = convert(open_source(data["root"] / "colour.npz"), out, write_mode="jpg", jpeg_quality=90,
                   num_workers=2)
    assert meta.class_names == list("abcde") and meta.write_options["write_mode"] == "jpg"
    loaded, loaded_labels = load_with_ffcv(out)
    decoded, _, modes = read_beton(out)
    assert set(modes) == {"jpg"} and loaded_labels.tolist() == labels.tolist()
    for i in range(len(images)):
        assert psnr(loaded[i], images[i]) >= 30, i
        assert psnr(loaded[i], decoded[i]) >= 40, i  # the two JPEG decoders agree
    from ffcv.reader import Reader
    assert Reader(str(out)).alloc_table["size"].sum() < images.nbytes / 3  # it did compress


def test_variable_size_jpeg_folder_in_jpg_mode(data, tmp_path, capsys):
    out = tmp_path / "v.beton"
    code, _, err = run_cli(["convert", data["root"] / "jpg", out, "--write-mode", "jpg", "--workers", "2",
                            "--quiet"], capsys)
    assert code == 0, err
    decoded, labels, _ = read_beton(out)
    for image, (_, _, pixels) in zip(decoded, data["jpg"]):
        assert image.shape == pixels.shape and psnr(image, pixels) >= 30
    assert labels.tolist() == [label for _, label, _ in data["jpg"]]
    meta = read_meta(out)
    assert meta.image_shape is None and meta.min_size == (8, 8) and meta.max_size == (50, 60)


def test_max_resolution_limit_and_smart_mode(data, tmp_path, capsys):
    out = tmp_path / "small.beton"
    code, _, err = run_cli(["convert", data["root"] / "png", out, "--max-resolution", "20", "--limit", "7",
                            "--write-mode", "smart", "--smart-threshold", "300", "--workers", "1", "--quiet"],
                           capsys)
    assert code == 0, err
    images, labels, modes = read_beton(out)
    assert len(images) == 7 and labels.tolist() == [label for _, label, _ in data["png"][:7]]
    for image, (_, _, pixels) in zip(images, data["png"]):
        scale = min(1.0, 20 / max(pixels.shape[:2]))
        assert max(image.shape[:2]) <= 20
        assert image.shape[:2] == tuple(int(s * scale) for s in pixels.shape[:2])
    # smart: raw pixels up to 300 bytes (8x8x3 = 192) stay raw, larger ones become JPEG
    assert modes == ["raw" if im.nbytes <= 300 else "jpg" for im in images]
    meta = read_meta(out)
    assert meta.num_samples == 7 and meta.max_size[0] <= 20 and meta.write_options["limit"] == 7
    assert meta.write_options["smart_threshold"] == 300


def test_proportion_mode_mixes_raw_and_jpeg(tmp_path):
    images = datagen.smooth_images(60, 16, 16, 3, seed=11)
    convert_arrays(images, np.zeros(60, int), tmp_path / "p.beton", write_mode="proportion",
                   compress_probability=0.5, num_workers=2)
    _, _, modes = read_beton(tmp_path / "p.beton")
    assert 5 < modes.count("jpg") < 55  # binomial(60, 0.5): outside this range has probability ~1e-11


def test_real_fashion_mnist_test_split(tmp_path, capsys):
    if not FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST is not installed (make setup installs it)")
    out = tmp_path / "fmnist-test.beton"
    code, stdout, err = run_cli(["convert", FASHION_MNIST, out, "--format", "idx", "--split", "test", "--force",
                                 "--workers", "2"], capsys)
    assert code == 0, err
    assert "wrote 10000 samples (10 classes, 28x28, gray, raw)" in stdout
    images, labels = load_with_ffcv(out)
    assert images.shape == (10000, 28, 28, 3)
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10
    # the pixels against an independent read of the IDX files (16- and 8-byte headers)
    import gzip
    raw_images = np.frombuffer(gzip.decompress((FASHION_MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()),
                               np.uint8, offset=16).reshape(10000, 28, 28)
    raw_labels = np.frombuffer(gzip.decompress((FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()),
                               np.uint8, offset=8)
    assert np.array_equal(images[:, :, :, 0], raw_images) and np.array_equal(images[:, :, :, 2], raw_images)
    assert np.array_equal(labels, raw_labels)
    meta = read_meta(out)
    assert meta.channels == 1 and meta.class_names[9] == "Ankle boot" and meta.label_counts == [1000] * 10


# ------------------------------------------------------------------------------------- JPEG pass-through

def test_jpeg_passthrough_stores_each_files_bytes(data, tmp_path, capsys):
    out = tmp_path / "pass.beton"
    code, stdout, err = run_cli(["convert", data["root"] / "jpg", out, "--write-mode", "jpg", "--workers", "2"],
                                capsys)
    assert code == 0, err
    assert "JPEG: 10 stored as they were, 0 encoded" in stdout
    stored = stored_samples(out)
    assert [block for block, _, _ in stored] == [path.read_bytes() for path, _, _ in data["jpg"]]
    assert [mode for _, mode, _ in stored] == ["jpg"] * 10
    assert [size for _, _, size in stored] == [pixels.shape[:2] for _, _, pixels in data["jpg"]]
    meta = read_meta(out)
    assert meta.write_options["passed_through"] == 10 and meta.write_options["jpeg_encoded"] == 0
    assert meta.min_size == (8, 8) and meta.max_size == (50, 60) and meta.channels == 3
    code, stdout, err = run_cli(["convert", data["root"] / "jpg", out, "--write-mode", "jpg", "--workers", "2",
                                 "--passthrough", "no", "--jpeg-quality", "70", "--force"], capsys)
    assert code == 0 and "JPEG: 0 stored as they were, 10 encoded" in stdout
    assert all(block != path.read_bytes() for (block, _, _), (path, _, _) in zip(stored_samples(out), data["jpg"]))


def _mixed_jpeg_folder(root: Path):
    """Class a: three 32x32 JPEGs, a progressive one and a gray one (all stored as they are with
    --max-resolution 32); class b: two 64x64 JPEGs (too large), a CMYK JPEG and a PNG (all encoded)."""
    from PIL import Image

    expected = []  # (path, label, pixels as FFCV should give them back, stored as is)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for k, pixels in enumerate(datagen.smooth_images(3, 32, 32, 3, seed=20)):
        Image.fromarray(pixels).save(root / "a" / f"plain{k}.jpg", quality=92)
    Image.fromarray(datagen.smooth_images(1, 32, 32, 3, seed=21)[0]).save(root / "a" / "progressive.jpg",
                                                                           quality=92, progressive=True)
    Image.fromarray(datagen.smooth_images(1, 32, 32, 1, seed=22)[0]).save(root / "a" / "zgray.jpg", quality=92)
    for k, pixels in enumerate(datagen.smooth_images(2, 64, 64, 3, seed=23)):
        Image.fromarray(pixels).save(root / "b" / f"large{k}.jpg", quality=92)
    Image.fromarray(datagen.smooth_images(1, 32, 32, 3, seed=24)[0]).convert("CMYK").save(root / "b" / "cmyk.jpg",
                                                                                          quality=92)
    Image.fromarray(datagen.smooth_images(1, 32, 32, 3, seed=25)[0]).save(root / "b" / "png.png")
    for label, folder in enumerate(["a", "b"]):
        for path in sorted((root / folder).iterdir()):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape[0] > 32:
                pixels = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_AREA)
            as_is = folder == "a"
            expected.append((path, label, pixels, as_is))
    return expected


def test_a_mixed_jpeg_folder_stores_what_fits_encodes_the_rest_and_all_decode(tmp_path, capsys):
    expected = _mixed_jpeg_folder(tmp_path / "src")
    out = tmp_path / "mixed.beton"
    code, stdout, err = run_cli(["convert", tmp_path / "src", out, "--write-mode", "jpg", "--max-resolution", "32",
                                 "--workers", "2"], capsys)
    assert code == 0, err
    assert "JPEG: 5 stored as they were, 4 encoded" in stdout
    stored = stored_samples(out)
    for (block, mode, size), (path, _, _, as_is) in zip(stored, expected):
        assert mode == "jpg" and size == (32, 32)
        assert (block == path.read_bytes()) == as_is, path.name
    images, labels = load_with_ffcv(out)
    assert labels.tolist() == [label for _, label, _, _ in expected]
    for image, (path, _, pixels, _) in zip(images, expected):
        assert psnr(image, pixels) >= 30, path.name
    assert read_meta(out).channels == 3


def test_verify_passthrough_decodes_first_and_re_encodes_a_damaged_jpeg(tmp_path, capsys):
    written = datagen.write_image_folder(tmp_path / "src", ["a"], 3, [(32, 32)], ext=".jpg")
    damaged_path = written[1][0]
    damaged = bytearray(damaged_path.read_bytes())
    middle = (damaged.index(b"\xff\xda") + len(damaged)) // 2
    damaged[middle:middle + 2] = b"\xff\xd3"  # a restart marker where none belongs: libjpeg warns
    damaged_path.write_bytes(bytes(damaged))
    out = tmp_path / "v.beton"
    code, stdout, err = run_cli(["convert", tmp_path / "src", out, "--write-mode", "jpg", "--workers", "1"], capsys)
    assert code == 0 and "JPEG: 3 stored as they were, 0 encoded" in stdout  # the header looks fine
    code, stdout, err = run_cli(["convert", tmp_path / "src", out, "--write-mode", "jpg", "--workers", "1",
                                 "--passthrough", "verify", "--force"], capsys)
    assert code == 0 and "JPEG: 2 stored as they were, 1 encoded" in stdout, stdout
    stored = stored_samples(out)
    assert [block == path.read_bytes() for (block, _, _), (path, _, _) in zip(stored, written)] == [True, False, True]


def test_smart_and_proportion_modes_pass_through_only_what_they_store_as_jpeg(data, tmp_path):
    source = open_source(data["root"] / "jpg")  # sizes 40x60, 33x21, 50x50, 8x8
    out = tmp_path / "smart.beton"
    meta = convert(source, out, write_mode="smart", smart_threshold=3000, num_workers=2)
    stored = stored_samples(out)
    files = [path.read_bytes() for path, _, _ in data["jpg"]]
    for (block, mode, (height, width)), original in zip(stored, files):
        assert mode == ("jpg" if height * width * 3 > 3000 else "raw")
        assert (block == original) == (mode == "jpg")
    assert meta.write_options["passed_through"] == sum(mode == "jpg" for _, mode, _ in stored)
    meta = convert(source, out, write_mode="proportion", compress_probability=0.5, num_workers=2, force=True)
    stored = stored_samples(out)
    assert meta.write_options["jpeg_encoded"] == 0
    assert meta.write_options["passed_through"] == sum(mode == "jpg" for _, mode, _ in stored)
    assert all((block == original) == (mode == "jpg") for (block, mode, _), original in zip(stored, files))


# ------------------------------------------------------------------------------------------- file lists

def test_a_file_list_converts_with_its_labels(data, tmp_path, capsys):
    rows = [f"{path.relative_to(data['root'])}\t{['cat', 'dog', 'bird'][label]}"
            for path, label, _ in data["png"]]
    listing = data["root"] / "list.tsv"
    listing.write_text("\n".join(rows) + "\n")
    out = tmp_path / "list.beton"
    code, stdout, err = run_cli(["convert", listing, out, "--workers", "2"], capsys)
    assert code == 0, err
    assert "wrote 12 samples (3 classes" in stdout
    images, labels, _ = read_beton(out)
    assert all(np.array_equal(image, pixels) for image, (_, _, pixels) in zip(images, data["png"]))
    meta = read_meta(out)
    assert meta.class_names == ["bird", "cat", "dog"] and meta.source_format == "filelist"
    assert labels.tolist() == [meta.class_names.index(["cat", "dog", "bird"][label]) for _, label, _ in data["png"]]
    (data["root"] / "bad.csv").write_text("png/cat/img_000.png,0\npng/cat/nope.png,1\n")
    code, _, err = run_cli(["convert", data["root"] / "bad.csv", tmp_path / "bad.beton"], capsys)
    assert_one_line_error(code, err, "line 2", "nope.png does not exist")
    assert_nothing_left(tmp_path / "bad.beton")


def test_a_symlink_cycle_converts_each_image_once_with_a_warning(tmp_path, capsys):
    datagen.write_image_folder(tmp_path / "src", ["a", "b"], 1, [(4, 4)])
    (tmp_path / "src" / "a" / "loop").symlink_to(tmp_path / "src", target_is_directory=True)
    out = tmp_path / "o.beton"
    code, stdout, err = run_cli(["convert", tmp_path / "src", out, "--workers", "1"], capsys)
    assert code == 0 and "wrote 2 samples" in stdout
    assert f"ffmix convert: warning: {tmp_path / 'src' / 'a' / 'loop'} is a symbolic-link cycle" in err


# ------------------------------------------------------------------------------------------- public API

def test_convert_arrays_lists_of_sizes_and_metadata(tmp_path):
    images = [datagen.smooth_images(1, h, w, 3, seed=h)[0] for h, w in [(5, 7), (9, 3), (5, 7)]]
    meta = convert_arrays(images, [2, 0, 1], tmp_path / "a.beton", class_names=["p", "q", "r"])
    decoded, labels, _ = read_beton(tmp_path / "a.beton")
    assert all(np.array_equal(a, b) for a, b in zip(decoded, images)) and labels.tolist() == [2, 0, 1]
    assert meta == read_meta(tmp_path / "a.beton")
    assert (meta.num_classes, meta.channels, meta.image_shape) == (3, 3, None)
    assert meta.min_size == (5, 3) and meta.max_size == (9, 7) and meta.label_counts == [1, 1, 1]
    gray = convert_arrays(np.zeros((4, 6, 6, 1), np.uint8), [0, 0, 1, 1], tmp_path / "g.beton")
    assert gray.channels == 1 and gray.class_names == ["0", "1"] and gray.source == "arrays"


@pytest.mark.parametrize("images, labels, problem", [
    (np.zeros((3, 4, 4), np.int16), [0, 1, 2], "must be uint8"),
    (np.zeros((3, 4, 4), np.uint8), [0, 1], "3 images but 2 labels"),
    (np.zeros((2, 4, 4), np.uint8), [0, -1], "non-negative"),
    (np.zeros((2, 4, 4), np.uint8), [0, 0.25], "must be integers"),
])
def test_convert_arrays_rejects_bad_input(tmp_path, images, labels, problem):
    with pytest.raises(FfmixError, match=problem):
        convert_arrays(images, labels, tmp_path / "x.beton")
    assert_nothing_left(tmp_path / "x.beton")


def test_a_stray_label_is_refused_on_the_command_line_naming_its_flag(tmp_path, capsys):
    labels = np.array([0, 1, 0, 99999])
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 4, 4), np.uint8), labels=labels)
    code, _, err = run_cli(["convert", tmp_path / "d.npz", tmp_path / "d.beton", "--workers", "1"], capsys)
    assert_one_line_error(code, err, "label 3 is 99999", "100000 classes for 4 samples", "--num-classes 100000")
    assert "num_classes=" not in err
    assert_nothing_left(tmp_path / "d.beton")
    code, out, err = run_cli(["convert", tmp_path / "d.npz", tmp_path / "d.beton", "--workers", "1",
                              "--num-classes", "100000", "--quiet"], capsys)
    assert code == 0, err
    meta = read_meta(tmp_path / "d.beton")
    assert meta.num_classes == 100000 and meta.label_counts[99999] == 1


def test_an_image_larger_than_the_page_gets_a_bigger_page(tmp_path, monkeypatch):
    # A source whose sizes are unknown up front starts with a guessed page; too small must mean retry, not fail.
    monkeypatch.setattr(convert_module, "_page_size", lambda *args: convert_module.MIN_PAGE_SIZE)
    images = [datagen.smooth_images(1, 700, 1100, 3, seed=1)[0], datagen.smooth_images(1, 10, 10, 3)[0]]
    assert images[0].nbytes > convert_module.MIN_PAGE_SIZE
    convert_arrays(images, [0, 1], tmp_path / "big.beton", num_workers=2)
    decoded, _, _ = read_beton(tmp_path / "big.beton")
    assert np.array_equal(decoded[0], images[0]) and np.array_equal(decoded[1], images[1])


class _Buggy(ArraySource):
    def read(self, index):
        if index == 3:
            raise ZeroDivisionError("a bug in a source")
        return super().read(index)


def test_a_crashing_writer_process_is_reported_and_cleaned_up(tmp_path):
    source = _Buggy(np.zeros((20, 4, 4), np.uint8), np.zeros(20, int))
    with pytest.raises(RuntimeError, match="ZeroDivisionError: a bug in a source"):
        convert(source, tmp_path / "x.beton", num_workers=2)
    assert_nothing_left(tmp_path / "x.beton")


# ------------------------------------------------------------------------------------------- bad input

def _corrupt_folder(root: Path) -> Path:
    datagen.write_image_folder(root, ["a", "b"], 3, [(12, 12)], ext=".jpg")
    broken = root / "b" / "img_001.jpg"
    broken.write_bytes(broken.read_bytes()[:100])  # cut inside the entropy-coded data
    return broken


def test_undecodable_image_fails_naming_the_file_and_skip_bad_skips_it(tmp_path, capsys):
    broken = _corrupt_folder(tmp_path / "src")
    out = tmp_path / "o.beton"
    code, _, err = run_cli(["convert", tmp_path / "src", out, "--workers", "2"], capsys)
    assert_one_line_error(code, err, str(broken), "--skip-bad")
    assert_nothing_left(out)
    # in jpg mode the cut-off JPEG is not stored as it is (its header has no end marker): decoded, it fails
    code, _, err = run_cli(["convert", tmp_path / "src", out, "--workers", "2", "--write-mode", "jpg"], capsys)
    assert_one_line_error(code, err, str(broken), "--skip-bad")
    assert_nothing_left(out)
    code, stdout, err = run_cli(["convert", tmp_path / "src", out, "--workers", "2", "--skip-bad"], capsys)
    assert code == 0, err
    assert "wrote 5 samples" in stdout and "skipped 1 unreadable images" in stdout
    images, labels, _ = read_beton(out)
    assert labels.tolist() == [0, 0, 0, 1, 1]
    meta = read_meta(out)
    assert meta.write_options["skipped"] == 1 and meta.write_options["skipped_samples"] == [str(broken)]
    assert meta.label_counts == [3, 2]


def test_skip_bad_writes_the_file_once_and_the_loader_reads_it(tmp_path, monkeypatch):
    from ffmix import ffcv_compat

    written = datagen.write_image_folder(tmp_path / "src", ["a", "b"], 6, [(12, 12)], ext=".png")
    broken = [written[1][0], written[6][0], written[11][0]]  # first class, second class, the very last file
    for path in broken:
        path.write_bytes(b"not a png")
    passes = []
    real_prepare = ffcv_compat.prepare_writer
    monkeypatch.setattr(ffcv_compat, "prepare_writer", lambda writer, count: (passes.append(count),
                                                                             real_prepare(writer, count)))
    out = tmp_path / "o.beton"
    meta = convert(open_source(tmp_path / "src"), out, num_workers=2, skip_bad=True)
    assert passes == [12]  # one pass over all 12 rows, not a second one over the 9 readable
    kept = [(pixels, label) for path, label, pixels in written if path not in broken]
    images, labels = load_with_ffcv(out)  # FFCV's memory manager maps samples to pages by the renumbered rows
    assert len(images) == 9 and labels.tolist() == [label for _, label in kept]
    assert all(np.array_equal(image, pixels) for image, (pixels, _) in zip(images, kept))
    assert meta.num_samples == 9 and meta.label_counts == [5, 4]
    assert meta.write_options["skipped_samples"] == [str(path) for path in broken]


def test_force_is_needed_and_a_failed_overwrite_keeps_the_old_file(tmp_path, capsys):
    out = tmp_path / "o.beton"
    convert_arrays(np.zeros((3, 4, 4), np.uint8), [0, 1, 2], out)
    before = (out.read_bytes(), meta_path(out).read_bytes())
    code, _, err = run_cli(["convert", tmp_path / "nope.npz", out], capsys)
    assert_one_line_error(code, err, "already exists", "--force")
    _corrupt_folder(tmp_path / "src")
    code, _, err = run_cli(["convert", tmp_path / "src", out, "--force", "--workers", "1"], capsys)
    assert_one_line_error(code, err, "cannot read")
    assert (out.read_bytes(), meta_path(out).read_bytes()) == before
    assert list(tmp_path.glob(".o.beton.*")) == []
    code, _, err = run_cli(["convert", tmp_path / "src", out, "--force", "--skip-bad", "--quiet"], capsys)
    assert code == 0 and read_meta(out).num_samples == 5


def _bad_inputs(root: Path):
    """(name, SOURCE and options, expected message fragments) for each kind of bad input."""
    (root / "empty-class").mkdir()
    datagen.write_image_folder(root / "empty-class", ["a"], 1, [(4, 4)])
    (root / "empty-class" / "b").mkdir()
    datagen.write_npz(root / "empty.npz", np.zeros((0, 4, 4), np.uint8), np.zeros(0, int))
    datagen.write_npz(root / "mismatch.npz", np.zeros((5, 4, 4), np.uint8), np.zeros(4, int))
    datagen.write_npz(root / "negative.npz", np.zeros((2, 4, 4), np.uint8), np.array([1, -2]))
    datagen.write_npz(root / "fraction.npz", np.zeros((2, 4, 4), np.uint8), np.array([1.0, 2.5]))
    (root / "unknown").mkdir()
    (root / "unknown" / "readme.txt").write_text("hello")
    (root / "cifar").mkdir()
    datagen.write_cifar(root / "cifar", "cifar10", per_batch=1)
    return [
        ("missing", [root / "does-not-exist"], ["does not exist"]),
        ("unknown-format", [root / "unknown"], ["cannot tell the format", "--format"]),
        ("wrong-format", [root / "unknown", "--format", "cifar10"], ["does not look like a cifar10"]),
        ("empty-class", [root / "empty-class"], ["class folder", "holds no images"]),
        ("empty-dataset", [root / "empty.npz"], ["empty"]),
        ("mismatch", [root / "mismatch.npz"], ["5 images but 4 labels"]),
        ("negative", [root / "negative.npz"], ["non-negative", "label 1 is -2"]),
        ("non-integer", [root / "fraction.npz"], ["must be integers", "2.5"]),
        ("label-kind", [root / "cifar", "--label-kind", "fine"], ["cifar100 only"]),
        ("split-npz", [root / "negative.npz", "--split", "test"], ["no splits"]),
        ("jpeg-quality", [root / "cifar", "--jpeg-quality", "0"], ["--jpeg-quality", "got 0"]),
        ("workers", [root / "cifar", "--workers", "0"], ["--workers"]),
        ("limit", [root / "cifar", "--limit", "0"], ["--limit"]),
    ]


def test_each_bad_input_gets_one_line_and_leaves_nothing(tmp_path, capsys):
    for name, args, fragments in _bad_inputs(tmp_path):
        out = tmp_path / f"{name}.beton"
        code, _, err = run_cli(["convert", args[0], out, "--workers", "1", *args[1:]], capsys)
        assert_one_line_error(code, err, *fragments)
        assert_nothing_left(out)


def test_malicious_cifar_via_the_cli(tmp_path, capsys):
    import pickle

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    datagen.write_cifar(tmp_path / "cifar", "cifar10", per_batch=1)
    (tmp_path / "cifar" / "data_batch_2").write_bytes(pickle.dumps({b"data": RunsCode()}, protocol=2))
    out = tmp_path / "o.beton"
    code, _, err = run_cli(["convert", tmp_path / "cifar", out], capsys)
    assert_one_line_error(code, err, "refusing to load", "data_batch_2", "posix.system")
    assert not (tmp_path / "pwned").exists()
    assert_nothing_left(out)


def test_unwritable_out_paths(tmp_path, capsys):
    source = tmp_path / "s.npz"
    datagen.write_npz(source, np.zeros((2, 4, 4), np.uint8), np.arange(2))
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "taken.beton.json").mkdir()  # the sidecar's name: once found only after the whole .beton
    cases = [(tmp_path / "missing-dir" / "o.beton", "does not exist; create it first"),
             (tmp_path / "a-file" / "o.beton", "is not a folder"),
             (tmp_path / "a-dir", "is a directory"),
             (tmp_path / "taken.beton", f"cannot write {tmp_path / 'taken.beton.json'}: it is a folder")]
    for out, fragment in cases:
        code, _, err = run_cli(["convert", source, out], capsys)
        assert_one_line_error(code, err, fragment)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = run_cli(["convert", source, locked / "o.beton"], capsys)
        assert_one_line_error(code, err, "permission denied")
        assert list(locked.iterdir()) == []


def test_a_full_disk_names_out_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    """A writer process that hit a full disk was reported as a crash, with a traceback naming the temporary file."""
    from fsize import file_size_limit
    out = tmp_path / "o.beton"
    out.write_bytes(b"an older file")
    images = np.full((100, 32, 32, 3), 7, np.uint8)
    import ffcv.writer  # noqa: F401  (its import writes nothing, but do it outside the limit)
    with file_size_limit(60_000), pytest.raises(FfmixError) as caught:
        convert_arrays(images, np.arange(100) % 3, out, force=True, num_workers=1)
    assert str(caught.value).startswith(f"cannot write {out}: ") and ".tmp" not in str(caught.value)
    assert out.read_bytes() == b"an older file" and not meta_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.beton"]


def test_real_command_prints_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([str(REPO / "convert"), str(tmp_path / "missing"), str(tmp_path / "o.beton")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"ffmix convert: error: SOURCE {tmp_path / 'missing'} does not exist"]


# ------------------------------------------------------------------------------- the .beton and its sidecar

def test_a_sidecar_from_another_conversion_is_refused(data, tmp_path, capsys):
    fine, coarse = tmp_path / "fine.beton", tmp_path / "coarse.beton"
    for out, kind in ((fine, "fine"), (coarse, "coarse")):
        code, _, err = run_cli(["convert", data["root"] / "cifar100", out, "--label-kind", kind, "--quiet",
                                "--workers", "1"], capsys)
        assert code == 0, err
    assert os.path.getsize(fine) == os.path.getsize(coarse)  # same samples, same size: only the labels differ
    assert read_meta(fine).num_samples == read_meta(coarse).num_samples
    meta_path(fine).write_bytes(meta_path(coarse).read_bytes())
    with pytest.raises(FfmixError, match="does not belong to .*fine.beton .*re-run `ffmix convert`") as error:
        read_meta(fine)
    assert "\n" not in str(error.value)
    # a sidecar written before fingerprints existed is accepted unchecked
    raw = json.loads(meta_path(coarse).read_text())
    del raw["beton_fingerprint"]
    meta_path(fine).write_text(json.dumps(raw))
    assert read_meta(fine).class_names == read_meta(coarse).class_names


def _convert_then_crash_between_renames(source, out):
    """In a forked child (FFCV already imported, so no start-up cost): convert, and die like a power cut or
    ``kill -9`` right after the sidecar's rename, with no clean-up."""
    convert_module._between_renames = lambda: os._exit(9)
    cli.main(["convert", str(source), str(out), "--force", "--quiet", "--workers", "1"])
    os._exit(0)


def test_a_crash_between_the_two_renames_leaves_a_pair_that_is_refused(tmp_path):
    old = datagen.write_npz(tmp_path / "old.npz", datagen.smooth_images(6, 8, 8, 3, seed=1), np.arange(6) % 2)
    new = datagen.write_npz(tmp_path / "new.npz", datagen.smooth_images(6, 8, 8, 3, seed=2), np.arange(6) % 3)
    out = tmp_path / "o.beton"
    assert cli.main(["convert", str(old), str(out), "--quiet", "--workers", "1"]) == 0
    old_beton = out.read_bytes()
    import multiprocessing
    child = multiprocessing.get_context("fork").Process(target=_convert_then_crash_between_renames, args=(new, out))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 9
    assert out.read_bytes() == old_beton  # the old file, beside the new sidecar
    assert json.loads(meta_path(out).read_text())["source"] == str(new)
    with pytest.raises(FfmixError, match="re-run `ffmix convert`"):
        read_meta(out)


# ----------------------------------------------------------------------------------------- interruption

# The real command with each sample slowed to 50 ms (15 s for the whole file with 2 processes, while it is
# stopped within a second of starting to write), so a conversion is surely still writing when stopped, however
# loaded the machine.
# Ctrl-C is made to raise KeyboardInterrupt as in a terminal, even when the tests run where SIGINT is ignored
# (a background job of a non-interactive shell), which the child would inherit.
SLOW_CONVERT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from ffmix.sources import base
plain_read = base.ArraySource.read
def slow_read(self, index):
    time.sleep(0.05)
    return plain_read(self, index)
base.ArraySource.read = slow_read
from ffmix.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _processes_mentioning(text: str):
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_interrupted_conversions_leave_nothing(tmp_path):
    """SIGTERM to the main process (``kill PID``) and SIGINT to the whole process group (Ctrl-C)."""
    source = datagen.write_npz(tmp_path / "s.npz", datagen.smooth_images(600, 24, 24, 3), np.zeros(600, int))
    runs = {}
    for signal_number in (signal.SIGTERM, signal.SIGINT):  # both start at once: the imports take seconds
        out = tmp_path / f"out-{signal_number.name}.beton"
        process = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, "convert", str(source), str(out),
                                    "--workers", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        runs[signal_number] = (process, out)
    for signal_number, (process, out) in runs.items():
        deadline = time.monotonic() + 120
        # wait until FFCV has written the file header, i.e. the writer processes are starting
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(f".{out.name}.*.tmp")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the conversion never started writing"
            time.sleep(0.02)
        time.sleep(0.5)  # well inside the 15 s this conversion needs
        assert process.poll() is None, "the conversion ended before it could be interrupted"
        if signal_number == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGTERM)
    # Both are interrupted before either is waited for: waiting on one first let the other finish.
    for signal_number, (process, out) in runs.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        said = "ffmix convert: interrupted" + (" by SIGTERM" if signal_number == signal.SIGTERM else "")
        assert stderr.strip().splitlines()[-1] == said, stderr
        assert "Traceback" not in stderr and "leaked" not in stderr, stderr
        assert_nothing_left(out)
        assert _processes_mentioning(str(out)) == [], "writer processes outlived the conversion"
