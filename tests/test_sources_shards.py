"""Shards and Python datasets as ``ffmix convert`` sources: Hugging Face parquet, WebDataset tars, any map-style
dataset. Each on small files written here: JPEGs stored byte for byte, labels and class names as given, every
hostile or damaged input refused naming its shard and row or key, memory flat over row groups, and the loader
reading each result."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import datagen
from ffmix import convert_dataset, make_loader
from ffmix.convert import convert
from ffmix.errors import FfmixError
from ffmix.metadata import read_meta
from ffmix.sources import detect_format, open_source
from ffmix.sources.shards import expand_braces
from test_convert import assert_nothing_left, read_beton, run_cli, stored_samples

pyarrow = pytest.importorskip("pyarrow", reason="parquet tests need pyarrow (pip install 'ffmix[parquet]')")
import pyarrow.parquet as parquet  # noqa: E402

IMAGE_STRUCT = pyarrow.struct([("bytes", pyarrow.binary()), ("path", pyarrow.string())])
NAMES = ["ant", "bee", "cat"]


def jpeg_bytes(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def huge_header_jpeg(pixels: np.ndarray) -> bytes:
    """A small valid JPEG whose frame header is rewritten to claim 60000 x 60000 pixels."""
    data = bytearray(jpeg_bytes(pixels))
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


def write_parquet(path, cells, labels, *, names=None, row_group_size=4, struct=True):
    """``cells``: bytes, or ``(bytes or None, path or None)`` pairs for the struct layout."""
    if struct:
        values = [{"bytes": cell, "path": None} if not isinstance(cell, tuple) else
                  {"bytes": cell[0], "path": cell[1]} for cell in cells]
        images = pyarrow.array(values, IMAGE_STRUCT)
    else:
        images = pyarrow.array(cells, pyarrow.binary())
    table = pyarrow.table({"image": images, "label": pyarrow.array(labels, pyarrow.int64())})
    if names is not None:  # what Hugging Face datasets writes for a ClassLabel column
        features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    parquet.write_table(table, path, row_group_size=row_group_size)
    return path


def add_member(tar, name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path, samples, extra=()):
    """``samples``: ``(key, {extension: bytes})``; ``extra``: ``add_member`` arguments appended at the end."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for key, members in samples:
            for extension, data in members.items():
                add_member(tar, f"{key}.{extension}", data)
        for member in extra:
            add_member(tar, *member)
    return path


@pytest.fixture(scope="module")
def images():
    """12 JPEGs of 16x16 (one progressive, one gray), their decoded pixels, labels, and a PNG."""
    pixels = list(datagen.smooth_images(10, 16, 16, 3, seed=40))
    encoded = [jpeg_bytes(p) for p in pixels]
    pixels.append(datagen.smooth_images(1, 16, 16, 3, seed=41)[0])
    encoded.append(jpeg_bytes(pixels[-1], progressive=True))
    gray = datagen.smooth_images(1, 16, 16, 1, seed=42)[0]
    pixels.append(np.repeat(gray[:, :, None], 3, axis=2))
    encoded.append(jpeg_bytes(gray))
    # libjpeg-turbo's decode through OpenCV; FFCV's TurboJPEG settings differ from it by a few levels
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1] for data in encoded]
    labels = datagen.labels_for(len(encoded), 3, seed=43).tolist()
    png_pixels = datagen.smooth_images(1, 16, 16, 3, seed=44)[0]
    return dict(jpegs=encoded, decoded=decoded, labels=labels, png=png_bytes(png_pixels), png_pixels=png_pixels)


def assert_stored_as_is(out, jpegs):
    assert [block for block, _, _ in stored_samples(out)] == list(jpegs)


def assert_decodes_to(loaded: torch.Tensor, expected) -> None:
    """The loader's uint8 NCHW images against the reference decodes: the same images in the same order (any
    swap or shift differs by far more), up to the few levels two JPEG decoders' rounding differ by."""
    difference = np.abs(loaded.permute(0, 2, 3, 1).numpy().astype(np.int16) - np.stack(expected).astype(np.int16))
    assert difference.max() <= 6 and difference.mean() < 1.0, (difference.max(), difference.mean())


def loader_batches(path):
    """Every (uint8 NCHW images, labels) of ``path`` through ffmix's loader, smallest settings, file order."""
    loader = make_loader(path, batch_size=8, order="sequential", num_workers=1, drop_last=False,
                         dtype=torch.uint8, normalize=False, targets="label", batches_ahead=1)
    pairs = [(x.contiguous().clone(), y.clone()) for x, y in loader]
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


# ---------------------------------------------------------------------------------------------- parquet

def test_hf_parquet_shards_store_jpegs_as_is_with_the_metadata_class_names(images, tmp_path, capsys):
    jpegs, labels = images["jpegs"], images["labels"]
    write_parquet(tmp_path / "train-00000-of-00002.parquet", jpegs[:7], labels[:7], names=NAMES)
    write_parquet(tmp_path / "train-00001-of-00002.parquet", jpegs[7:], labels[7:], names=NAMES)
    out = tmp_path / "p.beton"
    assert detect_format(str(tmp_path / "train-*.parquet")) == "parquet"
    code, stdout, err = run_cli(["convert", tmp_path / "train-*.parquet", out, "--write-mode", "jpg",
                                 "--workers", "2"], capsys)
    assert code == 0, err
    assert f"JPEG: {len(jpegs)} stored as they were, 0 encoded" in stdout
    assert_stored_as_is(out, jpegs)
    meta = read_meta(out)
    assert meta.class_names == NAMES and meta.source_format == "parquet"
    assert meta.label_counts == np.bincount(labels, minlength=3).tolist()
    decoded, loaded_labels = loader_batches(out)
    assert loaded_labels.tolist() == labels
    assert_decodes_to(decoded, images["decoded"])


def test_parquet_without_metadata_uses_index_names_or_the_names_file(images, tmp_path, capsys):
    cells = [images["png"]] + images["jpegs"][:3]
    write_parquet(tmp_path / "plain.parquet", cells, [2, 0, 1, 2], struct=False)
    out = tmp_path / "raw.beton"
    code, _, err = run_cli(["convert", tmp_path / "plain.parquet", out, "--workers", "1"], capsys)
    assert code == 0, err
    stored, labels, modes = read_beton(out)
    assert read_meta(out).class_names == ["0", "1", "2"] and labels.tolist() == [2, 0, 1, 2]
    assert modes == ["raw"] * 4 and np.array_equal(stored[0], images["png_pixels"])  # PNG exact in raw mode
    (tmp_path / "names.txt").write_text("x\ny\nz\n")
    code, _, err = run_cli(["convert", tmp_path / "plain.parquet", out, "--force", "--class-names",
                            tmp_path / "names.txt"], capsys)
    assert code == 0 and read_meta(out).class_names == ["x", "y", "z"]


def test_parquet_other_column_names(images, tmp_path, capsys):
    table = pyarrow.table({"jpg": pyarrow.array(images["jpegs"][:4], pyarrow.binary()), "cls": [0, 1, 1, 0]})
    parquet.write_table(table, tmp_path / "other.parquet")
    out = tmp_path / "o.beton"
    code, _, err = run_cli(["convert", tmp_path / "other.parquet", out], capsys)
    assert code == 1 and "has no column 'image'" in err and "--image-column" in err
    code, _, err = run_cli(["convert", tmp_path / "other.parquet", out, "--image-column", "jpg",
                            "--label-column", "cls", "--write-mode", "jpg"], capsys)
    assert code == 0, err
    assert_stored_as_is(out, images["jpegs"][:4])


def test_parquet_memory_stays_flat_over_row_groups(tmp_path):
    """Reading every image holds one row group at a time: Python's peak (tracemalloc) does not grow with the
    number of row groups, and pyarrow's pool never holds more than a few groups (its own buffers vary from run to
    run by a few hundred KB, so that bound is absolute: 8 groups of the 32 in the file)."""
    rng = np.random.default_rng(7)
    cell = 20_000
    group_rows = 6
    group_bytes = group_rows * cell
    python_peaks, pool_peaks = {}, {}
    for groups in (2, 32):
        cells = [rng.integers(0, 256, cell, dtype=np.uint8).tobytes() for _ in range(groups * group_rows)]
        path = write_parquet(tmp_path / f"g{groups}.parquet", cells, [0] * len(cells), row_group_size=group_rows)
        source = open_source(path)
        assert parquet.ParquetFile(path).num_row_groups == groups
        pool_before = pyarrow.total_allocated_bytes()
        pool_peak = 0
        tracemalloc.start()
        for index in range(len(source)):
            assert source._image_bytes(index) == cells[index]
            pool_peak = max(pool_peak, pyarrow.total_allocated_bytes() - pool_before)
        python_peaks[groups] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        pool_peaks[groups] = pool_peak
        del source
    assert python_peaks[32] < 1.25 * python_peaks[2] + 16_384, python_peaks
    assert pool_peaks[32] < 8 * group_bytes, pool_peaks


def test_parquet_path_cells_resolve_inside_the_folder_and_nowhere_else(images, tmp_path, capsys):
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.jpg").write_bytes(images["jpegs"][0])
    (tmp_path / "outside.jpg").write_bytes(images["jpegs"][1])
    good = write_parquet(folder / "good.parquet", [(None, "img/a.jpg"), images["jpegs"][2]], [0, 1])
    meta = convert(open_source(good), tmp_path / "g.beton", write_mode="jpg")
    assert meta.write_options["passed_through"] == 2
    assert_stored_as_is(tmp_path / "g.beton", [images["jpegs"][0], images["jpegs"][2]])
    for name, cell, fragment in [
            ("up", (None, "../outside.jpg"), "leads outside the parquet file's folder"),
            ("absolute", (None, str(tmp_path / "outside.jpg")), "leads outside the parquet file's folder"),
            ("missing", (None, "img/none.jpg"), "is not a file"),
            ("empty", (None, None), "neither bytes nor a path")]:
        bad = write_parquet(folder / f"{name}.parquet", [images["jpegs"][3], images["jpegs"][3], cell], [0, 0, 1],
                            row_group_size=2)
        out = tmp_path / f"{name}.beton"
        code, _, err = run_cli(["convert", bad, out], capsys)
        assert code == 1 and f"{name}.parquet row 2" in err and fragment in err, err
        assert_nothing_left(out)
    twice = write_parquet(folder / "twice.parquet", [(None, "img/a.jpg"), (None, "./img/a.jpg")], [0, 1])
    with pytest.raises(FfmixError, match="both name"):
        open_source(twice)


def test_parquet_bad_labels_schema_and_repeated_shards_are_refused(images, tmp_path, capsys):
    jpeg = images["jpegs"][0]
    table = pyarrow.table({"image": pyarrow.array([jpeg] * 3, pyarrow.binary()),
                           "label": pyarrow.array([0, None, 1], pyarrow.int64())})
    parquet.write_table(table, tmp_path / "null.parquet")
    write_parquet(tmp_path / "negative.parquet", [jpeg] * 3, [0, 1, -2], struct=False)
    write_parquet(tmp_path / "few-names.parquet", [jpeg] * 2, [0, 3], names=NAMES)
    parquet.write_table(pyarrow.table({"image": [jpeg], "label": ["cat"]}), tmp_path / "text.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    for name, fragment in [("null", "null.parquet row 1: the label is missing"),
                           ("negative", "negative.parquet row 2: label -2 is negative"),
                           ("few-names", "only 3 class names"), ("text", "not integer class indices"),
                           ("junk", "cannot read"), ("{negative,negative}", "are the same file")]:
        code, _, err = run_cli(["convert", tmp_path / f"{name}.parquet", tmp_path / "x.beton"], capsys)
        assert code == 1 and fragment in err, (name, err)
        assert_nothing_left(tmp_path / "x.beton")


def test_parquet_damaged_and_hostile_images_name_their_row(images, tmp_path, capsys):
    cut = images["jpegs"][1][:40]
    cells = [images["jpegs"][0], cut, huge_header_jpeg(images["decoded"][2]), images["jpegs"][3]]
    path = write_parquet(tmp_path / "damaged.parquet", cells, [0, 1, 2, 0], row_group_size=2)
    for mode in ("jpg", "raw"):  # pass-through and decode paths both refuse the 60000x60000 header
        out = tmp_path / f"d-{mode}.beton"
        code, _, err = run_cli(["convert", path, out, "--write-mode", mode, "--workers", "1"], capsys)
        assert code == 1 and "damaged.parquet row " in err and "--skip-bad" in err, err
        assert_nothing_left(out)
        code, stdout, err = run_cli(["convert", path, out, "--write-mode", mode, "--skip-bad"], capsys)
        assert code == 0 and "skipped 2 unreadable images" in stdout, err
        meta = read_meta(out)
        assert sorted(meta.write_options["skipped_samples"]) == [f"{path} row 1", f"{path} row 2"]
    huge = write_parquet(tmp_path / "huge.parquet", [images["jpegs"][0], cells[2]], [0, 1])
    code, _, err = run_cli(["convert", huge, tmp_path / "h.beton", "--write-mode", "jpg"], capsys)
    assert code == 1 and "huge.parquet row 1" in err and "claims 60000x60000 pixels" in err, err


def test_a_huge_jpeg_header_is_refused_on_the_pass_through_path_of_a_folder_too(images, tmp_path, capsys):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "0.jpg").write_bytes(images["jpegs"][0])
    (tmp_path / "src" / "a" / "1.jpg").write_bytes(huge_header_jpeg(images["decoded"][1]))
    out = tmp_path / "h.beton"
    code, _, err = run_cli(["convert", tmp_path / "src", out, "--write-mode", "jpg", "--workers", "1"], capsys)
    assert code == 1 and "1.jpg" in err and "claims 60000x60000 pixels" in err, err
    assert_nothing_left(out)


def test_a_row_group_that_fails_to_read_is_reported_per_row(images, tmp_path, monkeypatch):
    from ffmix.sources.parquet import ParquetSource

    path = write_parquet(tmp_path / "g.parquet", images["jpegs"][:6], [0, 1, 2] * 2, row_group_size=3)
    real_read = ParquetSource._read_group

    def damaged_second_group(self, group):
        if group == 1:
            raise OSError("Couldn't deserialize thrift: TProtocolException: Invalid data")
        return real_read(self, group)

    monkeypatch.setattr(ParquetSource, "_read_group", damaged_second_group)
    with pytest.raises(FfmixError, match="g.parquet row 3: cannot read its row group: Couldn't deserialize"):
        convert(open_source(path), tmp_path / "g.beton", write_mode="jpg")
    assert_nothing_left(tmp_path / "g.beton")
    meta = convert(open_source(path), tmp_path / "g.beton", write_mode="jpg", skip_bad=True)
    assert meta.write_options["skipped_samples"] == [f"{path} row {k}" for k in (3, 4, 5)]
    assert_stored_as_is(tmp_path / "g.beton", images["jpegs"][:3])


def test_a_missing_pyarrow_names_the_extra(tmp_path, monkeypatch, images, capsys):
    path = write_parquet(tmp_path / "p.parquet", images["jpegs"][:2], [0, 1])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = run_cli(["convert", path, tmp_path / "x.beton"], capsys)
    assert code == 1 and err.strip() == ("ffmix convert: error: reading parquet shards needs pyarrow: "
                                         "pip install 'ffmix[parquet]'")


# ------------------------------------------------------------------------------------------- WebDataset

def test_brace_ranges_and_lists_expand_in_order():
    assert expand_braces("a-{008..011}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
    assert expand_braces("{x,y}-{1..2}") == ["x-1", "x-2", "y-1", "y-2"]
    with pytest.raises(FfmixError, match="backwards"):
        expand_braces("s-{3..1}.tar")


def test_webdataset_shards_store_jpegs_as_is_and_the_loader_reads_them(images, tmp_path, capsys):
    jpegs, labels = images["jpegs"], images["labels"]
    samples = [(f"part/{k:06d}", {"jpg": data, "cls": f"{label}\n".encode(), "txt": b"ignored"})
               for k, (data, label) in enumerate(zip(jpegs, labels))]
    write_tar(tmp_path / "train-000000.tar", samples[:5])
    write_tar(tmp_path / "train-000001.tar", samples[5:])
    out = tmp_path / "w.beton"
    code, stdout, err = run_cli(["convert", tmp_path / "train-{000000..000001}.tar", out, "--write-mode", "jpg",
                                 "--workers", "2"], capsys)
    assert code == 0, err
    assert f"wrote {len(jpegs)} samples" in stdout and f"JPEG: {len(jpegs)} stored as they were" in stdout
    assert_stored_as_is(out, jpegs)
    assert read_meta(out).source_format == "webdataset"
    decoded, loaded_labels = loader_batches(out)
    assert loaded_labels.tolist() == labels
    assert_decodes_to(decoded, images["decoded"])
    code, stdout, err = run_cli(["convert", tmp_path / "train-*.tar", out, "--force", "--limit", "3"], capsys)
    assert code == 0 and "wrote 3 samples" in stdout


def test_webdataset_labels_from_a_json_field_and_png_images(images, tmp_path):
    samples = [("a", {"png": images["png"], "json": b'{"class_id": 2, "caption": "x"}'}),
               ("b", {"jpeg": images["jpegs"][0], "json": b'{"class_id": 0}'})]
    shard = write_tar(tmp_path / "j.tar", samples)
    source = open_source(shard, json_label="class_id")
    assert source.labels.tolist() == [2, 0]
    assert np.array_equal(source[0][0], images["png_pixels"])
    with pytest.raises(FfmixError, match="has no label"):
        open_source(shard)  # no .cls members


@pytest.mark.parametrize("case, fragment", [
    ("missing-label", "sample '000001' has no label (no 000001.cls member)"),
    ("duplicate-key", "key '000000' appears twice"),
    ("no-image", "sample '000001' has no image"),
    ("bad-label", "holds 'cat', not a non-negative class index"),
    ("symlink", "member 000009.jpg is a link"),
    ("hardlink", "member 000009.jpg is a link"),
    ("device", "is a device, FIFO or other special file"),
    ("fifo", "is a device, FIFO or other special file"),
    ("absolute", "is absolute or climbs out"),
    ("dotdot", "is absolute or climbs out"),
    ("no-extension", "has no KEY.EXTENSION name"),
    ("gzip", "gzip-compressed"),
    ("cut-in-header", "ends without tar's end-of-archive block after 000000.cls: the file is cut off"),
    ("cut-in-image", "as a tar file: unexpected end of data"),
])
def test_webdataset_hostile_or_broken_shards_are_refused_before_writing(images, tmp_path, capsys, case, fragment):
    jpeg = images["jpegs"][0]
    good = [("000000", {"jpg": jpeg, "cls": b"0"}), ("000001", {"jpg": jpeg, "cls": b"1"})]
    samples, extra = list(good), []
    if case == "missing-label":
        samples[1] = ("000001", {"jpg": jpeg})
    elif case == "duplicate-key":
        write_tar(tmp_path / "s-1.tar", [("000000", {"jpg": jpeg, "cls": b"1"})])
    elif case == "no-image":
        samples[1] = ("000001", {"cls": b"1"})
    elif case == "bad-label":
        samples[1] = ("000001", {"jpg": jpeg, "cls": b"cat"})
    elif case in ("symlink", "hardlink"):
        kind = tarfile.SYMTYPE if case == "symlink" else tarfile.LNKTYPE
        extra = [("000009.jpg", b"", kind, "/etc/passwd")]
    elif case in ("device", "fifo"):
        extra = [("000009.jpg", b"", tarfile.CHRTYPE if case == "device" else tarfile.FIFOTYPE)]
    elif case == "absolute":
        extra = [("/tmp/000009.jpg", jpeg)]
    elif case == "dotdot":
        extra = [("../000009.jpg", jpeg)]
    elif case == "no-extension":
        extra = [("README", b"hello")]
    shard = write_tar(tmp_path / "s-0.tar", samples, extra)
    if case == "gzip":
        import gzip
        shard.write_bytes(gzip.compress(shard.read_bytes()))
    if case.startswith("cut-"):  # headers and data are in 512-byte blocks: the second image's header, its data
        data_blocks = -(-len(jpeg) // 512)
        second_image_header = 512 * (1 + data_blocks + 2)
        cut = second_image_header + 100 if case == "cut-in-header" else second_image_header + 512 + 100
        shard.write_bytes(shard.read_bytes()[:cut])
    out = tmp_path / "x.beton"
    code, _, err = run_cli(["convert", tmp_path / "s-*.tar", out], capsys)
    assert code == 1 and "s-0.tar" in err and fragment in err, err
    assert_nothing_left(out)


def test_webdataset_damaged_and_hostile_images_name_their_key(images, tmp_path, capsys):
    samples = [("k0", {"jpg": images["jpegs"][0], "cls": b"0"}),
               ("k1", {"jpg": b"\xff\xd8 not a jpeg at all", "cls": b"1"}),
               ("k2", {"jpg": huge_header_jpeg(images["decoded"][2]), "cls": b"1"}),
               ("k3", {"png": images["png"][:30], "cls": b"0"})]
    shard = write_tar(tmp_path / "bad.tar", samples)
    out = tmp_path / "b.beton"
    code, _, err = run_cli(["convert", shard, out, "--write-mode", "jpg", "--workers", "1"], capsys)
    assert code == 1 and "bad.tar key 'k1'" in err, err
    assert_nothing_left(out)
    code, stdout, err = run_cli(["convert", shard, out, "--write-mode", "jpg", "--skip-bad"], capsys)
    assert code == 0 and "wrote 1 samples" in stdout and "skipped 3 unreadable images" in stdout, err
    assert_stored_as_is(out, [images["jpegs"][0]])


# --------------------------------------------------------------------------------------- Python datasets

class ListDataset:
    """A plain map-style dataset over a list, with no ``targets``: labels come from one pass over the items."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_a_list_backed_dataset_of_jpeg_bytes_is_stored_byte_identical(images, tmp_path):
    on_disk = tmp_path / "first.jpg"   # a Hugging Face decode=False cell that gives a path and no bytes
    on_disk.write_bytes(images["jpegs"][0])
    cells = [{"bytes": None, "path": str(on_disk)}] + images["jpegs"][1:]
    dataset = ListDataset([{"img": cell, "y": label} for cell, label in zip(cells, images["labels"])])
    out = tmp_path / "list.beton"
    meta = convert_dataset(dataset, out, image_key="img", label_key="y", class_names=NAMES, write_mode="jpg",
                           num_workers=2)
    assert meta.write_options["passed_through"] == len(images["jpegs"]) and meta.class_names == NAMES
    assert_stored_as_is(out, images["jpegs"])
    decoded, labels = loader_batches(out)
    assert labels.tolist() == images["labels"]
    assert_decodes_to(decoded, images["decoded"])


def test_every_image_kind_of_a_python_dataset_decodes_to_its_pixels(images, tmp_path):
    pixels = datagen.smooth_images(6, 9, 7, 3, seed=50)
    gray = datagen.smooth_images(1, 9, 7, 1, seed=51)[0]
    items = [(Image.fromarray(pixels[0]), 0),                               # PIL
             (pixels[1], 1),                                                # HWC array
             (np.ascontiguousarray(pixels[2].transpose(2, 0, 1)), 2),       # CHW array
             (torch.from_numpy(pixels[3].transpose(2, 0, 1).copy()), 0),    # CHW tensor
             (gray, 1),                                                     # HW array
             (png_bytes(pixels[4]), 2),                                     # encoded PNG
             ({"bytes": png_bytes(pixels[5]), "path": None}, 1)]            # Hugging Face decode=False cell
    out = tmp_path / "kinds.beton"
    meta = convert_dataset(items, out, num_workers=2)
    stored, labels, _ = read_beton(out)
    expected = list(pixels[:4]) + [np.repeat(gray[:, :, None], 3, axis=2)] + list(pixels[4:])
    assert all(np.array_equal(a, b) for a, b in zip(stored, expected))
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 1] and meta.source_format == "python"


def test_torchvision_fakedata_converts_with_its_pixels(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    dataset = torchvision.datasets.FakeData(size=10, image_size=(3, 12, 10), num_classes=4, random_offset=3)
    out = tmp_path / "fake.beton"
    meta = convert_dataset(dataset, out, num_workers=2)
    expected = [np.asarray(dataset[i][0]) for i in range(10)]
    decoded, labels = loader_batches(out)
    assert labels.tolist() == [int(dataset[i][1]) for i in range(10)]
    assert np.array_equal(decoded.permute(0, 2, 3, 1).numpy(), np.stack(expected))
    assert meta.num_samples == 10 and meta.image_shape == (12, 10)


def test_python_dataset_labels_from_targets_and_bad_items(images, tmp_path):
    class WithTargets(ListDataset):
        targets = [1, 0]

        def __getitem__(self, index):
            raise AssertionError("labels must come from targets, not from the items")

    class WithColumns(ListDataset):   # Hugging Face style: a whole column by name, here a lazy sequence
        column_names = ["picture", "category"]

        def __getitem__(self, index):
            if index == "category":
                return range(2, -1, -1)
            raise AssertionError("labels must come from the column, not from the items")

    from ffmix.sources.pydataset import PythonDatasetSource
    assert PythonDatasetSource(WithTargets([None, None])).labels.tolist() == [1, 0]
    with_columns = PythonDatasetSource(WithColumns([None] * 3), label_key="category", image_key="picture")
    assert with_columns.labels.tolist() == [2, 1, 0]
    cases = [(ListDataset([(images["jpegs"][0], -1)]), "labels must be non-negative"),
             (ListDataset([{"image": images["jpegs"][0]}]), "has no 'label' entry"),
             (ListDataset([images["jpegs"][0]]), "an item must be (image, label)"),
             (ListDataset([]), "the dataset is empty"),
             (iter([1, 2]), "has no len()")]
    for dataset, fragment in cases:
        with pytest.raises(FfmixError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            convert_dataset(dataset, tmp_path / "bad.beton")
        assert_nothing_left(tmp_path / "bad.beton")
    broken = ListDataset([(images["jpegs"][0], 0), (b"\xff\xd8 damaged", 1), (np.zeros((4, 4), np.float32), 0)])
    with pytest.raises(FfmixError, match="item 1 of"):
        convert_dataset(broken, tmp_path / "bad.beton", write_mode="jpg")
    meta = convert_dataset(broken, tmp_path / "ok.beton", write_mode="jpg", skip_bad=True)
    assert meta.num_samples == 1 and meta.write_options["skipped"] == 2


def test_shards_scanned_in_parallel_give_what_a_serial_scan_gives(images, tmp_path, monkeypatch):
    from ffmix.sources import webdataset

    for shard in range(3):
        samples = [(f"{shard}-{k}", {"jpg": images["jpegs"][k], "cls": str(k % 3).encode()}) for k in range(4)]
        write_tar(tmp_path / f"p-{shard}.tar", samples)
    serial = open_source(str(tmp_path / "p-{0..2}.tar"))
    monkeypatch.setattr(webdataset, "PARALLEL_SCAN_BYTES", 0)
    monkeypatch.setattr(webdataset, "available_cpus", lambda: 2)
    parallel = open_source(str(tmp_path / "p-{0..2}.tar"))
    assert parallel.labels.tolist() == serial.labels.tolist() == [0, 1, 2, 0] * 3
    assert [parallel.describe(i) for i in range(12)] == [serial.describe(i) for i in range(12)]
    assert all(parallel.read_encoded(i) == images["jpegs"][i % 4] for i in range(12))
    write_tar(tmp_path / "p-1.tar", [("1-0", {"jpg": images["jpegs"][0]})])  # an error inside a scanning process
    with pytest.raises(FfmixError, match="p-1.tar: sample '1-0' has no label"):
        open_source(str(tmp_path / "p-{0..2}.tar"))


def test_the_conversion_speed_bench_runs_and_checks_its_outputs():
    """The bench behind docs/convert.md, tiny, so it cannot rot: every source converts, every JPEG passes through."""
    from ffmix.bench.convert_sources import SOURCES, run, table

    result = run(count=24, height=16, width=20, noise=6.0, shards=2, workers=1, repeats=1)
    assert set(result["ratio_to_folder"]) == set(SOURCES) and result["ratio_to_folder"]["imagefolder"] == 1.0
    assert all(seconds > 0 for values in result["seconds"].values() for seconds in values)
    assert "webdataset" in table(result)
