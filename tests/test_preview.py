"""``ffmix preview``: the PNG has the size its layout promises, captions name the two heaviest classes, and bad
input gives one line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import datagen
from ffmix import cli
from ffmix.convert import convert_arrays
from ffmix.preview import CAPTION_PX, PAD_PX, ROW_LABEL_PX, caption, grid_layout, mixed_batch, title_px, top_two

NAMES = ["T-shirt", "Trouser", "Pullover", "Dress"]


@pytest.fixture(scope="module")
def gray_beton(tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "gray.beton"
    convert_arrays(datagen.smooth_images(40, 28, 28, channels=1), datagen.labels_for(40, 4), path,
                   class_names=NAMES, force=True)
    return path


def test_preview_writes_a_png_of_the_expected_size(gray_beton, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = cli.main(["preview", str(gray_beton), "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0", "--out", str(out),
                     "--count", "12", "--columns", "4"])
    assert code == 0, capsys.readouterr().err
    # 28 px images enlarged 5x (the smallest whole factor reaching 128 px): 4 columns, 3 rows of 140 px tiles
    width = PAD_PX + 4 * (140 + PAD_PX)
    # the settings line (about 690 px of 9 pt text) wraps once in 600 px: three title lines above the grid
    height = title_px(3) + 3 * (140 + CAPTION_PX + PAD_PX) + PAD_PX
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (width, height)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10, "the grid shows images, not a blank page"
    assert f"{width}x{height}" in capsys.readouterr().out


def test_layout_defaults_to_about_square_and_never_shrinks():
    assert grid_layout(16, 32, 32, 128)[:3] == (4, 4, 4)
    assert grid_layout(13, 300, 200, 128)[:3] == (4, 4, 1)       # large images stay at their size
    assert grid_layout(3, 10, 10, 128, columns=8)[:2] == (3, 1)   # no empty columns


def test_captions_name_the_two_heaviest_classes():
    row = np.array([0.0, 0.62, 0.0, 0.38], np.float32)
    assert [name for name, _ in top_two(row, NAMES)] == ["Trouser", "Dress"]
    assert caption(row, NAMES, 40) == "0.62 Trouser\n0.38 Dress"
    assert top_two(np.array([0, 0, 1.0, 0]), NAMES) == [("Pullover", 1.0)]   # same-class partners: one line


def test_preview_batch_is_raw_mixed_pixels_with_soft_targets(gray_beton):
    images, targets, meta = mixed_batch(gray_beton, count=12, mixup_alpha=0.0, cutmix_alpha=1.0, mix_prob=1.0,
                                        switch_prob=0.5, mode="elem", label_smoothing=0.0, image_size=None, seed=1,
                                        epoch=0)
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 1)
    assert meta.class_names == NAMES
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert ((targets > 0).sum(axis=1) == 2).any(), "CutMix mixed some images"


def test_preview_needs_an_image_size_for_varying_images(tmp_path, capsys):
    images = [datagen.smooth_images(1, h, w)[0] for h, w in ((20, 24), (30, 18), (24, 24), (18, 30))]
    beton = tmp_path / "varying.beton"
    convert_arrays(images, [0, 1, 0, 1], beton, force=True)
    out = tmp_path / "v.png"
    assert cli.main(["preview", str(beton), "--out", str(out)]) == 1
    assert "--image-size" in capsys.readouterr().err
    assert cli.main(["preview", str(beton), "--out", str(out), "--image-size", "16", "--count", "4"]) == 0
    with Image.open(out) as image:
        width, height = image.size
    # 280 px wide: the title wraps to more lines, each adding one line's height above the grid
    assert width == grid_layout(4, 16, 16, 128)[3]
    assert height in [grid_layout(4, 16, 16, 128, title_lines=n)[4] for n in range(3, 9)]


def test_preview_rejects_bad_options(gray_beton, tmp_path, capsys):
    assert cli.main(["preview", str(gray_beton), "--out", str(tmp_path / "grid.jpg")]) == 1
    assert ".png" in capsys.readouterr().err
    assert cli.main(["preview", str(tmp_path / "missing.beton"), "--out", str(tmp_path / "g.png")]) == 1
    assert "missing.beton" in capsys.readouterr().err
    assert cli.main(["preview", str(gray_beton), "--out", str(tmp_path / "g.png"), "--count", "0"]) == 1


def test_a_full_disk_leaves_an_existing_png_whole_and_names_it(gray_beton, tmp_path, capsys, monkeypatch):
    """With the disk full, preview once truncated the existing PNG in place and named no file. The disk fills
    (RLIMIT_FSIZE) when matplotlib starts saving, whether to a file or to memory, and stays full after."""
    from matplotlib.figure import Figure

    from fsize import set_file_size_limit
    out = tmp_path / "grid.png"
    out.write_bytes(b"\x89PNG an earlier grid")
    undo = []
    real_savefig = Figure.savefig

    def savefig_on_a_full_disk(self, *args, **kwargs):
        undo.append(set_file_size_limit(1000))
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig_on_a_full_disk)
    try:
        code = cli.main(["preview", str(gray_beton), "--out", str(out), "--count", "4"])
    finally:
        for step in undo:
            step()
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"ffmix preview: error: cannot write {out}: "), err
    assert ".tmp" not in err and "Traceback" not in err
    assert out.read_bytes() == b"\x89PNG an earlier grid"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_an_unwritable_out_is_refused_before_the_batch_is_made(tmp_path, capsys, monkeypatch):
    import ffmix.preview as preview
    monkeypatch.setattr(preview, "mixed_batch", lambda *a, **k: pytest.fail("the batch was made first"))
    (tmp_path / "a-file").write_text("x")
    code = cli.main(["preview", str(tmp_path / "any.beton"), "--out", str(tmp_path / "a-file" / "grid.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("ffmix preview: error: cannot write --out ") and "is not a folder" in err


def test_a_count_above_the_files_images_is_said_once(gray_beton, tmp_path, capsys):
    code = cli.main(["preview", str(gray_beton), "--out", str(tmp_path / "g.png"), "--count", "50"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("warning") == 1 and "ffmix preview: warning: --count 50 is more than the 40 images" in err


def test_a_long_title_on_a_narrow_grid_stays_above_the_tiles(tmp_path, monkeypatch):
    """The title was wrapped by matplotlib after the layout was fixed, over the first row of tiles."""
    import matplotlib.pyplot as plt

    import ffmix.preview as preview
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    images = np.full((2, 8, 8, 1), 128, np.uint8)
    targets = np.array([[1.0, 0.0], [0.4, 0.6]], np.float32)
    title = "narrow.beton: 2 images, raw pixels\n" + ", ".join(f"setting_{k}={k / 7:.3f}" for k in range(12))
    width, height = preview.draw_grid(images, targets, ["a", "b"], tmp_path / "g.png", title=title, tile_px=64)
    figure = kept[0]
    renderer = figure.canvas.get_renderer()
    title_box = figure.texts[0].get_window_extent(renderer)
    tiles_top = max(axis.get_window_extent(renderer).y1 for axis in figure.axes)
    assert title_box.y0 > tiles_top, (title_box, tiles_top)   # display y grows upwards
    assert title_box.x1 <= width and height > preview.TITLE_PX + 64 + CAPTION_PX
    with Image.open(tmp_path / "g.png") as image:
        assert image.size == (width, height)
    monkeypatch.undo()
    plt.close(figure)


# ------------------------------------------------------------------------------- the recipe, step by step

STAGE_COUNT, STAGE_PX = 5, 24


@pytest.fixture(scope="module")
def jpeg_beton(tmp_path_factory):
    """Colour JPEGs of varying sizes (they need --image-size)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(30, 60, (20, 2))
    images = [datagen.smooth_images(1, int(h), int(w), seed=k)[0] for k, (h, w) in enumerate(sizes)]
    path = tmp_path_factory.mktemp("preview_jpeg") / "photos.beton"
    convert_arrays(images, datagen.labels_for(20, 3), path, write_mode="jpg", class_names=["cat", "dog", "eel"],
                   force=True)
    return path


@pytest.fixture(scope="module")
def stages_run(jpeg_beton, tmp_path_factory):
    """One `ffmix preview --stages` run: its PNG, output and the rows it drew."""
    import ffmix.preview as preview
    out = tmp_path_factory.mktemp("stages") / "recipe.png"
    drawn = []
    real = preview.stage_batches
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preview, "stage_batches", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
        code = cli.main(["preview", str(jpeg_beton), "--out", str(out), "--image-size", str(STAGE_PX), "--hflip",
                         "--auto-augment", "rand-m9-mstd0.5-inc1", "--re-prob", "1", "--re-mode", "pixel",
                         "--mode", "elem", "--stages", "--count", str(STAGE_COUNT)])
    assert code == 0
    rows, meta = drawn[0]
    return out, rows, meta


def test_stages_grid_has_one_row_per_step_and_one_column_per_sample(stages_run):
    out, rows, _ = stages_run
    assert [stage for stage, _, _ in rows] == ["crop", "augment", "mix", "erase"]
    assert all(images.shape == (STAGE_COUNT, STAGE_PX, STAGE_PX, 3) for _, images, _ in rows)
    with Image.open(out) as image:
        size = image.size
        pixels = np.asarray(image.convert("L")).astype(int)
    layouts = [grid_layout(4 * STAGE_COUNT, STAGE_PX, STAGE_PX, 128, columns=STAGE_COUNT, title_lines=n,
                           row_label_px=ROW_LABEL_PX) for n in range(2, 6)]
    matching = [layout for layout in layouts if layout[3:] == size]
    assert matching, (size, layouts)
    columns, grid_rows, scale, width, height = matching[0]
    assert (columns, grid_rows) == (STAGE_COUNT, 4)
    tile = STAGE_PX * scale
    grid_top = height - PAD_PX - 4 * (ROW_LABEL_PX + tile + CAPTION_PX + PAD_PX)
    for row in range(4):
        top = grid_top + row * (ROW_LABEL_PX + tile + CAPTION_PX + PAD_PX) + ROW_LABEL_PX
        for column in range(STAGE_COUNT):
            left = PAD_PX + column * (tile + PAD_PX)
            inner = pixels[top + 2:top + tile - 2, left + 2:left + tile - 2]
            assert (inner < 250).mean() > 0.5, (row, column)        # a picture there
            gap = pixels[top:top + tile, left + tile + 1:left + tile + PAD_PX - 1]
            assert (gap >= 250).all(), (row, column)                 # white padding between tiles


def test_each_step_changes_what_it_should(stages_run):
    _, rows, _ = stages_run
    (_, crop, crop_targets), (_, augmented, _), (_, mixed, mix_targets), (_, erased, erase_targets) = rows
    assert any((a != b).any() for a, b in zip(crop, augmented)), "RandAugment changed some images"
    assert np.isin(crop_targets, (0.0, 1.0)).all()                  # unmixed rows: one class each
    assert (mix_targets.max(axis=1) < 1.0).any(), "mixing mixed some images"
    np.testing.assert_array_equal(erase_targets, mix_targets)        # erasing leaves targets alone
    for before, after in zip(mixed, erased):                         # re_prob=1: every tile erased, one box
        changed = (before != after).any(axis=2)
        assert changed.any()
        ys, xs = np.nonzero(changed)
        box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert box_area <= 0.45 * STAGE_PX * STAGE_PX                 # at most a third of the image (+ rounding)
        assert changed.sum() > 0.5 * box_area                         # a filled box, not scattered changes


def test_preview_help_explains_the_recipe_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["preview", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--stages", "--auto-augment", "--re-prob", "--re-mode", "--re-count", "--crop", "--hflip"):
        assert option in text
    assert "rand-m9-mstd0.5-inc1" in text and "clipped to 0..255" in text and "normalised space" in text


def test_erasing_preview_without_stages_and_stages_refuse_columns(gray_beton, tmp_path, capsys):
    out = tmp_path / "erased.png"
    code = cli.main(["preview", str(gray_beton), "--out", str(out), "--count", "4", "--re-prob", "1"])
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG"
    assert cli.main(["preview", str(gray_beton), "--out", str(out), "--stages", "--columns", "3"]) == 1
    assert "--columns" in capsys.readouterr().err
