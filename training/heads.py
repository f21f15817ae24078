"""Projection and prediction heads, built lightly-style from `(in, out, norm, act)` tuples.

Every layer of a head is `Linear(in, out)` followed by an optional norm and an optional
activation; a Linear followed by BatchNorm has no bias (the BN shift makes it redundant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "ProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
]

LayerSpec = tuple[int, int, nn.Module | None, nn.Module | None]


class ProjectionHead(nn.Module):
    """An MLP given as `(in_features, out_features, norm or None, activation or None)` per layer."""

    def __init__(self, blocks: Sequence[LayerSpec]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for in_features, out_features, norm, act in blocks:
            layers.append(nn.Linear(in_features, out_features, bias=norm is None))
            if norm is not None:
                layers.append(norm)
            if act is not None:
                layers.append(act)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # [B, in] -> [B, out]


class SimSiamProjectionHead(ProjectionHead):
    """SimSiam projector: 3 layers, BN on every output, the last BN without affine (Chen & He 2021, §4)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            [
                (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, out_dim, nn.BatchNorm1d(out_dim, affine=False), None),
            ]
        )


class SimSiamPredictionHead(ProjectionHead):
    """SimSiam predictor: a 2-layer bottleneck MLP, no BN on its output (Chen & He 2021, §4)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            [
                (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, out_dim, None, None),
            ]
        )


class BYOLProjectionHead(ProjectionHead):
    """BYOL projector: Linear-BN-ReLU-Linear (Grill et al. 2020, §3.3)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            [
                (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, out_dim, None, None),
            ]
        )


class BYOLPredictionHead(ProjectionHead):
    """BYOL predictor: the same shape as its projector (Grill et al. 2020, §3.3)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            [
                (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, out_dim, None, None),
            ]
        )
