"""BatchNorm for split layers: shared affine weights, running statistics kept per prefix.

The affine weight and bias are ordinary shared parameters, sliced like every other split
weight. The supernet W0 keeps the usual full-width running statistics. A BN layer in stage `s`
(0-based) additionally keeps one row of statistics per prefix of length `s + 1` (4, 16, 64 and
256 rows for stages 1-4 when G=4). Per-prefix rather than per-path rows are what make
shared-prefix routing exact: a stage-1 activation shared by 64 paths is normalised once, with the
statistics of the data that flows through that prefix (docs/ARCHITECTURE.md explains the
departure from DESIGN §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdr_model.channels import select_channels
from sdr_model.config import SDRConfig
from sdr_model.paths import prefix_id

__all__ = ["SplitBatchNorm2d", "reset_bn_statistics", "set_bn_momentum"]


class SplitBatchNorm2d(nn.Module):
    """BN over a split layer of stage `stage`, with per-prefix running statistics.

    Eval mode with a path uses that path's prefix row; train mode uses batch statistics and
    updates the row with `momentum` (None: cumulative average, as in `torch.nn.BatchNorm2d`).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor
    prefix_mean: torch.Tensor
    prefix_var: torch.Tensor
    prefix_batches: torch.Tensor

    def __init__(
        self,
        num_features: int,
        config: SDRConfig,
        stage: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.config, self.stage = config, stage
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        rows, active = config.num_groups ** (stage + 1), config.active_width(num_features)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("prefix_mean", torch.zeros(rows, active))  # [G**(stage+1), C_active]
        self.register_buffer("prefix_var", torch.ones(rows, active))
        self.register_buffer("prefix_batches", torch.zeros(rows, dtype=torch.long))

    def row(self, path: str) -> int:
        """Row of the statistics tables that `path` (or any longer path with its prefix) uses."""
        return prefix_id(path[: self.stage + 1], self.config.num_groups)

    def _update_factor(self, batches: torch.Tensor) -> float:
        if self.momentum is not None:
            return self.momentum
        return 1.0 / (int(batches.item()) + 1)  # cumulative moving average

    def forward(self, x: torch.Tensor, path: str | tuple[str, ...] | None) -> torch.Tensor:
        if isinstance(path, tuple):  # sibling prefixes, stacked along channels (eval only)
            if self.training:
                raise RuntimeError("sibling prefixes are evaluated together in eval mode only")
            params = [self._path_parameters(p) for p in path]
            weight, bias, mean, var = (torch.cat(column) for column in zip(*params, strict=True))
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if path is None:
            if self.training:
                factor = self._update_factor(self.num_batches_tracked)
                self.num_batches_tracked.add_(1)
                return F.batch_norm(
                    x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps
                )
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

        weight, bias, mean, var = self._path_parameters(path)
        if self.training:
            row = self.row(path)
            factor = self._update_factor(self.prefix_batches[row])
            self.prefix_batches[row] += 1
            return F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _path_parameters(self, path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight, bias, mean, var) of `path`; mean and var are contiguous views, updated in place."""
        group, row = int(path[self.stage]), self.row(path)
        weight = select_channels(self.weight, 0, self.config, group)
        bias = select_channels(self.bias, 0, self.config, group)
        return weight, bias, self.prefix_mean[row], self.prefix_var[row]

    def reset_statistics(self) -> None:
        """Zero means, unit variances, zero counts: the state BN calibration starts from."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()
        self.prefix_mean.zero_()
        self.prefix_var.fill_(1.0)
        self.prefix_batches.zero_()

    def extra_repr(self) -> str:
        return f"{self.num_features}, stage={self.stage}, rows={self.prefix_mean.shape[0]}, momentum={self.momentum}"


def reset_bn_statistics(model: nn.Module) -> None:
    """Reset the running statistics of every BN layer in `model` (split and plain)."""
    for module in model.modules():
        if isinstance(module, SplitBatchNorm2d):
            module.reset_statistics()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()


def set_bn_momentum(model: nn.Module, momentum: float | None) -> None:
    """Set the momentum of every BN layer; None switches them to a cumulative average."""
    for module in model.modules():
        if isinstance(module, SplitBatchNorm2d | nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
