"""What every SSL method offers the trainers, and how sub-net features enter the shared heads.

One projector and one predictor serve W0 and all 256 sub-nets. A sub-net's features are the
channels `shared ∪ g[path[-1]]` of the last stage, a subset of W0's; they are written back into
those channel positions (the others stay zero) before the projector. That is the projector's
first layer restricted to the path's input channels, the same weight sharing as every split
layer of the supernet, and it lets SiamKD compare sub-net and W0 outputs in one space.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

from sdr_model.channels import channel_index
from sdr_model.supernet import SDRResNet

__all__ = ["SSLMethod", "SSLOutput", "to_supernet_channels"]


@dataclass
class SSLOutput:
    """One SSL step's outputs.

    Attributes:
        loss: L_SSL(D_i; W_i) for the step's batch and path.
        z: projection of the first view `[B, P]`, detached: the collapse signal is read from it.
        p2: prediction from the second view `[B, P]`, with grad: SiamKD's student (eq. 4).
    """

    loss: torch.Tensor
    z: torch.Tensor
    p2: torch.Tensor


def to_supernet_channels(backbone: SDRResNet, features: torch.Tensor, path: str | None) -> torch.Tensor:
    """Place a sub-net's `[B, D_sub]` features at their channels of W0's `[B, D]` feature vector."""
    if path is None:
        return features
    config = backbone.config
    index = channel_index(config, config.num_features, int(path[-1]), features.device)
    full = features.new_zeros(features.shape[0], config.num_features)  # [B, D]
    return full.index_copy(1, index, features)


class SSLMethod(nn.Module, abc.ABC):
    """Backbone (the supernet) + heads + loss. `forward(x1, x2, path)` trains W0 or sub-net `path`."""

    backbone: SDRResNet

    @abc.abstractmethod
    def forward(self, x1: torch.Tensor, x2: torch.Tensor, path: str | None) -> SSLOutput:
        """The SSL loss of the two views on W0 (`path=None`) or on the sub-net `path`."""

    @abc.abstractmethod
    def teacher_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W0's projection of `x` `[B, P]`, computed without grad: SiamKD's teacher (eq. 4)."""

    def after_step(self, progress: float) -> None:
        """Hook after each optimiser step; `progress` in [0, 1] is the stage's completed fraction."""
