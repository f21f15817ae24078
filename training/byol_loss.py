"""BYOL's loss: normalised MSE between online predictions and target projections, symmetrised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BYOLLoss"]


class BYOLLoss(nn.Module):
    """L = 1/2 [(2 - 2 cos(p1, sg(t2))) + (2 - 2 cos(p2, sg(t1)))], batch-averaged (Grill et al. 2020, eq. 2).

    `t1`, `t2` come from the momentum target network; they are detached here as well, so the
    loss never sends gradient into the target even if a caller forgets `no_grad`.
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        # p*, t*: [B, P]
        loss_12 = 2 - 2 * F.cosine_similarity(p1, t2.detach(), dim=1)  # [B]
        loss_21 = 2 - 2 * F.cosine_similarity(p2, t1.detach(), dim=1)
        return 0.5 * (loss_12.mean() + loss_21.mean())
