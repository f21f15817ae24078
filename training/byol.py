"""BYOL (Grill et al. 2020) on the supernet: the paper's second SSL baseline (SDR Table 1)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from sdr_model.supernet import SDRResNet
from training.byol_loss import BYOLLoss
from training.config import SSLConfig
from training.heads import BYOLPredictionHead, BYOLProjectionHead
from training.ssl_method import SSLMethod, SSLOutput, to_supernet_channels

__all__ = ["BYOL"]


class BYOL(SSLMethod):
    """Online backbone + projector + predictor; a momentum (EMA) target of backbone + projector.

    The target runs the same path as the online network, so a sub-net is pulled towards its own
    slowly moving copy; SiamKD's teacher is the target's W0 projection.
    """

    def __init__(self, backbone: SDRResNet, config: SSLConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = BYOLProjectionHead(backbone.num_features, config.proj_hidden, config.proj_dim)
        self.predictor = BYOLPredictionHead(config.proj_dim, config.pred_hidden, config.proj_dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = config.byol_momentum
        self.criterion = BYOLLoss()

    def _project(self, backbone: SDRResNet, projector: nn.Module, x: torch.Tensor, path: str | None) -> torch.Tensor:
        features = backbone.forward_features(x, path)  # [B, D] or [B, D_sub]
        return projector(to_supernet_channels(self.backbone, features, path))  # [B, P]

    @torch.no_grad()
    def target_projection(self, x: torch.Tensor, path: str | None) -> torch.Tensor:
        return self._project(self.target_backbone, self.target_projector, x, path)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, path: str | None) -> SSLOutput:
        z1 = self._project(self.backbone, self.projector, x1, path)  # [B, P]
        z2 = self._project(self.backbone, self.projector, x2, path)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.target_projection(x1, path), self.target_projection(x2, path)  # no grad
        loss = self.criterion(p1, p2, t1, t2)
        return SSLOutput(loss=loss, z=z1.detach(), p2=p2)

    def teacher_projection(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projection(x, None)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """EMA update of the target; momentum follows BYOL's cosine schedule from base to 1."""
        tau = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
                p_target.mul_(tau).add_(p_online.detach(), alpha=1 - tau)
