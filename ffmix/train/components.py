"""What the training loop is built from: loaders, optimizer, schedule, loss, and the model as the step sees it."""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import Node
from ..metadata import read_meta
from .config import Config, mixing_configured
from .resolution import ResSchedule


def make_loaders(config: Config, node: Node):
    """The training loader (this rank's share of each epoch, mixed) and the validation loader (this rank's
    every world_size-th image, in order, unpadded so each image counts once in the accuracy).

    Both yield make_loader's default output: float32, normalised, in the model's memory format. On the CPU the
    loader's Numba op mixes, converts and normalises in one pass; on a GPU uint8 crosses the bus and converts
    there.
    """
    from ..loader import make_loader  # imported here so `ffmix train --help` does not start Numba

    common = dict(device=node.device, num_workers=config.workers or node.threads, dtype=torch.float32,
                  normalize=True, channels_last=config.channels_last == "on", on_decode_error=config.on_decode_error,
                  exact_decode=config.exact_decode)
    # with a resolution schedule the loop sets the training size before every epoch (train_size)
    train_size = train_image_size(config, 0)
    mix = mixing_configured(config)
    targets = config.targets if mix else "label"
    # Index targets carry no smoothing; the loss applies it then.
    smoothing = config.label_smoothing if targets == "soft" else 0.0
    train_loader = make_loader(
        config.train, batch_size=config.batch_size // node.world_size, seed=config.seed, order="random",
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, mix_prob=config.mix_prob,
        switch_prob=config.switch_prob, mode=config.mix_mode, label_smoothing=smoothing, targets=targets,
        hflip=config.hflip, auto_augment=config.auto_augment, re_prob=config.re_prob, re_mode=config.re_mode,
        re_count=config.re_count, distributed=node.distributed, drop_last=True, image_size=train_size, **common)
    val_meta = read_meta(config.val)
    val_indices = list(range(node.rank, val_meta.num_samples, node.world_size))
    val_loader = make_loader(config.val, batch_size=2 * config.batch_size // node.world_size, order="sequential",
                             targets="label", indices=val_indices, drop_last=False, image_size=config.image_size,
                             **common)
    return train_loader, val_loader


def train_image_size(config: Config, epoch: int):
    """The training image side of 0-based ``epoch``: the --res-schedule's, else --image-size (None: stored)."""
    if config.res_schedule is None:
        return config.image_size
    return ResSchedule.parse(config.res_schedule).size_at(epoch)


def memory_format(config: Config) -> torch.memory_format:
    # NHWC lets cuDNN use tensor cores without transposes, and oneDNN's CPU convolutions also run faster on it
    # for these small nets (1.2-1.5x for `cnn` on 28x28, measured on 1 and 2 CPU cores).
    return torch.contiguous_format if config.channels_last == "off" else torch.channels_last


def autocast(config: Config, node: Node):
    if config.precision == "bf16":
        return torch.autocast(device_type=node.device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    # Weight decay on BatchNorm scales and biases only shrinks what the next layer undoes; keep it on weights.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class LrShape:
    """Learning-rate multiplier per step, piecewise linear: from ``start`` up to 1 at ``peak_step``, then down
    to 0 at ``total_steps``. A plain object (not a lambda) so LambdaLR saves and restores it."""

    total_steps: int
    peak_step: int
    start: float

    @classmethod
    def of(cls, config: Config, steps_per_epoch: int) -> "LrShape":
        """The schedule of a resolved ``config`` (``warmup_steps`` set) with ``steps_per_epoch`` steps."""
        total = config.epochs * steps_per_epoch
        if config.schedule == "linear" or not config.warmup_steps:
            return cls(total, 0, 1.0)
        return cls(total, min(config.warmup_steps, total - 1), 0.1)

    def __call__(self, step: int) -> float:
        if step < self.peak_step:
            return self.start + (1.0 - self.start) * step / self.peak_step
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.peak_step))


def wrap(model: nn.Module, config: Config, node: Node) -> nn.Module:
    """What the training step calls: ``model`` in DDP and/or compiled; ``model`` itself stays the plain module
    that evaluation and checkpoints use (they share parameters)."""
    if node.distributed:
        device_ids = [node.device.index] if node.device.type == "cuda" else None
        # BatchNorm statistics are synchronised once per epoch (broadcast_buffers in the loop), not before every
        # step. Newer torch calls this switch forward_sync_buffers and warns about the old name.
        ddp = nn.parallel.DistributedDataParallel
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else "broadcast_buffers")
        model = ddp(model, device_ids=device_ids, **{no_sync: False})
    if config.compile:
        model = torch.compile(model)  # after DDP, so compiled graphs break at its gradient buckets
    return model


def make_loss(config: Config):
    """loss(logits, targets) for what the training loader yields: soft targets, (y_a, y_b, lam) or labels."""
    smoothing = config.label_smoothing

    def soft_cross_entropy(logits, soft_targets):
        return -(soft_targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()

    def pair_cross_entropy(logits, pair):
        y_a, y_b, lam = pair
        logits = logits.float()
        loss_a = F.cross_entropy(logits, y_a, reduction="none", label_smoothing=smoothing)
        loss_b = F.cross_entropy(logits, y_b, reduction="none", label_smoothing=smoothing)
        return (lam * loss_a + (1 - lam) * loss_b).mean()

    def label_cross_entropy(logits, labels):
        return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)

    if not mixing_configured(config):
        return label_cross_entropy
    return soft_cross_entropy if config.targets == "soft" else pair_cross_entropy


def mixing_on(config: Config, epoch: int) -> bool:
    """Whether 0-based ``epoch`` mixes: always, unless --mix-off-epoch K (1-based) switched it off."""
    return config.mix_off_epoch is None or epoch + 1 < config.mix_off_epoch
