"""``ffmix train`` with a recorder attached, for tests of what each rank of a torchrun job did.

    torchrun --nproc-per-node 2 -m tests.train_probe DUMP_DIR train ARGS...

Each rank writes ``DUMP_DIR/rank{R}.pt``: the sample ids of every training epoch (FFCV's order for this rank),
the labels of unmixed training batches as they arrived, and the final weights. The recorder wraps ffmix's
functions from outside, so the product code carries no test hook.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ffmix import cli
from ffmix.loader import MixLoader
from ffmix.train import loop


def main(argv) -> int:
    folder, argv = Path(argv[0]), argv[1:]
    record = {"sample_ids": [], "labels": [], "model": None}
    plain_iter, plain_evaluate = MixLoader.__iter__, loop.evaluate

    def recording_iter(loader):
        if loader.targets == "label":   # the validation loader
            yield from plain_iter(loader)
            return
        order = loader.ffcv_loader.next_traversal_order()[:len(loader) * loader.batch_size]
        record["sample_ids"].append([int(i) for i in order])
        record["labels"].append([])
        for images, targets in plain_iter(loader):
            # A mixed batch has no single label per image; record labels only when they are plain.
            if isinstance(targets, torch.Tensor) and not loader.mixing_enabled:
                labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
                record["labels"][-1] += labels.tolist()
            yield images, targets

    def recording_evaluate(model, *args, **kwargs):
        record["model"] = model   # evaluated after every epoch: the last one holds the final weights
        return plain_evaluate(model, *args, **kwargs)

    MixLoader.__iter__ = recording_iter
    loop.evaluate = recording_evaluate
    code = cli.main(argv)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in record.pop("model").state_dict().items()}
    torch.save({**record, "model": state}, folder / f"rank{os.environ.get('RANK', '0')}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
