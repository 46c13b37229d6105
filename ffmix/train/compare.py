"""``--compare-mixing``: what mixing costs and buys. The same recipe trained twice, as given and with MixUp and
CutMix off (everything else equal: model, schedule, seed, flips), then one table of both runs."""
from __future__ import annotations

import dataclasses
import json

from ..distributed import Node
from ..system import atomic_write
from .config import Config, run_dir_of
from .loop import say, train
from .report import comparison_table, run_totals


def compare_mixing(config: Config, node: Node) -> list:
    """Train ``config`` into RUN_DIR/mixing-on and, unmixed, into RUN_DIR/mixing-off; print the table and
    (rank 0) write it to RUN_DIR/compare.md and compare.json. Returns the table's rows."""
    run_dir = run_dir_of(config)
    mixed = f"MixUp α={config.mixup_alpha:g} + CutMix α={config.cutmix_alpha:g}"
    if config.mix_off_epoch is not None:
        mixed += f", off from epoch {config.mix_off_epoch}"
    runs = [(f"on ({mixed})", dataclasses.replace(config, compare_mixing=False, out=str(run_dir / "mixing-on"))),
            ("off", dataclasses.replace(config, compare_mixing=False, out=str(run_dir / "mixing-off"),
                                        mixup_alpha=0.0, cutmix_alpha=0.0, mix_off_epoch=None))]
    rows = []
    for label, run_config in runs:
        say(node, f"ffmix train --compare-mixing: mixing {label}, into {run_config.out}")
        rows.append({"mixing": label, **run_totals(train(run_config, node)), "run_dir": run_config.out})
    table = comparison_table(rows)
    say(node, table)
    if node.is_main:
        atomic_write(run_dir / "compare.md", table + "\n")
        atomic_write(run_dir / "compare.json", json.dumps(rows, indent=2) + "\n")
    return rows
