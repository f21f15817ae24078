"""SimSiam's loss: symmetric negative cosine similarity with stop-gradient (paper eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SimSiamLoss"]


class SimSiamLoss(nn.Module):
    """L = -1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))], averaged over the batch (Chen & He 2021, Alg. 1).

    The stop-gradient on the projections z is what prevents collapse; it is applied here, where
    the SimSiam pseudo-code applies it (`D(p, z)` detaches z).
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        # p*, z*: [B, P]
        cos_12 = F.cosine_similarity(p1, z2.detach(), dim=1)  # [B]
        cos_21 = F.cosine_similarity(p2, z1.detach(), dim=1)
        return -0.5 * (cos_12.mean() + cos_21.mean())
