"""SimSiam/BYOL on the supernet: heads, the collapse signal, and where a progressive step's gradient goes."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from torch import nn

from sdr_model.registry import create_model
from training.collapse import collapse_std
from training.config import OptimConfig, SSLConfig
from training.heads import SimSiamProjectionHead
from training.methods import build_method
from training.optim import build_optimizer
from training.siamkd_loss import SiamKDLoss
from training.trainer import ssl_step

SSL = SSLConfig(proj_hidden=32, proj_dim=32, pred_hidden=8)


def _views(batch: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 1, size, size, generator=g), torch.randn(batch, 1, size, size, generator=g)


def test_simsiam_projector_follows_the_paper() -> None:
    head = SimSiamProjectionHead(16, 32, 8)
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [n.affine for n in norms] == [True, True, False]  # last BN has no affine (SimSiam §4)
    assert head(torch.randn(4, 16)).shape == (4, 8)


def test_collapse_std_reads_healthy_and_collapsed_outputs() -> None:
    d = 256
    healthy = collapse_std(torch.randn(4096, d))
    assert healthy == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert collapse_std(torch.ones(64, d) + 1e-9 * torch.randn(64, d)) < 1e-3


@pytest.mark.parametrize("name", ["simsiam", "byol"])
def test_methods_train_w0_and_subnets(name: Literal["simsiam", "byol"]) -> None:
    torch.manual_seed(0)
    method = build_method(create_model("sdr_tiny", input_size=32), SSLConfig(method=name, **_heads()))
    x1, x2 = _views()
    for path in (None, "0312"):
        out = method(x1, x2, path)
        assert out.z.shape == out.p2.shape == (8, 32)
        assert torch.isfinite(out.loss)
        assert not out.z.requires_grad and out.p2.requires_grad


def _heads() -> dict[str, int]:
    return {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 8}


def test_subnet_step_with_siamkd_updates_only_the_subnet() -> None:
    """The W0 teacher runs every channel, but gradient reaches only the sub-net's channels."""
    torch.manual_seed(0)
    backbone = create_model("sdr_tiny", input_size=32)
    method = build_method(backbone, SSL).train()
    optimizer = build_optimizer(method, OptimConfig(weight_decay=0.0), 8)
    x1, x2 = _views()
    record = ssl_step(method, optimizer, x1, x2, "0000", SiamKDLoss(), 1.0, amp=False)
    assert "loss_kd" in record
    # Gradients stay on the parameters after the step. The last stage's shortcut projection (the
    # residual branches sit behind zero-initialised BN weights and get no gradient at step 0):
    # path 0000 uses shared ∪ g0 of its output channels, a contiguous head of the weight.
    grad = dict(backbone.named_parameters())["layer4.0.downsample.0.weight"].grad
    assert grad is not None
    active = backbone.config.active_width(grad.shape[0])
    assert grad[:active].abs().sum() > 0
    assert grad[active:].abs().sum() == 0  # groups 1-3: only the teacher touched them, under stop-gradient
