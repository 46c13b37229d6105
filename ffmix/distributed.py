"""The little ``ffmix train`` needs from ``torch.distributed``: who am I, on which device, and sums over ranks.

Under ``torchrun`` the environment says RANK / WORLD_SIZE / LOCAL_RANK; a plain process is rank 0 of 1 and
never touches ``torch.distributed``. The backend follows the device: NCCL for CUDA, gloo for CPU.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import torch
import torch.distributed as dist

from .system import available_cpus, resolve_device

# A rank that dies leaves the others waiting in a collective; torchrun then tears the group down, but a
# bounded wait also ends a hang that torchrun does not see.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Node:
    """This process's place in the job and the device and CPU threads it may use."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    threads: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def describe_node(requested_device: str) -> Node:
    """This process's Node from the torchrun environment (rank 0 of 1 outside torchrun); starts nothing."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    device = resolve_device(requested_device, local_rank=local_rank)
    # Processes on one node share its cores: two ranks each running two threads on two cores thrash.
    threads = max(1, available_cpus() // local_world_size)
    return Node(rank, world_size, local_rank, local_world_size, device, threads)


def start(node: Node) -> None:
    """Join the process group (when there is more than one rank) and pin this rank's GPU."""
    if node.device.type == "cuda":
        torch.cuda.set_device(node.device)
        torch.backends.cudnn.benchmark = True  # fixed image sizes: pick the fastest kernels once
    if node.distributed and not dist.is_initialized():
        backend = "nccl" if node.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT,
                                device_id=node.device if node.device.type == "cuda" else None)


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(values: Sequence[float], node: Node) -> List[float]:
    """Element-wise sums of ``values`` over all ranks (float64, so counts up to 2**53 stay exact)."""
    totals = torch.tensor(list(values), dtype=torch.float64, device=node.device)
    if node.distributed:
        dist.all_reduce(totals)
    return totals.tolist()


def broadcast_buffers(module: torch.nn.Module, node: Node) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP averages gradients, so parameters agree on all ranks, but each rank's BatchNorm keeps statistics of
    its own share of the batch; evaluating or saving after this makes every rank hold the same model.
    """
    if node.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# Ranks must run this process's ffmix. `python -m ffmix.cli` would put the current folder first on sys.path, so
# run from a folder holding another ffmix/ the ranks would run that code; the bootstrap instead puts the folder
# this ffmix was imported from first (given as its first argument, so no path is quoted into code).
RANK_BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv.pop(1)); from ffmix.cli import main; sys.exit(main())"


def package_root() -> str:
    """The folder that holds this ``ffmix`` package (what must come first on a rank's sys.path)."""
    return str(Path(__file__).resolve().parent.parent)


def torchrun_command(nproc: int, module_argv: Sequence[str]) -> List[str]:
    """The command that starts ``nproc`` local ranks running this ``ffmix``'s command line with
    ``module_argv``, whatever the current folder holds."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--no-python", sys.executable, "-c", RANK_BOOTSTRAP, package_root(), *module_argv]
