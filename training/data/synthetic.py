"""A procedural image set with planted classes, for tests, benchmarks and a data-free smoke run.

Each class is a sinusoidal grating with its own orientation and frequency; every image gets a
random phase, contrast and noise. Generation is seeded, so the fingerprint is the recipe itself.
"""

from __future__ import annotations

import hashlib
import math

import torch

from training.data.source import ImageSource

__all__ = ["SyntheticSource"]


class SyntheticSource(ImageSource):
    """`num_images` uint8 `[C, size, size]` gratings in `num_classes` classes, held in memory."""

    def __init__(self, num_images: int, num_classes: int, channels: int, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(num_images) % num_classes
        angle = labels.float() * math.pi / num_classes  # [N]
        freq = 2.0 + (labels % 3).float() * 1.5  # [N] cycles per image
        phase = torch.rand(num_images, generator=g) * 2 * math.pi
        contrast = 0.25 + 0.2 * torch.rand(num_images, generator=g)
        coords = torch.linspace(0, 1, size)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [S, S]
        proj = xx * angle.cos()[:, None, None] + yy * angle.sin()[:, None, None]  # [N, S, S]
        wave = torch.sin(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])
        img = 0.5 + contrast[:, None, None] * wave + 0.05 * torch.randn(num_images, size, size, generator=g)
        tint = 0.6 + 0.4 * torch.rand(num_classes, channels, generator=g)  # per-class colour
        img = img[:, None] * tint[labels][:, :, None, None]  # [N, C, S, S]
        self.images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        self.labels = labels.long()
        self.channels = channels
        self._recipe = f"synthetic:{num_images}:{num_classes}:{channels}:{size}:{seed}"

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> torch.Tensor | None:
        return self.images[index]

    def fingerprint(self) -> str:
        return hashlib.sha256(self._recipe.encode()).hexdigest()
