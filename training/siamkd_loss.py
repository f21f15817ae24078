"""SiamKD (paper eq. 4): the sub-net's prediction matches the supernet's projection, one way."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SiamKDLoss"]


class SiamKDLoss(nn.Module):
    """L = -cos(h(f_Wi(x2)), sg(f_W0(x1))), batch-averaged.

    The supernet W0 is the teacher under stop-gradient ("we distill the SDRnet to each sub-net
    unilaterally", §4.2): its projection is detached here, so no gradient of this term reaches the
    weights through the teacher's forward pass, only through the sub-net's.
    """

    def forward(self, student_prediction: torch.Tensor, teacher_projection: torch.Tensor) -> torch.Tensor:
        # [B, P] each
        return -F.cosine_similarity(student_prediction, teacher_projection.detach(), dim=1).mean()
