"""SimSiam (Chen & He 2021) on the supernet: the paper's SSL baseline (SDR §4.1, eq. 1)."""

from __future__ import annotations

import torch

from sdr_model.supernet import SDRResNet
from training.config import SSLConfig
from training.heads import SimSiamPredictionHead, SimSiamProjectionHead
from training.simsiam_loss import SimSiamLoss
from training.ssl_method import SSLMethod, SSLOutput, to_supernet_channels

__all__ = ["SimSiam"]


class SimSiam(SSLMethod):
    """Shared encoder f = projector ∘ backbone, predictor h, symmetric loss with stop-gradient."""

    def __init__(self, backbone: SDRResNet, config: SSLConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = SimSiamProjectionHead(backbone.num_features, config.proj_hidden, config.proj_dim)
        self.predictor = SimSiamPredictionHead(config.proj_dim, config.pred_hidden, config.proj_dim)
        self.criterion = SimSiamLoss()

    def project(self, x: torch.Tensor, path: str | None) -> torch.Tensor:
        """f(x) on W0 or on the sub-net `path`: `[B, C, H, W]` -> `[B, P]`."""
        features = self.backbone.forward_features(x, path)  # [B, D] or [B, D_sub]
        return self.projector(to_supernet_channels(self.backbone, features, path))  # [B, P]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, path: str | None) -> SSLOutput:
        z1, z2 = self.project(x1, path), self.project(x2, path)  # [B, P]
        p1, p2 = self.predictor(z1), self.predictor(z2)  # [B, P]
        loss = self.criterion(p1, p2, z1, z2)  # stop-gradient on z inside (SimSiam Alg. 1)
        return SSLOutput(loss=loss, z=z1.detach(), p2=p2)

    @torch.no_grad()
    def teacher_projection(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x, None)
