"""The training run, top to bottom: check the inputs (before anything is written), build loaders, model,
optimizer and schedule, restore a checkpoint when resuming, then the epoch loop (train, validate, log,
checkpoint) and a summary.

Resuming is exact on CPU: the loader's order and mixing follow (seed, epoch), and the checkpoint holds the
model, optimizer, schedule and torch RNG state, so an interrupted and resumed run ends with the same weights
as one that was never interrupted.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from .. import distributed
from ..distributed import Node
from ..errors import FfmixWarning
from ..models import build_model, count_parameters
from .calibration import ValidationTally
from .checkpoints import describe_run, load_checkpoint, prepare_run_dir, restore, resume_hint, save_epoch, write_json
from .components import (LrShape, autocast, make_loaders, make_loss, make_optimizer, memory_format, mixing_on,
                         train_image_size, wrap)
from .config import Config, auto_batch_size, check_inputs, resolve
from .report import count, epoch_line, summary_line


def train(config: Config, node: Node) -> List[dict]:
    """Train (or resume) the run ``config`` describes on this rank; returns the history, one dict per epoch."""
    train_meta, val_meta = check_inputs(config, node.world_size)
    if node.is_main:
        warn_about_inputs(config, train_meta.num_samples, node.world_size)
    config = resolve(config, train_meta, node.world_size, node.device.type)
    run_dir = prepare_run_dir(config, is_main=node.is_main)
    checkpoint = load_checkpoint(run_dir, config, train_meta, val_meta, node) if config.resume else None
    if checkpoint is not None and checkpoint["epoch"] >= config.epochs:
        say(node, f"ffmix train: {run_dir} already finished its {count(config.epochs, 'epoch')}; nothing to do")
        return checkpoint["history"]

    torch.manual_seed(config.seed)
    train_loader, val_loader = make_loaders(config, node)
    model = build_model(config.model, train_meta.channels, train_meta.num_classes, config.width)
    model = model.to(node.device, memory_format=memory_format(config))
    optimizer = make_optimizer(model, config)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LrShape.of(config, steps_per_epoch))
    history: List[dict] = []
    best = {"val_acc": -1.0, "epoch": 0}
    if checkpoint is not None:
        restore(checkpoint, model, optimizer, scheduler, node)
        history, best = checkpoint["history"], checkpoint["best"]
    start_epoch = len(history)
    if node.is_main and checkpoint is None:
        write_json(run_dir / "config.json", describe_run(config, node, model, train_meta, val_loader.meta))
    step = make_train_step(wrap(model, config, node), optimizer, scheduler, make_loss(config), config, node)
    say(node, f"ffmix train: {config.model} ({count_parameters(model) / 1e6:.2f} M parameters) on "
              f"{train_meta.num_samples} images of {train_meta.num_classes} classes, {count(config.epochs, 'epoch')} x "
              f"{count(steps_per_epoch, 'step')} of {config.batch_size}, peak lr {config.lr:g} after "
              f"{config.warmup_steps} warm-up steps, {node.world_size} process(es) on {node.device}, "
              f"{config.precision}" + (f"; resuming after epoch {start_epoch}" if start_epoch else ""))

    stop_at = config.stop_after_epoch or config.epochs
    elapsed_before = history[-1]["elapsed"] if history else 0.0   # earlier sessions of a resumed run
    loop_start = time.perf_counter()
    # closing the loaders stops an epoch left early (Ctrl-C, a failed step) here, whoever still holds its
    # iterator, not whenever that iterator is collected
    with hint_on_interrupt(node, run_dir, history), train_loader, val_loader:
        for epoch in range(start_epoch, stop_at):
            epoch_start = time.perf_counter()
            train_loader.set_epoch(epoch)
            train_loader.mixing_enabled = mixing_on(config, epoch)
            if config.res_schedule is not None:   # a function of the epoch: a resumed run sees the same sizes
                train_loader.set_image_size(train_image_size(config, epoch))
            model.train()
            train_loss, train_seconds, wait_seconds = train_one_epoch(step, train_loader, node, epoch, config.epochs)
            distributed.broadcast_buffers(model, node)
            validation = evaluate(model, val_loader, config, node)
            train_images = steps_per_epoch * config.batch_size
            history.append({
                "epoch": epoch + 1, "train_loss": train_loss, **validation,
                "train_images": train_images, "train_images_per_s": train_images / train_seconds,
                "data_wait_share": wait_seconds / train_seconds, "train_seconds": train_seconds,
                "seconds": time.perf_counter() - epoch_start, "lr": optimizer.param_groups[0]["lr"],
                "mixing": train_loader.mixing_enabled, "image_size": list(train_loader.image_size),
                "decode_stand_ins": train_loader.decode_stand_ins,
                "elapsed": elapsed_before + time.perf_counter() - loop_start})  # run time so far, with saving
            say(node, epoch_line(history[-1], config.epochs))
            if node.is_main:
                best = save_epoch(run_dir, model, optimizer, scheduler, config, node, (train_meta, val_meta),
                                  history, best)
    if len(history) < config.epochs:
        say(node, f"ffmix train: stopped after epoch {len(history)} of {config.epochs}; "
                  f"{resume_hint(run_dir, history)}")
    else:
        say(node, summary_line(history, best, run_dir))
    return history


def warn_about_inputs(config: Config, num_samples: int, world_size: int) -> None:
    """Say once (rank 0) what runs but is likely not meant: validating on the training file, and an automatic
    batch size lowered to divide over the processes (16 -> 15 for 3)."""
    if Path(config.train).resolve() == Path(config.val).resolve():
        warnings.warn(FfmixWarning(f"--train and --val are the same file ({config.train}): the accuracy reported "
                                   "is on training images, not held-out ones"))
    if config.batch_size is not None:
        return
    chosen, alone = auto_batch_size(num_samples, world_size), auto_batch_size(num_samples, 1)
    if chosen != alone:
        warnings.warn(FfmixWarning(f"the automatic batch size {alone} does not divide over {world_size} processes; "
                                   f"using {chosen} (pass --batch-size to choose a multiple of {world_size})"))


def make_train_step(model: nn.Module, optimizer, scheduler, loss_fn, config: Config, node: Node):
    """step(images, targets) -> the batch's loss (a detached tensor): forward, backward, update, schedule."""

    def step(images, targets) -> torch.Tensor:
        with autocast(config, node):
            loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return step


def train_one_epoch(step, loader, node: Node, epoch: int, epochs: int) -> Tuple[float, float, float]:
    """One pass over this rank's share; returns the mean training loss, the seconds it took and the seconds
    spent waiting for the loader, each over all ranks (seconds: the mean rank)."""
    from tqdm import tqdm

    loss_sum = torch.zeros((), dtype=torch.float64, device=node.device)  # summed on device: no sync per step
    steps, wait = 0, WaitClock()
    start = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step",
               disable=None if node.is_main else True)
    for images, targets in wait.timed(loader):
        if steps == 0:
            # FFCV sets torch's thread count to its worker count at each epoch start; keep ours.
            torch.set_num_threads(node.threads)
        loss_sum += step(images, targets)
        steps += 1
        bar.update()
        if steps % 25 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss_sum.item() / steps:.4f}")
    bar.close()
    if node.device.type == "cuda":
        torch.cuda.synchronize(node.device)
    seconds = time.perf_counter() - start
    total_loss, total_steps, total_seconds, total_wait = distributed.sum_over_ranks(
        [loss_sum.item(), steps, seconds, wait.seconds], node)
    return total_loss / total_steps, total_seconds / node.world_size, total_wait / node.world_size


class WaitClock:
    """Adds up the time a loop spends inside its iterator's ``next()``: for a loader, waiting for data."""

    def __init__(self):
        self.seconds = 0.0

    def timed(self, iterable):
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield item


@torch.no_grad()
def evaluate(model: nn.Module, loader, config: Config, node: Node) -> Dict[str, float]:
    """``val_loss`` (NLL: mean cross-entropy of the true class), ``val_acc`` (top-1) and ``val_ece`` (expected
    calibration error, 15 bins) on the validation set, from one pass, summed over every rank's share."""
    model.eval()
    tally = ValidationTally(node.device)
    for images, labels in loader:
        with autocast(config, node):
            logits = model(images).float()
            if config.tta:  # the mirror image is as likely as the original when training used --hflip
                # the prediction is the mean of the two logits: accuracy, NLL and calibration all judge it
                logits = (logits + model(images.flip(3)).float()) / 2
        tally.add(logits, labels)
    return tally.figures(distributed.sum_over_ranks(tally.totals(), node))


@contextmanager
def hint_on_interrupt(node: Node, run_dir: Path, history: List[dict]):
    """On Ctrl-C, add what can be resumed to the one line the CLI prints (``ffmix train: interrupted in epoch
    2; ...``); only rank 0 prints it, and the launcher of --nproc ranks none."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"in epoch {len(history) + 1}; {resume_hint(run_dir, history)}") from None


def say(node: Node, line: str) -> None:
    if node.is_main:
        print(line, flush=True)
