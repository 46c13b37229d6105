"""``ffmix inspect``: the numbers it prints are the file's, for ffmix files and plain FFCV files alike."""
from __future__ import annotations

import json

import numpy as np
import pytest

import datagen
from ffmix import cli
from ffmix.convert import convert_arrays
from ffmix.metadata import meta_path


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    """Variable sizes, grayscale, three named classes (one of them empty), half JPEG."""
    path = tmp_path_factory.mktemp("inspect") / "small.beton"
    images = [datagen.smooth_images(1, h, w, 1, seed=i)[0] for i, (h, w) in
              enumerate([(20, 30)] * 4 + [(12, 12)] * 2 + [(30, 20)])]
    labels = [0, 0, 0, 2, 2, 0, 2]
    convert_arrays(images, labels, path, class_names=["ant", "bee", "cat"], write_mode="smart",
                   smart_threshold=500)
    return path


def run_inspect(argv, capsys):
    code = cli.main(["inspect", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_report_holds_the_file_numbers(beton, capsys):
    code, out, _ = run_inspect([beton, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["num_samples"] == 7 and report["file_bytes"] == beton.stat().st_size
    assert report["fields"] == {"image": "RGBImageField", "label": "IntField"}
    images = report["images"]
    assert images["min_size"] == [12, 12] and images["max_size"] == [30, 30] and images["distinct_sizes"] == 3
    assert images["common_sizes"][0] == {"size": [20, 30], "count": 4}
    assert images["stored_as"] == {"jpg": 5, "raw": 2}  # 12x12x3 = 432 bytes <= 500 stays raw
    assert images["channels"] == 1
    labels = report["labels"]
    assert labels["num_classes"] == 3 and labels["empty_classes"] == [1]
    assert labels["histogram"] == [{"label": 0, "name": "ant", "count": 4}, {"label": 2, "name": "cat", "count": 3}]
    assert report["ffmix"]["class_names"] == ["ant", "bee", "cat"]


def test_text_report_for_people(beton, capsys):
    code, out, _ = run_inspect([beton], capsys)
    assert code == 0
    assert "samples    7" in out
    assert "fields     image: RGBImageField, label: IntField" in out
    assert "12x12 to 30x30 (H x W), 3 distinct; most common 20x30: 4" in out
    assert "stored as jpg 5, raw 2; grayscale source" in out
    assert "classes    3" in out and "classes with no samples: [1]" in out
    row = next(line for line in out.splitlines() if " ant " in line)
    assert row.split()[:4] == ["0", "ant", "4", "57.1%"]


def test_plain_ffcv_file_without_sidecar(tmp_path, capsys):
    path = tmp_path / "plain.beton"
    convert_arrays(np.zeros((5, 8, 8, 3), np.uint8), [1, 1, 4, 4, 4], path)
    meta_path(path).unlink()
    code, out, _ = run_inspect([path, "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ffmix"] is None and "no ffmix sidecar" in report["sidecar_problem"]
    assert [(row["label"], row["count"]) for row in report["labels"]["histogram"]] == [(1, 2), (4, 3)]
    code, out, _ = run_inspect([path], capsys)
    assert code == 0 and "channels unknown" in out and "no ffmix sidecar" in out


def test_not_a_beton_and_missing_file(tmp_path, capsys):
    (tmp_path / "junk.beton").write_bytes(b"\x00" * 10)
    for path, fragment in [(tmp_path / "junk.beton", "is not a readable FFCV .beton"),
                           (tmp_path / "missing.beton", "no such .beton file")]:
        code, out, err = run_inspect([path], capsys)
        assert code == 1 and out == "" and "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ffmix inspect: error: ") and fragment in lines[0]


def _damaged_copies(beton, folder):
    """The fixture's file cut by one byte, and cut before its allocation table; each with its sidecar."""
    from ffmix.ffcv_compat import open_reader
    data = beton.read_bytes()
    alloc_table_start = int(open_reader(beton).header["alloc_table_ptr"])
    copies = {"one byte cut": data[:-1], "allocation table missing": data[:alloc_table_start]}
    paths = {}
    for i, (damage, content) in enumerate(copies.items()):
        path = folder / f"damaged{i}.beton"
        path.write_bytes(content)
        meta_path(path).write_bytes(meta_path(beton).read_bytes())
        paths[damage] = path
    return paths


def test_a_damaged_file_fails_as_the_loader_fails_naming_the_damage(beton, tmp_path, capsys):
    """inspect once printed a normal table and exited 0 for these, and blamed 'different conversions' with
    the sidecar present; the loader refused them. Both now run one check and give one message."""
    from ffmix.integrity import open_whole_beton
    from ffmix.loader import make_loader
    for damage, path in _damaged_copies(beton, tmp_path).items():
        for with_sidecar in (True, False):
            if not with_sidecar:
                meta_path(path).unlink()
            code, out, err = run_inspect([path], capsys)
            assert code == 1 and out == "", (damage, out)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("ffmix inspect: error: "), err
            assert str(path) in lines[0] and "truncated" in lines[0] and "different conversions" not in err
            with pytest.raises(Exception) as direct:
                open_whole_beton(path)
            assert lines[0] == f"ffmix inspect: error: {direct.value}"
        meta_path(path).write_bytes(meta_path(beton).read_bytes())
        with pytest.raises(Exception) as by_loader:
            make_loader(path, batch_size=2, image_size=8)
        assert str(by_loader.value) == str(direct.value), damage
