"""The L2 distillation ablation (paper §5.3): plain squared distance instead of SiamKD's cosine."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["L2DistillLoss"]


class L2DistillLoss(nn.Module):
    """L = || h(f_Wi(x2)) - sg(f_W0(x1)) ||_2^2, batch-averaged.

    Same pair of tensors and the same stop-gradient as SiamKD, so the ablation changes only the
    distance. The paper found it homogenises the sub-nets (std 0.07 vs 2.38 across paths).
    """

    def forward(self, student_prediction: torch.Tensor, teacher_projection: torch.Tensor) -> torch.Tensor:
        diff = student_prediction - teacher_projection.detach()  # [B, P]
        return diff.pow(2).sum(dim=1).mean()
