"""``ffmix preview``: one mixed batch as a captioned PNG grid, to see what MixUp/CutMix does before training.

    ffmix preview data/fmnist-train.beton --mixup-alpha 0.8 --cutmix-alpha 1.0 --out grid.png

The batch comes from ``make_loader`` exactly as training would get it, but as raw pixels (``normalize=False``,
uint8), so the images look as stored. Each tile is the image enlarged by a whole factor (nearest neighbour,
so pixels stay sharp) until its longer side is at least ``--tile-px``; its caption names the two classes
with the largest weights in the soft target, with those weights (class names from the ``.beton``'s metadata).
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from .errors import FfmixError, FfmixWarning
from .system import check_writable, write_figure

PAD_PX = 8          # between tiles and around the grid
CAPTION_PX = 34     # two caption lines under each tile
TITLE_TOP_PX = 6    # above the title's first line
TITLE_LINE_PX = 15  # one 9 pt title line at DPI 100 (12.5 px of type, 1.2 line spacing)
TITLE_PX = TITLE_TOP_PX + 2 * TITLE_LINE_PX + 8   # the room above the grid for the usual two title lines
DPI = 100


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write one mixed batch of DATA.beton as a grid of images, each captioned with its two heaviest classes "
        "and their weights, so you can see what the augmentation does before training with it.")
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
                        help="crop size, needed for datasets whose images vary in size")
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
                title_lines: int = 2) -> Tuple[int, int, int, int, int]:
    """``(columns, rows, scale, png_width, png_height)`` of a grid of ``count`` images of ``height x width``
    below ``title_lines`` lines of title."""
    if columns is None:
        columns = max(1, math.ceil(math.sqrt(count)))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    scale = tile_scale(height, width, tile_px)
    tile_w, tile_h = width * scale, height * scale
    png_width = PAD_PX + columns * (tile_w + PAD_PX)
    png_height = title_px(max(2, title_lines)) + rows * (tile_h + CAPTION_PX + PAD_PX) + PAD_PX
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


def mixed_batch(path, *, count: int, mixup_alpha: float, cutmix_alpha: float, mix_prob: float, switch_prob: float,
                mode: str, label_smoothing: float, image_size, seed: int, epoch: int):
    """``(images uint8 (N, H, W, C), soft targets float32 (N, classes), meta)``: the first batch of ``epoch``."""
    import torch

    from .loader import make_loader
    from .metadata import read_meta

    meta = read_meta(path)
    if meta.image_shape is None and image_size is None:
        raise FfmixError(f"the images in {path} vary in size (from {meta.min_size} to {meta.max_size}); "
                         "pass --image-size PX to crop them to one size")
    batch_size = min(count, meta.num_samples)
    loader = make_loader(path, batch_size=batch_size, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                         mix_prob=mix_prob, switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing,
                         image_size=image_size, normalize=False, dtype=torch.uint8, order="random",
                         seed=seed, drop_last=False)
    loader.set_epoch(epoch)
    images = targets = None
    for batch_images, batch_targets in loader:  # take the first batch, let the epoch finish cleanly
        if images is None:
            images = batch_images.permute(0, 2, 3, 1).numpy().copy()
            targets = batch_targets.numpy().copy()
    return images, targets, loader.meta


def draw_grid(images: np.ndarray, targets: np.ndarray, class_names: Sequence[str], out: Path, *, title: str,
              tile_px: int, columns=None) -> Tuple[int, int]:
    """Write the captioned grid to ``out``; returns its (width, height) in pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, height, width, channels = images.shape
    png_width = grid_layout(count, height, width, tile_px, columns)[3]
    figure = plt.figure(figsize=(png_width / DPI, 1), dpi=DPI)
    # The title is wrapped here, as rendered, to the grid's width, and the grid placed below all its lines
    # (matplotlib's wrap=True wrapped it after the layout was fixed, over the first row of tiles).
    title_lines = wrap_title(figure, title, png_width - 2 * PAD_PX)
    columns, rows, scale, png_width, png_height = grid_layout(count, height, width, tile_px, columns,
                                                              len(title_lines))
    figure.set_size_inches(png_width / DPI, png_height / DPI)
    grid_top = title_px(max(2, len(title_lines)))
    tile_w, tile_h = width * scale, height * scale
    figure.text(PAD_PX / png_width, 1 - TITLE_TOP_PX / png_height, "\n".join(title_lines), ha="left", va="top",
                fontsize=9, linespacing=1.2)
    max_chars = max(8, int(tile_w / 6.2))
    for index in range(count):
        row, column = divmod(index, columns)
        left = PAD_PX + column * (tile_w + PAD_PX)
        top = grid_top + row * (tile_h + CAPTION_PX + PAD_PX)
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


def run(args: argparse.Namespace) -> int:
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
    if args.mixup_alpha <= 0 and args.cutmix_alpha <= 0:
        print("ffmix preview: both alphas are 0, so the grid shows unmixed images")
    images, targets, meta = mixed_batch(
        args.data, count=args.count, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
        mix_prob=args.mix_prob, switch_prob=args.switch_prob, mode=args.mode, label_smoothing=args.label_smoothing,
        image_size=args.image_size, seed=args.seed, epoch=args.epoch)
    if len(images) < args.count:
        warnings.warn(FfmixWarning(f"--count {args.count} is more than the {meta.num_samples} images in "
                                   f"{args.data}; the grid shows all {len(images)}"))
    settings = (f"MixUp α={args.mixup_alpha:g}, CutMix α={args.cutmix_alpha:g}, mix_prob={args.mix_prob:g}, "
                f"switch_prob={args.switch_prob:g}, mode={args.mode}, smoothing={args.label_smoothing:g}, "
                f"seed={args.seed}, epoch={args.epoch}")
    title = f"{Path(args.data).name}: {len(images)} images, raw pixels\n{settings}"
    width, height = draw_grid(images, targets, meta.class_names, out, title=title, tile_px=args.tile_px,
                              columns=args.columns)
    print(f"ffmix preview: wrote {out} ({len(images)} images, {width}x{height} px)")
    return 0
