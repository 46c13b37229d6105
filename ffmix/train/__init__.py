"""``ffmix train``: train an image classifier on ffmix's MixUp/CutMix stream and report test accuracy.

    ffmix train --train data/fmnist-train.beton --val data/fmnist-test.beton --mixup-alpha 0.2 --out runs/a
    torchrun --nproc-per-node 2 -m ffmix.cli train ...      # or: ffmix train --nproc 2 ...
    ffmix train ... --compare-mixing                        # the same run with mixing on and off, one table

One module per concern: ``config`` (options, checks, the defaults that follow the data), ``loop`` (the run,
top to bottom), ``components`` (loaders, optimizer, schedule, loss), ``checkpoints`` (run directory, resume),
``report`` (epoch lines, summary, curves, the comparison table) and ``compare``. This module starts a run:
in this process, or as N processes under torchrun.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import warnings

import torch

from .. import distributed
from ..errors import FfmixError, FfmixWarning
from ..system import available_cpus
from .checkpoints import ARTIFACTS, prepare_run_dir
from .components import LrShape, make_loss
from .config import Config, check_inputs, config_from_args, config_to_argv, configure_parser, run_dir_of

__all__ = ["ARTIFACTS", "Config", "LrShape", "config_to_argv", "configure_parser", "make_loss", "run"]


def run(args: argparse.Namespace) -> int:
    """The ``ffmix train`` command: exit code 0 when the run (or both runs of --compare-mixing) finished."""
    from .compare import compare_mixing
    from .loop import train

    config = config_from_args(args)
    if config.nproc > 1 and not distributed.under_torchrun():
        return launch_processes(config)
    node = distributed.describe_node(config.device)
    if config.nproc > 1 and config.nproc != node.world_size:
        raise FfmixError(f"--nproc {config.nproc} but torchrun started {node.world_size} processes; "
                         "drop --nproc when starting with torchrun")
    distributed.start(node)
    try:
        if config.compare_mixing:
            compare_mixing(config, node)
        else:
            train(config, node)
        return 0
    finally:
        distributed.stop()


def launch_processes(config: Config) -> int:
    """``--nproc N``: check the inputs here (one clear error, not N), then start N ranks under torchrun."""
    node = distributed.describe_node(config.device)
    config = dataclasses.replace(config, out=str(run_dir_of(config)))  # one timestamped default for all ranks
    check_inputs(config, world_size=config.nproc)
    if node.device.type == "cpu" and config.nproc > available_cpus():
        warnings.warn(FfmixWarning(f"--nproc {config.nproc} starts more processes than the {available_cpus()} CPU "
                                   "cores available; they will take turns on the cores (slower, same result)"))
    if not config.compare_mixing:
        prepare_run_dir(config, is_main=False)  # read-only checks; rank 0 creates it
    if node.device.type == "cuda" and config.nproc > torch.cuda.device_count():
        raise FfmixError(f"--nproc {config.nproc} but only {torch.cuda.device_count()} GPU(s) are visible")
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, available_cpus() // config.nproc)))
    argv = config_to_argv(dataclasses.replace(config, nproc=1))
    ranks = subprocess.Popen(distributed.torchrun_command(config.nproc, argv), env=env)
    try:
        return ranks.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached torchrun and the ranks too: let them stop (rank 0 says where) and say nothing here
        return wait_quietly(ranks)


def wait_quietly(process: subprocess.Popen) -> int:
    """Wait for ``process`` to end, through further Ctrl-Cs; returns its exit code."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue
