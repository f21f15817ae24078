"""Stateless batch drawing: the batch of step t is a function of (seed, stage, step) alone.

That is what makes resume exact: a run restarted at step t draws the same images, crops and
paths as a run that never stopped, with no sampler state to save. Decoding runs in DataLoader
workers (for file sources); unreadable images are dropped from their batch and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.data.source import ImageSource

__all__ = ["LoadedBatch", "StepLoader", "draw_batch", "step_generator"]


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys, e.g. (seed, stage, step, purpose)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_batch(pool: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` indices from `pool` without replacement; a pool smaller than the batch is
    repeated (each image at most ceil(batch/pool) times), so every step has the same batch size."""
    n = len(pool)
    if n == 0:
        raise ValueError("cannot draw a batch from an empty pool of images")
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(batch_size / n))])
    return pool[order[:batch_size]]


@dataclass
class LoadedBatch:
    """Decoded images of one step and how many of the drawn images were unreadable.

    Attributes:
        images: uint8 `[b, C, S, S]`, the readable images.
        indices: int64 `[b]`, their indices in the source.
        skipped: drawn images that could not be decoded (dropped from this batch).
    """

    images: torch.Tensor
    indices: torch.Tensor
    skipped: int

    def __len__(self) -> int:
        return len(self.images)


def _collate(items: list[tuple[int, torch.Tensor | None]]) -> LoadedBatch:
    kept = [(index, image) for index, image in items if image is not None]
    images = torch.stack([image for _, image in kept]) if kept else torch.empty(0, dtype=torch.uint8)
    indices = torch.tensor([index for index, _ in kept], dtype=torch.long)
    return LoadedBatch(images, indices, skipped=len(items) - len(kept))


class _PlanSampler:
    """Yields the index list of each step in [start, stop): the DataLoader's batch sampler."""

    def __init__(self, plan: Callable[[int], torch.Tensor], start: int, stop: int) -> None:
        self.plan, self.start, self.stop = plan, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.plan(step).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class StepLoader:
    """Iterate `(step, LoadedBatch)` for steps `start..stop-1`, with `plan(step)` giving the indices.

    Args:
        source: the images.
        plan: step -> int64 indices of this process's share of that step's batch.
        start, stop: step range (start > 0 when resuming).
        num_workers: decoding processes; 0 decodes in the training process.
    """

    def __init__(
        self, source: ImageSource, plan: Callable[[int], torch.Tensor], start: int, stop: int, num_workers: int = 0
    ) -> None:
        self.start = start
        self.loader = DataLoader(
            source,
            batch_sampler=_PlanSampler(plan, start, stop),
            num_workers=num_workers,
            collate_fn=_collate,
            persistent_workers=False,
        )

    def __iter__(self) -> Iterator[tuple[int, LoadedBatch]]:
        return enumerate(self.loader, start=self.start)
