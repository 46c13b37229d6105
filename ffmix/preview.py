"""``ffmix preview``: one augmented, mixed (and erased) batch as a captioned PNG grid, to see what the recipe
does before training with it.

    ffmix preview data/fmnist-train.beton --mixup-alpha 0.8 --cutmix-alpha 1.0 --out grid.png
    ffmix preview photos.beton --image-size 160 --hflip --auto-augment rand-m9-mstd0.5-inc1 --re-prob 0.25 \
        --stages --count 6 --out recipe.png

The batch comes from ``make_loader`` exactly as training would get it (same seed, epoch, crops, flips,
RandAugment, mixing and erasing), but as raw pixels (``normalize=False``, uint8), so the images look as stored.
RandomErasing writes normalised values (as timm, after normalisation), so with ``--re-prob`` the batch is made
normalised (float32) and mapped back to pixels, ``x * std + mean`` times 255, rounded and clipped to 0..255:
erased values outside 0..255 (normal values beyond about ±2.2 std for colour, ±1 for grayscale) saturate. ``--stages`` shows
the same samples in one row per step: the decoded crop (and flip), after RandAugment, after MixUp/CutMix, after
RandomErasing (rows for steps that are off are left out); the mixing and erasing rows are made the same way,
so they differ only in the erased boxes.

Each tile is the image enlarged by a whole factor (nearest neighbour, so pixels stay sharp) until its longer
side is at least ``--tile-px``; its caption names the two classes with the largest weights in the soft target,
with those weights (class names from the ``.beton``'s metadata).
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import FfmixError, FfmixWarning
from .system import check_writable, write_figure

PAD_PX = 8          # between tiles and around the grid
CAPTION_PX = 34     # two caption lines under each tile
TITLE_TOP_PX = 6    # above the title's first line
TITLE_LINE_PX = 15  # one 9 pt title line at DPI 100 (12.5 px of type, 1.2 line spacing)
TITLE_PX = TITLE_TOP_PX + 2 * TITLE_LINE_PX + 8   # the room above the grid for the usual two title lines
ROW_LABEL_PX = 16   # a stage's name above its row (--stages)
DPI = 100
STAGES = ("crop", "augment", "mix", "erase")
STAGE_NAMES = {"crop": "decoded crop", "augment": "after RandAugment", "mix": "after MixUp/CutMix",
               "erase": "after RandomErasing (normalised values mapped back to pixels, clipped)"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write one mixed batch of DATA.beton as a grid of images, each captioned with its two heaviest classes "
        "and their weights, so you can see what the augmentation does before training with it. The batch is "
        "the one training gets with the same options (crop, flip, --auto-augment, mixing, --re-prob). With "
        "--stages the grid has one row per step for the same samples: decoded crop (+flip), after RandAugment, "
        "after MixUp/CutMix, after RandomErasing. Erasing happens in normalised space; its tiles are mapped back "
        "to pixels (x * std + mean) and clipped to 0..255.")
    parser.add_argument("data", metavar="DATA.beton", help="a .beton written by `ffmix convert`")
    parser.add_argument("--out", required=True, metavar="PNG", help="the PNG file to write")
    parser.add_argument("--mixup-alpha", type=float, default=0.8, metavar="A", help="MixUp Beta(A, A); 0 = off")
    parser.add_argument("--cutmix-alpha", type=float, default=1.0, metavar="A", help="CutMix Beta(A, A); 0 = off")
    parser.add_argument("--mix-prob", type=float, default=1.0, metavar="P", help="chance that mixing happens")
    parser.add_argument("--switch-prob", type=float, default=0.5, metavar="P",
                        help="chance of CutMix rather than MixUp when both are on")
    parser.add_argument("--mode", choices=("batch", "pair", "elem"), default="batch",
                        help="one mixing decision per batch (as make_loader's default), pair or image; "
                             "elem shows MixUp and CutMix side by side")
    parser.add_argument("--label-smoothing", type=float, default=0.0, metavar="E", help="label smoothing ε")
    parser.add_argument("--count", type=int, default=16, metavar="N", help="images in the grid")
    parser.add_argument("--columns", type=int, default=None, metavar="N", help="grid columns (default: about square)")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX",
                        help="crop size, needed for datasets whose images vary in size (JPEG files)")
    parser.add_argument("--crop", choices=("random", "center"), default="random",
                        help="random-resized-crop as training (default) or the centre crop of evaluation; "
                             "used when --image-size differs from the stored size")
    parser.add_argument("--hflip", action="store_true", help="flip each image left-right with chance 1/2")
    parser.add_argument("--auto-augment", default=None, metavar="CONFIG",
                        help="RandAugment / TrivialAugmentWide as make_loader takes it: timm's config strings, "
                             "e.g. rand-m9-mstd0.5-inc1, or trivial")
    parser.add_argument("--re-prob", type=float, default=0.0, metavar="P",
                        help="RandomErasing chance per image after mixing (0 = off)")
    parser.add_argument("--re-mode", choices=("const", "rand", "pixel"), default="const",
                        help="erased values: the mean colour, one normal colour per box, or per-pixel normal noise")
    parser.add_argument("--re-count", type=int, default=1, metavar="N", help="at most N boxes per erased image")
    parser.add_argument("--stages", action="store_true",
                        help="one row per step for the same --count samples (columns): decoded crop (+flip), "
                             "after RandAugment, after MixUp/CutMix, after RandomErasing; steps that are off "
                             "get no row")
    parser.add_argument("--tile-px", type=int, default=128, metavar="PX",
                        help="enlarge each image by a whole factor until its longer side is at least PX")
    parser.add_argument("--seed", type=int, default=0, help="which samples and which mixing")
    parser.add_argument("--epoch", type=int, default=0, help="the epoch whose first batch is shown")


def tile_scale(height: int, width: int, tile_px: int) -> int:
    """The whole enlargement factor that brings the longer side to at least ``tile_px`` (at least 1)."""
    return max(1, math.ceil(tile_px / max(height, width)))


def title_px(lines: int) -> int:
    """The room above the grid for ``lines`` title lines (``TITLE_PX`` for two)."""
    return TITLE_PX + (lines - 2) * TITLE_LINE_PX


def wrap_title(figure, title: str, max_px: float) -> List[str]:
    """The title's lines (its own line breaks kept), each at most ``max_px`` wide as ``figure`` renders it."""
    probe = figure.text(0, 0, "", fontsize=9)
    renderer = figure.canvas.get_renderer()

    def width(text: str) -> float:
        probe.set_text(text)
        return probe.get_window_extent(renderer).width

    lines: List[str] = []
    for paragraph in title.splitlines():
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and width(longer) > max_px:
                lines.append(line)
                line = word
            else:
                line = longer
        lines.append(line)
    probe.remove()
    return lines


def grid_layout(count: int, height: int, width: int, tile_px: int, columns=None,
                title_lines: int = 2, row_label_px: int = 0) -> Tuple[int, int, int, int, int]:
    """``(columns, rows, scale, png_width, png_height)`` of a grid of ``count`` images of ``height x width``
    below ``title_lines`` lines of title; ``row_label_px`` above each row for its label (``--stages``)."""
    if columns is None:
        columns = max(1, math.ceil(math.sqrt(count)))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    scale = tile_scale(height, width, tile_px)
    tile_w, tile_h = width * scale, height * scale
    png_width = PAD_PX + columns * (tile_w + PAD_PX)
    png_height = title_px(max(2, title_lines)) + rows * (row_label_px + tile_h + CAPTION_PX + PAD_PX) + PAD_PX
    return columns, rows, scale, png_width, png_height


def top_two(target: np.ndarray, class_names: Sequence[str]) -> List[Tuple[str, float]]:
    """The two heaviest classes of one soft target row, heaviest first (one if the second weighs 0)."""
    order = np.argsort(-target, kind="stable")[:2]
    picked = [(class_names[k] if k < len(class_names) else str(k), float(target[k])) for k in order]
    return [p for k, p in enumerate(picked) if k == 0 or p[1] > 1e-6]


def caption(target: np.ndarray, class_names: Sequence[str], max_chars: int) -> str:
    lines = []
    for name, weight in top_two(target, class_names):
        text = f"{weight:.2f} {name}"
        lines.append(text if len(text) <= max_chars else text[:max_chars - 1] + "…")
    return "\n".join(lines)


@dataclass
class Recipe:
    """The augmentation a preview shows: make_loader's options of the same names."""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0
    image_size: Optional[int] = None
    crop: str = "random"
    hflip: bool = False
    auto_augment: Optional[str] = None
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1

    @property
    def mixes(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def up_to(self, stage: str) -> "Recipe":
        """The recipe with the steps after ``stage`` switched off (STAGES order)."""
        keep = STAGES[:STAGES.index(stage) + 1]
        off: Dict[str, object] = {}
        if "augment" not in keep:
            off["auto_augment"] = None
        if "mix" not in keep:
            off.update(mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0)
        if "erase" not in keep:
            off["re_prob"] = 0.0
        return Recipe(**{**self.__dict__, **off})

    def stages(self) -> List[str]:
        """The steps that change something, in order; the crop always."""
        on = {"crop": True, "augment": self.auto_augment is not None, "mix": self.mixes, "erase": self.re_prob > 0}
        return [stage for stage in STAGES if on[stage]]


def to_pixels(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float (N, C, H, W) images back to uint8 (N, H, W, C) pixels: ``x * std + mean``, times 255,
    rounded, clipped to 0..255 (erased values outside that range saturate)."""
    values = images.permute(0, 2, 3, 1).double().numpy()
    pixels = (values * np.asarray(std) + np.asarray(mean)) * 255.0
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def first_batch(path, meta, recipe: Recipe, *, count: int, seed: int, epoch: int,
                normalised: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(uint8 (N, H, W, C) pixels, soft targets)`` of the first batch of ``epoch`` under ``recipe``; made
    normalised and mapped back (``to_pixels``) when ``normalised`` or when it erases (erasing writes normalised
    values), else as raw pixels."""
    import torch

    from .loader import make_loader
    from .normalization import default_mean_std

    normalised = normalised or recipe.re_prob > 0
    mean, std = default_mean_std(meta.channels)
    output = (dict(normalize=True, dtype=torch.float32, mean=mean, std=std) if normalised
              else dict(normalize=False, dtype=torch.uint8))
    options = {**recipe.__dict__}
    loader = make_loader(path, batch_size=min(count, meta.num_samples), order="random", seed=seed, drop_last=False,
                         **options, **output)
    loader.set_epoch(epoch)
    images = targets = None
    for batch_images, batch_targets in loader:  # take the first batch, let the epoch finish cleanly
        if images is None:
            images = (to_pixels(batch_images, mean, std) if normalised
                      else batch_images.permute(0, 2, 3, 1).numpy().copy())
            targets = batch_targets.numpy().copy()
    return images, targets


def _checked_meta(path, image_size):
    from .metadata import read_meta

    meta = read_meta(path)
    if meta.image_shape is None and image_size is None:
        raise FfmixError(f"the images in {path} vary in size (from {meta.min_size} to {meta.max_size}); "
                         "pass --image-size PX to crop them to one size")
    return meta


def mixed_batch(path, *, count: int, mixup_alpha: float, cutmix_alpha: float, mix_prob: float, switch_prob: float,
                mode: str, label_smoothing: float, image_size, seed: int, epoch: int, **more):
    """``(images uint8 (N, H, W, C), soft targets float32 (N, classes), meta)``: the first batch of ``epoch``;
    ``more``: the other ``Recipe`` fields (crop, hflip, auto_augment, re_prob, re_mode, re_count)."""
    meta = _checked_meta(path, image_size)
    recipe = Recipe(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob,
                    mode=mode, label_smoothing=label_smoothing, image_size=image_size, **more)
    images, targets = first_batch(path, meta, recipe, count=count, seed=seed, epoch=epoch)
    return images, targets, meta


def stage_batches(path, recipe: Recipe, *, count: int, seed: int, epoch: int):
    """``([(stage, images, targets)], meta)``: the same first batch after each step of ``recipe`` that is on.
    The mixing row is made normalised and mapped back as the erasing row is, so the two differ only where
    boxes were erased."""
    meta = _checked_meta(path, recipe.image_size)
    stages = recipe.stages()
    rows = []
    for stage in stages:
        normalised = stage == "mix" and "erase" in stages
        images, targets = first_batch(path, meta, recipe.up_to(stage), count=count, seed=seed, epoch=epoch,
                                      normalised=normalised)
        rows.append((stage, images, targets))
    return rows, meta


def draw_grid(images: np.ndarray, targets: np.ndarray, class_names: Sequence[str], out: Path, *, title: str,
              tile_px: int, columns=None, row_labels: Optional[Sequence[str]] = None) -> Tuple[int, int]:
    """Write the captioned grid to ``out``; returns its (width, height) in pixels. ``row_labels``: a line above
    each row (``--stages``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, height, width, channels = images.shape
    label_px = ROW_LABEL_PX if row_labels else 0
    png_width = grid_layout(count, height, width, tile_px, columns)[3]
    figure = plt.figure(figsize=(png_width / DPI, 1), dpi=DPI)
    # The title is wrapped here, as rendered, to the grid's width, and the grid placed below all its lines
    # (matplotlib's wrap=True wrapped it after the layout was fixed, over the first row of tiles).
    title_lines = wrap_title(figure, title, png_width - 2 * PAD_PX)
    columns, rows, scale, png_width, png_height = grid_layout(count, height, width, tile_px, columns,
                                                              len(title_lines), label_px)
    figure.set_size_inches(png_width / DPI, png_height / DPI)
    grid_top = title_px(max(2, len(title_lines)))
    tile_w, tile_h = width * scale, height * scale
    figure.text(PAD_PX / png_width, 1 - TITLE_TOP_PX / png_height, "\n".join(title_lines), ha="left", va="top",
                fontsize=9, linespacing=1.2)
    max_chars = max(8, int(tile_w / 6.2))
    for index in range(count):
        row, column = divmod(index, columns)
        left = PAD_PX + column * (tile_w + PAD_PX)
        top = grid_top + row * (label_px + tile_h + CAPTION_PX + PAD_PX) + label_px
        if row_labels and column == 0:
            figure.text(left / png_width, 1 - (top - label_px + 2) / png_height, row_labels[row], ha="left",
                        va="top", fontsize=8, fontweight="bold")
        axis = figure.add_axes((left / png_width, 1 - (top + tile_h) / png_height, tile_w / png_width,
                                tile_h / png_height))
        pixels = np.repeat(np.repeat(images[index], scale, axis=0), scale, axis=1)
        if channels == 1:
            axis.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axis.imshow(pixels, interpolation="nearest")
        axis.set_axis_off()
        figure.text((left + 1) / png_width, 1 - (top + tile_h + 2) / png_height,
                    caption(targets[index], class_names, max_chars), ha="left", va="top", fontsize=8,
                    family="monospace", linespacing=1.15)
    try:
        write_figure(figure, out, dpi=DPI)
    finally:
        plt.close(figure)
    return png_width, png_height


def recipe_of(args: argparse.Namespace) -> Recipe:
    return Recipe(mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, mix_prob=args.mix_prob,
                  switch_prob=args.switch_prob, mode=args.mode, label_smoothing=args.label_smoothing,
                  image_size=args.image_size, crop=args.crop, hflip=args.hflip, auto_augment=args.auto_augment,
                  re_prob=args.re_prob, re_mode=args.re_mode, re_count=args.re_count)


def settings_line(args: argparse.Namespace) -> str:
    parts = [f"MixUp α={args.mixup_alpha:g}, CutMix α={args.cutmix_alpha:g}, mix_prob={args.mix_prob:g}",
             f"switch_prob={args.switch_prob:g}, mode={args.mode}, smoothing={args.label_smoothing:g}"]
    if args.image_size is not None:
        parts.append(f"{args.crop} crop {args.image_size} px")
    if args.hflip:
        parts.append("flip")
    if args.auto_augment:
        parts.append(f"auto_augment={args.auto_augment}")
    if args.re_prob > 0:
        parts.append(f"re_prob={args.re_prob:g}, re_mode={args.re_mode}, re_count={args.re_count}")
    parts.append(f"seed={args.seed}, epoch={args.epoch}")
    return ", ".join(parts)


def _check_args(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise FfmixError(f"--out must be a .png file, got {args.out}")
    check_writable(out, option_name="out", create_parents=True)  # before the loader compiles and decodes
    if args.count < 1:
        raise FfmixError(f"--count must be at least 1, got {args.count}")
    if args.columns is not None and args.columns < 1:
        raise FfmixError(f"--columns must be at least 1, got {args.columns}")
    if args.tile_px < 1:
        raise FfmixError(f"--tile-px must be at least 1, got {args.tile_px}")
    if args.stages and args.columns is not None:
        raise FfmixError("--stages puts the --count samples in columns and the steps in rows; drop --columns")
    return out


def run(args: argparse.Namespace) -> int:
    out = _check_args(args)
    if args.mixup_alpha <= 0 and args.cutmix_alpha <= 0:
        print("ffmix preview: both alphas are 0, so the grid shows unmixed images")
    recipe = recipe_of(args)
    if args.stages:
        return _run_stages(args, recipe, out)
    images, targets, meta = mixed_batch(
        args.data, count=args.count, seed=args.seed, epoch=args.epoch,
        **{name: value for name, value in recipe.__dict__.items()})
    _warn_short(args, len(images), meta)
    pixels = ("pixels (erased in normalised space, mapped back: x·std + mean, clipped to 0..255)" if args.re_prob > 0
              else "raw pixels")
    title = f"{Path(args.data).name}: {len(images)} images, {pixels}\n{settings_line(args)}"
    width, height = draw_grid(images, targets, meta.class_names, out, title=title, tile_px=args.tile_px,
                              columns=args.columns)
    print(f"ffmix preview: wrote {out} ({len(images)} images, {width}x{height} px)")
    return 0


def _warn_short(args: argparse.Namespace, shown: int, meta) -> None:
    if shown < args.count:
        warnings.warn(FfmixWarning(f"--count {args.count} is more than the {meta.num_samples} images in "
                                   f"{args.data}; the grid shows all {shown}"))


def _run_stages(args: argparse.Namespace, recipe: Recipe, out: Path) -> int:
    rows, meta = stage_batches(args.data, recipe, count=args.count, seed=args.seed, epoch=args.epoch)
    samples = len(rows[0][1])
    _warn_short(args, samples, meta)
    flip = " (+flip)" if args.hflip else ""
    labels = [f"{k + 1}. {STAGE_NAMES[stage]}{flip if stage == 'crop' else ''}"
              for k, (stage, _, _) in enumerate(rows)]
    images = np.concatenate([images for _, images, _ in rows])
    targets = np.concatenate([targets for _, _, targets in rows])
    title = (f"{Path(args.data).name}: {samples} samples (columns) after each step (rows), pixels\n"
             f"{settings_line(args)}")
    width, height = draw_grid(images, targets, meta.class_names, out, title=title, tile_px=args.tile_px,
                              columns=samples, row_labels=labels)
    print(f"ffmix preview: wrote {out} ({samples} samples x {len(rows)} steps: "
          f"{', '.join(stage for stage, _, _ in rows)}; {width}x{height} px)")
    return 0
