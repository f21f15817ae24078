"""`torchrun` support: process group, device, gradient averaging.

Every process draws the same path for a step (the path's generator is seeded by the step only)
and its own shard of the step's batch, so all processes touch the same parameters. Gradients
are averaged with an explicit all-reduce after backward rather than by wrapping the model in
DDP: a sub-net step leaves most supernet parameters without gradient, which DDP only tolerates
with `find_unused_parameters` and a graph traversal per step. BatchNorm statistics stay
per-process (no SyncBN), as in SimSiam's CIFAR recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "average_gradients", "setup_distributed"]


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_min(self, value: int) -> int:
        """The minimum of `value` over processes (e.g. the smallest local batch)."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())


def setup_distributed(device: str) -> Dist:
    """Join the process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world_size=world_size, device=dev)


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """All-reduce and average the gradients that exist (the same set on every process)."""
    if world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
