"""The input formats: detection, decoding against the generated data, and every bad-input message."""
from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datagen
from ffmix.errors import FfmixError, FfmixWarning
from ffmix.sources import ArraySource, BadSampleError, detect_format, open_source
from ffmix.sources.base import PathList, check_labels, to_rgb
from ffmix.sources.cifar import load_batch
from ffmix.sources.idx import read_idx
from ffmix.sources.jpeg import read_jpeg_header


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def cifar10(data):
    return data / "c10", datagen.write_cifar(data / "c10", "cifar10", per_batch=4)


@pytest.fixture(scope="module")
def cifar100(data):
    return data / "c100", datagen.write_cifar(data / "c100", "cifar100", per_batch=12)


# ------------------------------------------------------------------------------------------------ CIFAR

def test_generated_cifar_batches_have_the_real_python2_layout(cifar10):
    folder, _ = cifar10
    raw = (folder / "data_batch_1").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2)
    globals_used = {arg for name, arg in ops if name == "GLOBAL"}
    assert globals_used == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert ("SHORT_BINSTRING", "data") in [(n, a.decode() if isinstance(a, bytes) else a) for n, a in ops]
    batch = pickle.loads(raw, encoding="bytes")  # what every CIFAR tutorial does
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (4, 3072)
    assert isinstance(batch[b"labels"], list)


def test_cifar10_train_and_test_match_the_source(cifar10):
    folder, expected = cifar10
    assert detect_format(folder) == "cifar10"
    for split in ("train", "test"):
        source = open_source(folder, split=split)
        assert len(source) == len(expected[split]["labels"])
        assert np.array_equal(np.stack([source[i][0] for i in range(len(source))]), expected[split]["images"])
        assert [source[i][1] for i in range(len(source))] == expected[split]["labels"].tolist()
        assert source.class_names == expected["class_names"]
        assert source.channels == 3


def test_cifar10_pixel_layout_is_planes_of_rows(tmp_path):
    # one image whose R plane is 1, G plane 2, B plane 3 except pixel (row 0, col 1) of R = 200
    rows = np.zeros((1, 3072), dtype=np.uint8)
    rows[0, :1024], rows[0, 1024:2048], rows[0, 2048:] = 1, 2, 3
    rows[0, 1] = 200
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(datagen.py2_pickle({b"data": rows, b"labels": [7]}))
    image, label = open_source(tmp_path)[0]
    assert label == 7 and image.shape == (32, 32, 3)
    assert image[0, 1, 0] == 200 and image[0, 0, 0] == 1 and image[5, 5].tolist() == [1, 2, 3]


def test_cifar100_fine_and_coarse_labels(cifar100):
    folder, expected = cifar100
    assert detect_format(folder) == "cifar100"
    fine = open_source(folder, split="test")
    coarse = open_source(folder, split="test", label_kind="coarse")
    assert fine.labels.tolist() == expected["test"]["labels"].tolist()
    assert coarse.labels.tolist() == expected["test"]["coarse_labels"].tolist()
    assert fine.class_names == expected["class_names"] and len(fine.class_names) == 100
    assert coarse.class_names == expected["coarse_names"] and len(coarse.class_names) == 20
    assert np.array_equal(fine.images, expected["test"]["images"])


def test_cifar_found_inside_the_official_archive_folder(data):
    datagen.write_cifar(data / "archive" / "cifar-10-batches-py", "cifar10", per_batch=2, with_meta=False)
    source = open_source(data / "archive")
    assert source.name == "cifar10" and len(source) == 10
    assert source.class_names[0] == "airplane"  # the known names when batches.meta is absent


def test_cifar_missing_batch_is_named(tmp_path):
    datagen.write_cifar(tmp_path, "cifar10", per_batch=2)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FfmixError, match="data_batch_3"):
        open_source(tmp_path, format="cifar10")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-the-batch-dict"])
def test_malicious_cifar_pickle_is_refused_and_never_runs(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = {b"data": _RunsCode(marker), b"labels": [0]} if nested else _RunsCode(marker)
    assert pickle.loads(pickle.dumps(payload, protocol=2)) is not None and marker.exists()  # it really runs
    marker.unlink()
    folder = tmp_path / "cifar"
    datagen.write_cifar(folder, "cifar10", per_batch=2)
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(FfmixError) as error:
        open_source(folder)
    message = str(error.value)
    assert "refusing to load" in message and "data_batch_1" in message and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("content, problem", [
    (b"not a pickle at all", "not a readable CIFAR"),
    (pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR python batch"),
    (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2), "(N, 3072) uint8"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2), "2 images but 1 labels"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [-1]}, protocol=2), "non-negative"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, protocol=2), "only 10 classes"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0.5]}, protocol=2), "must be integers"),
])
def test_bad_cifar_batches_are_explained(tmp_path, content, problem):
    datagen.write_cifar(tmp_path, "cifar10", per_batch=1)
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(FfmixError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        open_source(tmp_path, split="test")


def test_python3_protocol2_pickles_load_too(tmp_path):
    # re-saved batches (Python 3, protocol 2) reference _codecs.encode for bytes: allowed for latin1 only
    batch = {b"data": (np.arange(3072) % 256).astype(np.uint8).reshape(1, 3072), b"labels": [3]}
    raw = pickle.dumps(batch, protocol=2)
    assert b"_codecs" in raw
    (tmp_path / "f").write_bytes(raw)
    loaded = load_batch(tmp_path / "f")
    assert np.array_equal(loaded[b"data"], batch[b"data"]) and loaded[b"labels"] == [3]


# -------------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_round_trip_and_split_selection(tmp_path, gz):
    train = (datagen.smooth_images(7, 28, 28, 1, seed=1), datagen.labels_for(7, 10, seed=1))
    test = (datagen.smooth_images(5, 28, 28, 1, seed=2), datagen.labels_for(5, 10, seed=2))
    datagen.write_idx_dataset(tmp_path, {"train": train, "test": test}, gz=gz)
    assert detect_format(tmp_path) == "idx"
    for split, (images, labels) in (("train", train), ("test", test)):
        source = open_source(tmp_path, split=split)
        assert source.channels == 1 and source.split == split
        assert np.array_equal(np.stack([source.read(i) for i in range(len(source))]), images)
        assert source.labels.tolist() == labels.tolist()
        assert source[0][0].shape == (28, 28, 3) and np.array_equal(source[0][0][:, :, 2], images[0])
    single = open_source(next(tmp_path.glob("t10k-images*")))  # one images file as SOURCE
    assert len(single) == 5


def test_idx_header_errors(tmp_path):
    images = datagen.smooth_images(3, 4, 4, 1)
    path = datagen.write_idx(tmp_path / "x-images-idx3-ubyte", images, gz=False)
    assert np.array_equal(read_idx(path), images)
    path.write_bytes(datagen.idx_bytes(images)[:-5])
    with pytest.raises(FfmixError, match="truncated or corrupt"):
        read_idx(path)
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(FfmixError, match="is not an IDX file"):
        read_idx(path)
    (tmp_path / "y.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(FfmixError, match="cannot read IDX file"):
        read_idx(tmp_path / "y.gz")


def test_idx_mismatched_lengths(tmp_path):
    datagen.write_idx(tmp_path / "train-images-idx3-ubyte", datagen.smooth_images(4, 8, 8, 1), gz=True)
    datagen.write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(3, dtype=np.uint8), gz=True)
    with pytest.raises(FfmixError, match="4 images but .* 3 labels"):
        open_source(tmp_path)


def test_idx_missing_split_and_missing_labels(tmp_path):
    datagen.write_idx(tmp_path / "train-images-idx3-ubyte", datagen.smooth_images(2, 8, 8, 1), gz=False)
    with pytest.raises(FfmixError, match="labels file"):
        open_source(tmp_path)
    with pytest.raises(FfmixError, match="no IDX images file for the test split"):
        open_source(tmp_path, format="idx", split="test")


def test_fashion_mnist_gets_its_class_names():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip("Fashion-MNIST is not installed (make setup installs it)")
    source = open_source(folder, split="test")
    assert source.class_names[0] == "T-shirt/top" and source.class_names[9] == "Ankle boot"
    assert np.bincount(source.labels).tolist() == [1000] * 10


# -------------------------------------------------------------------------------------------------- npz

def test_npz_gray_colour_and_class_names(tmp_path):
    gray = datagen.smooth_images(6, 9, 7, 1)
    path = datagen.write_npz(tmp_path / "g.npz", gray[..., None], np.arange(6) % 3, class_names=["a", "b", "c"])
    source = open_source(path)
    assert source.name == "npz" and source.channels == 1 and source.class_names == ["a", "b", "c"]
    assert np.array_equal(source.read(4), gray[4])
    colour = datagen.smooth_images(3, 5, 6, 3)
    source = open_source(datagen.write_npz(tmp_path / "c.npz", colour, np.array([2.0, 0.0, 1.0])))
    assert source.channels == 3 and source.labels.dtype == np.int64 and source.labels.tolist() == [2, 0, 1]
    assert source.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("images, labels, problem", [
    (np.zeros((3, 4, 4), np.uint8), np.arange(2), "3 images but 2 labels"),
    (np.zeros((2, 4, 4), np.uint8), np.array([0, -3]), r"label 1 is -3"),
    (np.zeros((2, 4, 4), np.uint8), np.array([0.0, 1.5]), r"must be integers; label 1 is 1.5"),
    (np.zeros((2, 4, 4), np.float32), np.arange(2), "must be uint8"),
    (np.zeros((2, 4, 4, 4), np.uint8), np.arange(2), r"\(H, W, 3\) RGB"),
    (np.zeros((0, 4, 4), np.uint8), np.arange(0), "empty"),
    (np.zeros((2, 4, 4), np.uint8), np.array(["cat", "dog"]), "must be integers"),
])
def test_npz_bad_content_is_explained(tmp_path, images, labels, problem):
    path = datagen.write_npz(tmp_path / "bad.npz", images, labels)
    with pytest.raises(FfmixError, match=problem):
        open_source(path)


def test_npz_missing_arrays_and_pickled_objects(tmp_path):
    np.savez(tmp_path / "x.npz", pictures=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FfmixError, match="lacks the array.*images, labels.*it has: pictures"):
        open_source(tmp_path / "x.npz")
    np.savez(tmp_path / "o.npz", images=np.zeros((1, 2, 2), np.uint8), labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FfmixError, match="cannot read .* as an .npz"):
        open_source(tmp_path / "o.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(FfmixError, match="cannot read"):
        open_source(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------- folders

def test_image_folder_order_modes_and_ignored_entries(tmp_path):
    written = datagen.write_image_folder(tmp_path, ["zebra", "ant", "Bee"], 2, [(6, 5)], ext=".png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / "nested").mkdir()
    Image.fromarray(np.full((3, 4), 77, np.uint8)).save(tmp_path / "ant" / "nested" / "deep.PNG")
    Image.fromarray(np.zeros((2, 3, 4), np.uint8)).save(tmp_path / "zebra" / "rgba.png")  # RGBA
    source = open_source(tmp_path)
    assert source.class_names == ["Bee", "ant", "zebra"]  # sorted as strings, like torchvision
    assert source.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert [p.name for p in source.files] == ["img_000.png", "img_001.png", "img_000.png", "img_001.png",
                                              "deep.PNG", "img_000.png", "img_001.png", "rgba.png"]
    assert np.array_equal(source.read(0), written[0][2])
    assert source.read(4).shape == (3, 4) and source.read(4)[0, 0] == 77  # grayscale stays 2-D
    assert source.read(7).shape == (2, 3, 3)  # alpha dropped
    assert np.array_equal(to_rgb(source.read(4))[:, :, 1], source.read(4))


def test_image_folder_16_bit_grayscale_is_scaled(tmp_path):
    (tmp_path / "a").mkdir()
    values = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a" / "deep.png")
    assert open_source(tmp_path).read(0).tolist() == [[0, 100], [255, 3]]


def test_image_folder_errors(tmp_path):
    datagen.write_image_folder(tmp_path / "ok", ["a", "b"], 1, [(4, 4)])
    (tmp_path / "ok" / "c").mkdir()
    with pytest.raises(FfmixError, match=r"class folder .*c holds no images"):
        open_source(tmp_path / "ok")
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(FfmixError, match="cannot tell the format"):
        open_source(tmp_path / "flat")
    with pytest.raises(FfmixError, match="no class folders"):
        open_source(tmp_path / "flat", format="imagefolder")
    with pytest.raises(FfmixError, match="no train/ subfolder"):
        open_source(tmp_path / "ok", split="train")


def test_image_folder_splits(tmp_path):
    datagen.write_image_folder(tmp_path / "train", ["a", "b"], 2, [(4, 4)])
    datagen.write_image_folder(tmp_path / "val", ["a", "b"], 1, [(4, 4)])
    assert len(open_source(tmp_path, split="train")) == 4
    assert len(open_source(tmp_path, split="test")) == 2  # ImageNet calls it val
    with pytest.raises(FfmixError, match="split folders .*train, val.*pass --split"):
        open_source(tmp_path)  # not a dataset of two classes named train and val


def test_undecodable_image_names_the_file(tmp_path):
    datagen.write_image_folder(tmp_path, ["a"], 1, [(8, 8)], ext=".jpg")
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes((tmp_path / "a" / "img_000.jpg").read_bytes()[:60])
    source = open_source(tmp_path)
    with pytest.raises(BadSampleError) as error:
        source.read(0)
    assert str(broken) in str(error.value) and error.value.sample == str(broken)


# ------------------------------------------------------------------------------------------- the basics

def test_missing_source_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(tmp_path / "nope")
    (tmp_path / "file.bin").write_bytes(b"123")
    with pytest.raises(FfmixError, match="cannot tell the format of file"):
        open_source(tmp_path / "file.bin")
    with pytest.raises(FfmixError, match="unknown format 'tfrecord'"):
        open_source(tmp_path, format="tfrecord")
    with pytest.raises(FfmixError, match="label_kind applies to cifar100 only"):
        open_source(tmp_path, format="idx", label_kind="coarse")


def test_check_labels_rules():
    assert check_labels([3, 0, 2], "x").tolist() == [3, 0, 2]
    assert check_labels(np.array([[1], [2]]), "x").tolist() == [1, 2]
    assert check_labels(np.array([1.0, 2.0]), "x").dtype == np.int64
    for bad, problem in [([1, -1], "non-negative"), ([0.5], "integers"), ([np.nan], "integers"),
                         ([True, False], "integers"), (np.zeros((2, 2)), "one integer per sample")]:
        with pytest.raises(FfmixError, match=problem):
            check_labels(bad, "x")
    with pytest.raises(FfmixError, match="only 3 classes"):
        check_labels([0, 3], "x", num_classes=3)


def test_a_stray_label_is_refused_before_its_classes_are_allocated():
    """One label of 2**40 once built 2**40 class names (24 GB, then a MemoryError "bug"); 99999 among 20
    images silently made a 100,000-class dataset. Both are refused, naming the keyword that accepts them."""
    import tracemalloc
    images = np.zeros((20, 4, 4), np.uint8)
    for stray, problem in [(3 * 10 ** 6, "more than ffmix handles"), (2 ** 40, "more than ffmix handles"),
                           (99999, "would make 100000 classes for 20 samples")]:
        labels = [0] * 19 + [stray]
        tracemalloc.start()
        try:
            with pytest.raises(FfmixError, match=problem) as caught:
                ArraySource(images, labels)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "label 19 is" in str(caught.value) and "--" not in str(caught.value)
        assert peak < 4 << 20, f"{peak} bytes allocated before refusing label {stray}"
    assert "num_classes=100000" in str(caught.value)
    stated = ArraySource(images, [0] * 19 + [99999], num_classes=100000)
    assert stated.num_classes == 100000 and stated.class_names[-1] == "99999"
    # a few sparse labels among few images stay fine: that is a subset, not a stray label
    assert ArraySource(images, [0] * 19 + [999]).num_classes == 1000
    with pytest.raises(FfmixError, match="num_classes=10 allows 0..9"):
        ArraySource(images, [0] * 19 + [10], num_classes=10)
    with pytest.raises(FfmixError, match="num_classes must be a positive integer"):
        ArraySource(images, [0] * 20, num_classes=0)
    with pytest.raises(FfmixError, match="2 class names but num_classes=3"):
        ArraySource(images, [0] * 19 + [1], class_names=["a", "b"], num_classes=3)


def test_a_stated_class_count_applies_to_every_index_labelled_format(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1, 5000]))
    with pytest.raises(FfmixError, match="num_classes=5001"):
        open_source(tmp_path / "d.npz")
    assert open_source(tmp_path / "d.npz", num_classes=5001).num_classes == 5001
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    (tmp_path / "list.csv").write_text("a.png,0\nb.png,4000\n")
    with pytest.raises(FfmixError, match="would make 4001 classes for 2 samples"):
        open_source(tmp_path / "list.csv")
    folder = tmp_path / "folder"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / name / "x.png")
    with pytest.raises(FfmixError, match="has 2 classes but num_classes=3"):
        open_source(folder, num_classes=3)


def test_a_string_of_class_names_and_bool_labels_are_refused():
    """class_names="abcd" became four classes a, b, c, d; a label True became class 1."""
    images = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(FfmixError, match="class_names must be a list of names, one per class, got the string 'abcd'"):
        ArraySource(images, [0, 1, 2, 3], class_names="abcd")
    for labels in ([0, True, 2, 3], (0, 1, 2, np.True_)):
        with pytest.raises(FfmixError, match="labels must be integers; label [13] is "):
            check_labels(labels, "x")
    assert check_labels([0, 1, 2, 3], "x").tolist() == [0, 1, 2, 3]


def test_array_source_accepts_lists_of_sizes():
    images = [np.zeros((4, 5), np.uint8), np.ones((6, 3, 3), np.uint8)]
    source = ArraySource(images, [1, 0], class_names=["x", "y"])
    assert source.channels == 3 and source.max_image_bytes() == 4 * 5 * 3
    assert source[0][0].shape == (4, 5, 3) and source[1][1] == 0
    with pytest.raises(FfmixError, match="only 1 class names"):
        ArraySource(images, [1, 0], class_names=["x"])


# ------------------------------------------------------------------------------------ links and duplicates

def test_a_symlink_cycle_is_followed_once_and_warned(tmp_path):
    datagen.write_image_folder(tmp_path, ["a", "b"], 1, [(4, 4)])
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)  # a/loop/a/loop/... forever
    with pytest.warns(FfmixWarning, match=r"a/loop is a symbolic-link cycle") as caught:
        source = open_source(tmp_path)
    assert len(caught) == 1
    assert len(source) == 2 and source.labels.tolist() == [0, 1]
    assert [p.relative_to(tmp_path).as_posix() for p in source.files] == ["a/img_000.png", "b/img_000.png"]


def test_a_folder_linked_from_another_class_stays_in_its_own_class(tmp_path):
    datagen.write_image_folder(tmp_path, ["a", "b"], 2, [(4, 4)])
    (tmp_path / "a" / "more").symlink_to(tmp_path / "b", target_is_directory=True)
    with pytest.warns(FfmixWarning, match=r"a/more is a link to a folder already read \(.*/b\)"):
        source = open_source(tmp_path)
    assert source.labels.tolist() == [0, 0, 1, 1]
    assert [p.parent.name for p in source.files] == ["a", "a", "b", "b"]


def test_a_folder_reached_twice_below_the_classes_is_read_once(tmp_path):
    datagen.write_image_folder(tmp_path, ["a"], 1, [(4, 4)])
    datagen.write_image_folder(tmp_path / "a" / "sub", ["deep"], 3, [(4, 4)])
    (tmp_path / "a" / "z-again").symlink_to(tmp_path / "a" / "sub", target_is_directory=True)
    with pytest.warns(FfmixWarning, match="z-again is a link to a folder already read"):
        source = open_source(tmp_path)
    assert len(source) == 4 and not any("z-again" in str(p) for p in source.files)


def test_one_real_file_reached_twice_is_refused_naming_both(tmp_path):
    datagen.write_image_folder(tmp_path / "soft", ["a", "b"], 1, [(4, 4)])
    (tmp_path / "soft" / "b" / "copy.png").symlink_to(tmp_path / "soft" / "a" / "img_000.png")
    with pytest.raises(FfmixError, match=r"a/img_000.png and .*b/copy.png are the same file"):
        open_source(tmp_path / "soft")
    datagen.write_image_folder(tmp_path / "hard", ["a", "b"], 1, [(4, 4)])
    os.link(tmp_path / "hard" / "a" / "img_000.png", tmp_path / "hard" / "b" / "hard.png")
    with pytest.raises(FfmixError, match="same file"):
        open_source(tmp_path / "hard")


def test_a_class_folder_that_is_a_link_to_another_class_is_an_error(tmp_path):
    datagen.write_image_folder(tmp_path, ["a"], 1, [(4, 4)])
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    with pytest.raises(FfmixError, match=r"class folder .*b holds no images \(it is the folder .*a, already read\)"):
        with pytest.warns(FfmixWarning, match="a link to a folder already read"):
            open_source(tmp_path)


def test_path_list_round_trips_paths():
    paths = PathList()
    names = ["/x/a.png", "relative/b c.jpg", "/ü/ñ.png", ""]
    for name in names:
        paths.append(name)
    assert len(paths) == 4 and [paths.text(i) for i in range(4)] == names
    assert paths[1] == Path("relative/b c.jpg") and paths[-2].name == "ñ.png" and paths[0:2][1].name == "b c.jpg"


# ------------------------------------------------------------------------------------------- file lists

def _list_dataset(root: Path):
    """Images in root/img/{k}.png (two sizes), and their pixels."""
    written = datagen.write_image_folder(root, ["img"], 6, [(5, 7), (6, 4)], ext=".png")
    return [(path, pixels) for path, _, pixels in written]


def test_file_list_with_index_labels_header_and_relative_paths(tmp_path):
    images = _list_dataset(tmp_path)
    rows = ["path,label"] + [f"img/{path.name},{k % 3}" for k, (path, _) in enumerate(images)]
    rows.insert(3, "")
    rows.insert(4, "# a comment")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    assert detect_format(tmp_path / "list.csv") == "filelist"
    source = open_source(tmp_path / "list.csv")
    assert source.name == "filelist" and len(source) == 6
    assert source.labels.tolist() == [0, 1, 2, 0, 1, 2] and source.class_names == ["0", "1", "2"]
    for k, (path, pixels) in enumerate(images):
        assert source.files[k] == path and np.array_equal(source.read(k), pixels)
    names = tmp_path / "names.txt"
    names.write_text("zero\none\ntwo\nthree\n")
    named = open_source(tmp_path / "list.csv", class_names_file=names)
    assert named.class_names == ["zero", "one", "two", "three"] and named.labels.tolist() == source.labels.tolist()


def test_file_list_with_name_labels_tabs_and_absolute_paths(tmp_path):
    images = _list_dataset(tmp_path)
    labels = ["dog", "cat", "dog", "emu", "cat", "dog"]
    rows = [f"{path}\t{label}" for (path, _), label in zip(images, labels)]  # absolute paths
    (tmp_path / "list.tsv").write_text("\n".join(rows))
    source = open_source(tmp_path / "list.tsv")
    assert source.class_names == ["cat", "dog", "emu"] and source.labels.tolist() == [1, 0, 1, 2, 0, 1]
    names = tmp_path / "names.txt"
    names.write_text("emu\ndog\ncat\nowl\n")
    ordered = open_source(tmp_path / "list.tsv", class_names_file=names)
    assert ordered.class_names == ["emu", "dog", "cat", "owl"] and ordered.labels.tolist() == [1, 2, 1, 0, 2, 1]


@pytest.mark.parametrize("rows, names, problem", [
    (["img/img_000.png,0", "img/missing.png,1"], None, r"line 2: .*missing.png does not exist"),
    (["img/img_000.png,0", "img/img_001.png,-1"], None, r"line 2: label -1 is negative"),
    (["img/img_000.png,cat", "img/img_001.png,2"], None, r"line 2 has the class index 2 but line 1 the class name"),
    (["img/img_000.png,0", "img/img_001.png,1", "img/img_000.png,1"], None,
     r"img_000.png \(line 1 .*\) and .*img_000.png \(line 3 .*\) are the same file"),
    (["img/img_000.png,0", "notes.txt,1"], None, r"line 2: notes.txt is not an image file"),
    (["img/img_000.png,0,extra"], None, r"line 1: expected 2 fields"),
    (["img/img_000.png,"], None, r"line 1: empty label"),
    (["img/img_000.png,owl"], "cat\ndog\n", r"line 1: class 'owl' is not in the class names file"),
    (["img/img_000.png,2"], "cat\ndog\n", r"line 1: label 2, but the class names file has only 2 names"),
    (["img/img_000.png,0"], "cat\ncat\n", r"names 'cat' twice"),
    (["path,label", "# nothing"], None, r"lists no images"),
    (["img,0"], None, r"is not an image file"),
])
def test_file_list_errors_name_the_line(tmp_path, rows, names, problem):
    _list_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    names_file = None
    if names is not None:
        names_file = tmp_path / "names.txt"
        names_file.write_text(names)
    with pytest.raises(FfmixError, match=problem):
        open_source(tmp_path / "list.csv", class_names_file=names_file)


def test_file_list_options_that_do_not_apply(tmp_path):
    _list_dataset(tmp_path)
    (tmp_path / "list.csv").write_text("img/img_000.png,0\n")
    with pytest.raises(FfmixError, match="no splits"):
        open_source(tmp_path / "list.csv", split="train")
    with pytest.raises(FfmixError, match="class_names_file applies to file lists and shards only"):
        open_source(tmp_path, format="imagefolder", class_names_file=tmp_path / "list.csv")


# ------------------------------------------------------------------------------------------ JPEG headers

def _jpeg(mode="RGB", size=(33, 17), **options) -> bytes:
    import io
    stream = io.BytesIO()
    pixels = datagen.smooth_images(1, size[1], size[0], 3)[0]
    Image.fromarray(pixels).convert(mode).save(stream, "JPEG", **options)
    return stream.getvalue()


def test_jpeg_headers_say_what_ffcv_can_store_as_is():
    for data, components in [(_jpeg(), 3), (_jpeg("L"), 1), (_jpeg(progressive=True), 3),
                             (_jpeg(subsampling=0), 3)]:
        header = read_jpeg_header(data)
        assert (header.height, header.width, header.components, header.storable) == (17, 33, components, True)
    cmyk = read_jpeg_header(_jpeg("CMYK"))
    assert not cmyk.storable and "4 components" in cmyk.reason
    plain = _jpeg(size=(64, 48))
    assert "cut off" in read_jpeg_header(plain[:len(plain) - 40]).reason
    frame = plain.index(b"\xff\xc0")
    twelve_bit = plain[:frame + 4] + bytes([12]) + plain[frame + 5:]
    assert "12-bit" in read_jpeg_header(twelve_bit).reason
    lossless = plain[:frame + 1] + b"\xc3" + plain[frame + 2:]
    assert "SOF3" in read_jpeg_header(lossless).reason
    assert read_jpeg_header(b"\x89PNG\r\n\x1a\n") is None and read_jpeg_header(plain[:30]) is None
