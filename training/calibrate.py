"""BN calibration (DESIGN §4 D): statistics for W0 and every path, from the data each one trains on.

Running statistics collected during training mix many paths and drift with the weights; before
deployment every network gets statistics of its own data under the final weights (the paper
follows Cai et al. 2019, "for deployment we reset each sub-net with the corresponding BN
statistics"). All statistics are reset, BN momentum is set to None (cumulative average), only the
BN layers are in train mode, and under no_grad W0 sees the whole set and each path its own
cluster. BN rows are kept per prefix (docs/ARCHITECTURE.md), so a stage-s prefix row ends up
averaging the clusters of all paths below it: the data that flows through that prefix.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sdr_model.batchnorm import SplitBatchNorm2d, reset_bn_statistics, set_bn_momentum
from sdr_model.supernet import SDRResNet

__all__ = ["bn_calibration_mode", "calibrate_network", "finish_calibration"]

TRAINING_BN_MOMENTUM = 0.1  # torch's default, which every BN layer is built with


def bn_calibration_mode(backbone: SDRResNet, reset: bool) -> None:
    """Eval mode except BN layers (train mode, cumulative average); `reset` clears all statistics."""
    if reset:
        reset_bn_statistics(backbone)
    set_bn_momentum(backbone, None)
    backbone.eval()
    for module in backbone.modules():
        if isinstance(module, SplitBatchNorm2d | nn.modules.batchnorm._BatchNorm):
            module.train()


@torch.no_grad()
def calibrate_network(backbone: SDRResNet, path: str | None, batches: Iterable[torch.Tensor]) -> int:
    """Accumulate the statistics of `path` (None: W0) over `batches` of inputs; returns images seen."""
    seen = 0
    for x in batches:
        backbone.forward_features(x, path)
        seen += len(x)
    return seen


def finish_calibration(backbone: SDRResNet) -> None:
    """Back to eval mode with the training momentum; the statistics stay as calibrated."""
    set_bn_momentum(backbone, TRAINING_BN_MOMENTUM)
    backbone.eval()
