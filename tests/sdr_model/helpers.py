"""Test helpers: make BN state non-trivial so equality tests cannot pass by accident."""

from __future__ import annotations

import torch
from torch import nn

from sdr_model.batchnorm import SplitBatchNorm2d


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Random affine weights and random running statistics in every BN layer and row.

    Fresh models start with zero last-BN weights (identity residuals) and identical statistics
    rows; both would hide slicing and row-selection mistakes.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SplitBatchNorm2d | nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, SplitBatchNorm2d):
                m.prefix_mean.copy_(torch.randn(m.prefix_mean.shape, generator=g) * 0.1)
                m.prefix_var.copy_(torch.rand(m.prefix_var.shape, generator=g) + 0.5)
