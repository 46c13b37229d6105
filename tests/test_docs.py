"""The README stays a first screen, its speed table is the kept run's figures, and its links lead somewhere."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The run the README's table quotes; its JSON is kept beside the other bench figures.
TABLE_RUN = ROOT / "docs" / "bench" / "2026-12-02-xeon-2c-e2e.json"
# (row label in the README, pipeline key in the JSON), in the README's order.
TABLE_ROWS = [
    ("PyTorch `DataLoader` + MixUp/CutMix `collate_fn`", "dl_collate"),
    ("PyTorch `DataLoader` + torchvision v2 MixUp/CutMix", "dl_torchvision"),
    ("timm `Mixup` in the loop", "timm_mixup"),
    ("timm `FastCollateMixup` in a `DataLoader` (uint8)", "timm_fast_collate"),
    ("FFCV `ImageMixup`/`LabelMixup` (MixUp only; fails the value check)", "ffcv_mixup"),
    ("FFCV, no mixing", "ffcv_plain"),
    ("**ffmix, MixUp + CutMix**", "ffmix"),
    ("**ffmix, MixUp + CutMix, uint8**", "ffmix_uint8"),
]
TABLE_COLUMNS = ("fmnist", "rgb32", "photos")


def readme_table(run: dict) -> list:
    """The README's table rows, as they must read for ``run`` (images/s, rounded, thousands separated)."""
    figures = {(row["dataset"], row["pipeline"]): row["images_per_s"] for row in run["results"]["e2e"]}
    lines = []
    for label, key in TABLE_ROWS:
        cells = [f"{figures[column, key]:,.0f}" if (column, key) in figures else "-" for column in TABLE_COLUMNS]
        if label.startswith("**"):
            cells = [f"**{cell}**" if cell != "-" else cell for cell in cells]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def test_readme_fits_a_screen_or_two():
    assert len(README.read_text().splitlines()) <= 200


def test_readme_table_is_the_kept_runs_figures():
    text = README.read_text()
    run = json.loads(TABLE_RUN.read_text())
    for line in readme_table(run):
        assert line in text, f"README table row differs from {TABLE_RUN.name}: expected\n{line}"
    assert TABLE_RUN.relative_to(ROOT).as_posix() in text   # the README names the run it quotes
    assert run["command"].split()[:3] == ["ffmix", "bench", "e2e"]


def test_readme_and_docs_links_lead_to_files():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
