"""Each loss against a value computed by hand, and the stop-gradients of SimSiam, BYOL and SiamKD."""

from __future__ import annotations

import math

import pytest
import torch

from training.byol_loss import BYOLLoss
from training.l2_distill_loss import L2DistillLoss
from training.siamkd_loss import SiamKDLoss
from training.simsiam_loss import SimSiamLoss

# Two samples in 2-D, chosen so the cosines are exact: cos((1,0),(1,1)) = 1/sqrt2, cos((0,2),(1,0)) = 0,
# cos((3,4),(3,4)) = 1, cos((1,0),(-1,0)) = -1.
P1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
Z2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
P2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
Z1 = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
R = 1 / math.sqrt(2)


def test_simsiam_loss_matches_hand_value() -> None:
    # -1/2 [mean(R, 0) + mean(1, -1)] = -1/2 [R/2 + 0]
    assert float(SimSiamLoss()(P1, P2, Z1, Z2)) == pytest.approx(-0.5 * (R / 2 + 0.0), abs=1e-6)


def test_byol_loss_matches_hand_value() -> None:
    # 1/2 [mean(2 - 2R, 2 - 0) + mean(2 - 2, 2 + 2)]
    expected = 0.5 * ((2 - 2 * R + 2) / 2 + (0 + 4) / 2)
    assert float(BYOLLoss()(P1, P2, Z1, Z2)) == pytest.approx(expected, abs=1e-6)


def test_siamkd_loss_matches_hand_value() -> None:
    # -mean(cos(P1, Z2)) = -(R + 0) / 2
    assert float(SiamKDLoss()(P1, Z2)) == pytest.approx(-R / 2, abs=1e-6)


def test_l2_distill_loss_matches_hand_value() -> None:
    # ||(1,0)-(1,1)||^2 = 1, ||(0,2)-(1,0)||^2 = 5 -> mean 3
    assert float(L2DistillLoss()(P1, Z2)) == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("loss", [SiamKDLoss(), L2DistillLoss()], ids=["siamkd", "l2"])
def test_distillation_gradient_never_reaches_the_teacher(loss: torch.nn.Module) -> None:
    student = P1.clone().requires_grad_(True)
    teacher = Z2.clone().requires_grad_(True)  # as if the caller forgot no_grad
    loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [SimSiamLoss(), BYOLLoss()], ids=["simsiam", "byol"])
def test_ssl_losses_stop_gradient_on_targets(loss: torch.nn.Module) -> None:
    p1, p2 = P1.clone().requires_grad_(True), P2.clone().requires_grad_(True)
    z1, z2 = Z1.clone().requires_grad_(True), Z2.clone().requires_grad_(True)
    loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p2.grad is not None
