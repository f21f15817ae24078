"""SGD with SimSiam's learning-rate rule: base lr x batch/256, cosine decay, fixed-lr predictor."""

from __future__ import annotations

import math

import torch

from training.config import OptimConfig
from training.ssl_method import SSLMethod

__all__ = ["build_optimizer", "set_learning_rate"]


def build_optimizer(method: SSLMethod, config: OptimConfig, batch_size: int) -> torch.optim.SGD:
    """SGD over the trainable parameters; the predictor is its own group (SimSiam keeps its lr fixed)."""
    lr = config.lr * batch_size / 256
    predictor = {id(p) for p in method.predictor.parameters()}  # type: ignore[union-attr]
    trainable = [p for p in method.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in predictor], "base_lr": lr, "fixed_lr": False},
        {"params": [p for p in trainable if id(p) in predictor], "base_lr": lr, "fixed_lr": config.fix_pred_lr},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 over the stage; returns the backbone's lr."""
    if step < warmup_steps:
        factor = (step + 1) / warmup_steps
    else:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * (1.0 if group["fixed_lr"] else factor)
    return float(optimizer.param_groups[0]["lr"])
