"""The SSL training loop shared by the baseline (phase 0) and progressive (phases 1..4) stages.

Each step (algorithm 1, lines 6-10): the step's plan names a network (W0 or a path) and the pool
it draws from (D_0 or its cluster D_i); a batch is drawn and augmented from per-step generators;
the loss is L_SSL(D_i; W_i), plus lambda * L_SiamKD(D_i; W_i) (eq. 4) for a sub-net; one SGD
step updates the parameters the network touched. State is saved every `checkpoint_every` steps
and at the end; a rerun continues from the last save and, on CPU, reproduces the uninterrupted
run exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from training.collapse import collapse_std
from training.data import StepLoader, TwoViewAugment, draw_batch, step_generator
from training.distributed import average_gradients
from training.l2_distill_loss import L2DistillLoss
from training.metrics import MetricsLog
from training.optim import build_optimizer, set_learning_rate
from training.run import STAGE_CODES, Run
from training.siamkd_loss import SiamKDLoss
from training.ssl_method import SSLMethod
from training.state import load_state, save_state, state_exists

__all__ = ["StepPlan", "build_distill", "ssl_step", "train_ssl"]

# Purposes mixed into per-step seeds: one independent stream each. MIX_DRAW is keyed by path id
# instead of step: the whole-set share of a path's pool (`progressive.mix`), drawn once.
PATH_DRAW, BATCH_DRAW, AUGMENT_DRAW, MIX_DRAW = 1, 2, 3, 4


@dataclass(frozen=True)
class StepPlan:
    """What step t trains: the network (None = W0), the pool of image indices, the phase."""

    path: str | None
    pool: torch.Tensor
    phase: int


def build_distill(kind: str) -> torch.nn.Module | None:
    """The distillation term of progressive steps: SiamKD (eq. 4), L2 (ablation) or none."""
    return {"siamkd": SiamKDLoss(), "l2": L2DistillLoss(), "none": None}[kind]


def ssl_step(
    method: SSLMethod,
    optimizer: torch.optim.Optimizer,
    x1: torch.Tensor,
    x2: torch.Tensor,
    path: str | None,
    distill: torch.nn.Module | None,
    lam: float,
    amp: bool,
    world_size: int = 1,
) -> dict[str, float]:
    """One optimiser step on two views `[B, C, H, W]` for W0 (`path=None`) or sub-net `path`.

    Loss: L_SSL(D_i; W_i), plus lambda * distill(h(f_Wi(x2)), sg(f_W0(x1))) on a sub-net (eq. 4).
    Returns the logged values (losses and the collapse signal).
    """
    record: dict[str, float] = {}
    with torch.autocast(device_type=x1.device.type, dtype=torch.bfloat16, enabled=amp):
        out = method(x1, x2, path)
        loss = out.loss
        record["loss_ssl"] = float(out.loss.detach())
        if distill is not None and path is not None:
            # W0 teaches the sub-net under stop-gradient (eq. 4): computed without grad, and
            # detached again inside the loss.
            kd = distill(out.p2, method.teacher_projection(x1))
            loss = loss + lam * kd
            record["loss_kd"] = float(kd.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients([p for p in method.parameters() if p.grad is not None], world_size)
    optimizer.step()
    record["loss"] = float(loss.detach())
    record["collapse_std"] = collapse_std(out.z)
    return record


def train_ssl(
    run: Run,
    stage: str,
    method: SSLMethod,
    total_steps: int,
    batch_size: int,
    plan: Callable[[int, torch.Generator], StepPlan],
    distill: torch.nn.Module | None = None,
    lam: float = 0.0,
) -> dict[str, Any]:
    """Train `method` for `total_steps` steps of `stage`, resuming from its saved state.

    Args:
        plan: (step, generator) -> StepPlan; must be a pure function of its arguments.
        distill: SiamKD or L2 loss added with weight `lam` on sub-net steps; None for W0-only training.

    Returns:
        A summary (steps, skipped images, seconds) recorded in the final checkpoint's provenance.
    """
    cfg, dist = run.config, run.dist
    directory = run.stage_dir(stage)
    code = STAGE_CODES[stage]
    optimizer = build_optimizer(method, cfg.optim, batch_size)
    start, extra = 0, {"skipped_images": 0, "seconds": 0.0}
    if state_exists(directory):
        start, extra = load_state(directory, method, optimizer, dist.device)
    metrics = MetricsLog(directory / "metrics.jsonl", resume_step=start, enabled=dist.is_main)
    augment = TwoViewAugment(cfg.augment, run.preprocessing)

    def plan_at(step: int) -> StepPlan:
        return plan(step, step_generator(cfg.seed, code, step, PATH_DRAW))

    def shard(step: int) -> torch.Tensor:  # this process's share of the step's global batch
        batch = draw_batch(plan_at(step).pool, batch_size, step_generator(cfg.seed, code, step, BATCH_DRAW))
        return batch[dist.rank :: dist.world_size]

    loader = StepLoader(run.source, shard, start, total_steps, cfg.data.num_workers)
    bar = tqdm(total=total_steps, initial=start, desc=stage, disable=not run.progress, dynamic_ncols=True)
    method.train()
    clock = time.perf_counter()
    for step, batch in loader:
        step_plan = plan_at(step)
        lr = set_learning_rate(optimizer, step, total_steps, cfg.optim.warmup_steps)
        extra["skipped_images"] += batch.skipped
        record: dict[str, Any] = {"step": step + 1, "phase": step_plan.phase, "path": step_plan.path, "lr": lr}
        if dist.all_min(len(batch)) >= 2:  # BN needs two samples; an all-unreadable batch is skipped everywhere
            images = batch.images.to(dist.device, non_blocking=True)  # augment where the model runs
            x1, x2 = augment(images, step_generator(cfg.seed, code, step, AUGMENT_DRAW, dist.rank))
            record.update(ssl_step(method, optimizer, x1, x2, step_plan.path, distill, lam, run.amp, dist.world_size))
            method.after_step((step + 1) / total_steps)
            bar.set_postfix(loss=f"{record['loss']:.3f}", std=f"{record['collapse_std']:.3f}", refresh=False)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == total_steps:
            record["skipped_images"] = extra["skipped_images"]
            metrics.log(record)
        if done % cfg.checkpoint_every == 0 or done == total_steps:
            extra["seconds"] += time.perf_counter() - clock
            clock = time.perf_counter()
            if dist.is_main:
                save_state(directory, done, method, optimizer, extra)
            dist.barrier()
    bar.close()
    return {"steps": total_steps, **extra}
