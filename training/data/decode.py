"""Decode one image file into the uint8 square every file source stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "decode_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def decode_image(file: Path, channels: int, size: int) -> torch.Tensor | None:
    """Read `file` as a `[channels, size, size]` uint8 tensor, or None if it cannot be decoded.

    The shorter side is resized to `size` and the centre square kept: RandomResizedCrop then
    samples from that square, so every batch is one tensor and augmentation runs batched.
    """
    try:
        with Image.open(file) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
        left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
        array = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None  # truncated, corrupt or not an image: the caller skips and counts it
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # [C, S, S]
