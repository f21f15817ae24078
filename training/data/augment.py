"""SimSiam's augmentations, batched and driven by an explicit generator, and the eval transform.

Two views per image (SimSiam §4 / BYOL): RandomResizedCrop, horizontal flip, colour jitter with
probability 0.8, random grayscale, optional Gaussian blur. All of it runs on whole batches as
tensor ops (one `grid_sample` does crop + flip + resize), because per-image PIL transforms would
cost more than the tiny model's step on 2 cores. Every random draw comes from the generator the
caller passes, so a resumed run produces the very same views.

Departures from torchvision, chosen for batching: the crop box is drawn once (area and log-ratio)
and clipped to the image instead of rejection-sampled; jitter applies brightness, contrast,
saturation and hue in a fixed order rather than a random one. One-channel images get brightness
and contrast only (saturation, hue and grayscale have no meaning there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdr_model.config import Preprocessing
from training.config import AugmentConfig

__all__ = ["TwoViewAugment", "eval_transform"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" conversion


def eval_transform(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Deterministic eval input: resize to `resize`, centre crop `input_size`, normalise.

    Args:
        images: uint8 `[B, C, S, S]`.

    Returns:
        float `[B, C, input_size, input_size]`.
    """
    x = images.float() / 255.0
    x = F.interpolate(
        x, size=(preprocessing.resize, preprocessing.resize), mode="bilinear", antialias=True, align_corners=False
    )
    top = (preprocessing.resize - preprocessing.input_size) // 2
    x = x[:, :, top : top + preprocessing.input_size, top : top + preprocessing.input_size]
    return _normalize(x, preprocessing)


class TwoViewAugment:
    """Make two independently augmented views of a uint8 batch."""

    def __init__(self, config: AugmentConfig, preprocessing: Preprocessing) -> None:
        self.config, self.preprocessing = config, preprocessing
        self.size = preprocessing.input_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 `[B, C, S, S]` -> two float `[B, C, H, H]` normalised views, on the images' device.

        `generator` is a CPU generator; the per-image parameters drawn from it move to the
        images' device, so augmentation runs on the GPU when the batch is there.
        """
        x = images.float() / 255.0
        return self.view(x, generator), self.view(x, generator)

    def view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One augmented view of float `[B, C, S, S]` images in [0, 1]."""
        c = self.config
        x = self._resized_crop_flip(x, g)  # [B, C, H, H]
        x = self._jitter(x, g, _coin(len(x), c.jitter_p, g, x.device))
        if x.shape[1] == 3 and c.grayscale_p > 0:
            gray = _luma(x).expand_as(x)
            x = torch.where(_coin(len(x), c.grayscale_p, g, x.device)[:, None, None, None], gray, x)
        if c.blur_p > 0:
            x = self._blur(x, g, _coin(len(x), c.blur_p, g, x.device))
        return _normalize(x, self.preprocessing)

    def _resized_crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c, b = self.config, len(x)
        area = _uniform(b, c.crop_scale, g, x.device)
        log_ratio = _uniform(b, (math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1])), g, x.device)
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # crop width as a fraction of the side
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (1 - w) * _uniform(b, (0.0, 1.0), g, x.device) + w / 2  # crop centre, inside the image
        cy = (1 - h) * _uniform(b, (0.0, 1.0), g, x.device) + h / 2
        flip = torch.where(_coin(b, c.flip_p, g, x.device), -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, 2 * cx - 1
        theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
        grid = F.affine_grid(theta, [b, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, x: torch.Tensor, g: torch.Generator, apply: torch.Tensor) -> torch.Tensor:
        c, b = self.config, len(x)
        keep = ~apply[:, None, None, None]
        out = x * _uniform(b, (1 - c.brightness, 1 + c.brightness), g, x.device)[:, None, None, None]
        out = out.clamp(0, 1)
        mean = _luma(out).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
        out = (out - mean) * _uniform(b, (1 - c.contrast, 1 + c.contrast), g, x.device)[:, None, None, None] + mean
        out = out.clamp(0, 1)
        if x.shape[1] == 3:
            gray = _luma(out)
            sat = _uniform(b, (1 - c.saturation, 1 + c.saturation), g, x.device)[:, None, None, None]
            out = (gray + (out - gray) * sat).clamp(0, 1)
            out = _rotate_hue(out, _uniform(b, (-c.hue, c.hue), g, x.device)).clamp(0, 1)
        return torch.where(keep, x, out)

    def _blur(self, x: torch.Tensor, g: torch.Generator, apply: torch.Tensor) -> torch.Tensor:
        b, ch, hgt, wid = x.shape
        ksize = 2 * (self.size // 20) + 1  # SimSiam: 23 px at 224, i.e. ~10% of the side
        sigma = _uniform(b, self.config.blur_sigma, g, x.device)
        offsets = torch.arange(ksize, dtype=x.dtype, device=x.device) - ksize // 2
        kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))  # [B, k]
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        kernel = kernel.repeat_interleave(ch, dim=0)  # [B*C, k]
        flat = x.reshape(1, b * ch, hgt, wid)
        pad = ksize // 2
        flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * ch)
        flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), kernel[:, None, :, None], groups=b * ch)
        return torch.where(apply[:, None, None, None], flat.reshape(b, ch, hgt, wid), x)


def _coin(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """[n] bool, True with probability p. Drawn on the CPU generator, so GPU runs draw the same."""
    return (torch.rand(n, generator=g) < p).to(device)


def _uniform(n: int, bounds: tuple[float, float], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=g)).to(device)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 1, H, W] luminance (identity for one channel)."""
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(_LUMA)[None, :, None, None]
    return (x * weights).sum(dim=1, keepdim=True)


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` turns per image, as a rotation of the chroma plane in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    to_rgb = torch.linalg.inv(to_yiq)
    angle = 2 * math.pi * shift
    cos, sin = angle.cos(), angle.sin()
    rot = torch.zeros(len(x), 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = to_rgb @ rot @ to_yiq  # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", matrix, x)


def _normalize(x: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    mean = x.new_tensor(preprocessing.mean)[None, :, None, None]
    std = x.new_tensor(preprocessing.std)[None, :, None, None]
    return (x - mean) / std
