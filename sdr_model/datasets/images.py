"""Decode every image once with the checkpoint's deterministic eval transform (DESIGN §5).

The transform is the paper's kNN protocol (appendix A) parameterised by the checkpoint header's
`Preprocessing`: resize the shorter side to `resize` (bilinear, antialiased), center-crop
`input_size`, convert to `channels` (1 -> "L", 3 -> "RGB"), normalise with `mean` / `std`.

Images are stored after the crop as uint8 `[N, C, S, S]` and normalised per mini-batch
(`normalize`): 4x less memory than float32 for the whole dataset, and the normalisation is a
trivial fraction of a forward pass. Decoding runs in a thread pool (Pillow releases the GIL while
decoding and resizing).

Unreadable files are skipped and counted per file with the reason: corrupt or truncated data
(`ImageFile.LOAD_TRUNCATED_IMAGES` stays False) and decompression bombs, images of more than
`Image.MAX_IMAGE_PIXELS` pixels (`decode_policy.check_pixel_limit`, the rule the API's upload check
applies too), refused from the header before their pixels are allocated.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFile

from sdr_model.config import Preprocessing
from sdr_model.datasets.decode_policy import DECODE_THREADS, check_pixel_limit

__all__ = ["DecodedImages", "SkippedFile", "decode_images", "eval_transform", "load_image", "normalize"]

# 16-bit grayscale PNGs open in these modes; Pillow's convert("L") would clip them to white.
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class SkippedFile:
    """An image that could not be used, and why (listed in the route report)."""

    file: str
    reason: str


@dataclass(frozen=True)
class DecodedImages:
    """Images decoded once: cropped uint8 pixels plus the indices of the inputs they came from."""

    pixels: torch.Tensor  # uint8 [N, C, S, S], N = number of readable inputs
    source_index: np.ndarray  # int64 [N]: position of each decoded image in the input sequence
    skipped: tuple[SkippedFile, ...]


def load_image(source: str | Path | bytes, channels: int) -> Image.Image:
    """Open and fully decode an image (a file, or its encoded bytes) as "L" (channels=1) or "RGB" (channels=3).

    Raises:
        OSError / ValueError / Image.DecompressionBombError: unreadable, truncated, or more than
            `Image.MAX_IMAGE_PIXELS` pixels (`check_pixel_limit`).
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        check_pixel_limit(img)
        img.load()  # decode now: truncated data raises here, not at first pixel access
        if img.mode in _WIDE_GRAY_MODES:
            wide = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or wide.max() > 255 else 1.0
            return Image.fromarray(np.clip(wide * scale, 0, 255).round().astype(np.uint8)).convert(
                "L" if channels == 1 else "RGB"
            )
        return img.convert("L" if channels == 1 else "RGB")


def eval_transform(img: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """Resize the shorter side, center-crop: PIL image -> uint8 `[C, S, S]` (not yet normalised).

    torchvision's functional ops on the PIL image, so the rounding of sizes and crop offsets is the
    one every torchvision eval pipeline (and a user reproducing our features) already uses.
    """
    img = TF.resize(img, [preprocessing.resize], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    img = TF.center_crop(img, [preprocessing.input_size])
    return TF.pil_to_tensor(img)  # [C, S, S] uint8


def normalize(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 `[B, C, S, S]` -> float32 normalised with the checkpoint's mean and std."""
    mean = torch.tensor(preprocessing.mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, device=pixels.device).view(1, -1, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def decode_images(
    files: Sequence[str | Path | bytes],
    preprocessing: Preprocessing,
    num_threads: int | None = None,
) -> DecodedImages:
    """Decode and crop every file once; skip (and record) the ones that cannot be read.

    Args:
        files: image files, in the order their labels are kept; or images already in memory, as
            their encoded bytes (the features task: one staged file per request, not one per image).
            A skipped in-memory image is named by its position, `#<index>`.
        preprocessing: from the checkpoint header.
        num_threads: decoding threads (default `DECODE_THREADS`: the CPU count, at most 8); with one, or one file,
            the calling thread decodes.

    Returns:
        The pixels of the readable files in input order, their input indices, and the skipped files.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images would pass as valid")
    threads = num_threads or DECODE_THREADS
    side, channels = preprocessing.input_size, preprocessing.channels
    # Filled in place by the threads: peak memory is the dataset once, not a list plus a stacked copy.
    pixels = torch.empty((len(files), channels, side, side), dtype=torch.uint8)

    def decode(i: int) -> SkippedFile | None:
        try:
            pixels[i] = eval_transform(load_image(files[i], channels), preprocessing)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # SyntaxError: some Pillow plugins (e.g. PNG chunk parsing) report corrupt data this way.
            name = f"#{i}" if isinstance(files[i], bytes) else str(files[i])
            return SkippedFile(file=name, reason=f"{type(exc).__name__}: {exc}")
        return None

    if threads > 1 and len(files) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            outcomes = list(pool.map(decode, range(len(files))))
    else:  # no pool: starting one took 0.5 ms, three times a 28-px image's decode (a one-image request)
        outcomes = [decode(i) for i in range(len(files))]

    readable = np.array([i for i, o in enumerate(outcomes) if o is None], dtype=np.int64)
    if len(readable) < len(files):
        pixels = pixels[torch.from_numpy(readable)]
    return DecodedImages(
        pixels=pixels,
        source_index=readable,
        skipped=tuple(o for o in outcomes if o is not None),
    )
