"""Training: a progressive-training step against a plain SimSiam step on the same supernet, in one run.

The paper reports that 256 sub-nets cost 1.9x the baseline's total training time (Table 4);
our goal is under 1.3x per step. A progressive step (phase 4) trains W0 with probability rho,
else a sub-net on its own batch plus SiamKD (whose W0 teacher costs one extra forward pass
without grad). Both columns use `training.trainer.ssl_step`, the function the stages run, on
the same augmented batches, interleaved so that machine noise hits both alike, with the supernet's
weights in channels_last as `sdr train` keeps them; a SimSiam step in NCHW is timed alongside.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.report import Goal, Section, Table
from sdr_model.registry import create_model, default_preprocessing
from training.config import AugmentConfig, OptimConfig, SSLConfig
from training.data.augment import TwoViewAugment
from training.data.synthetic import SyntheticSource
from training.methods import build_method
from training.optim import build_optimizer
from training.progressive import sample_path
from training.run import TRAIN_MEMORY_FORMAT
from training.siamkd_loss import SiamKDLoss
from training.ssl_method import SSLMethod
from training.trainer import ssl_step

GOAL = 1.3  # a progressive step costs under 1.3x a SimSiam step
MODEL, RHO, PROJ_DIM = "sdr_tiny", 0.5, 512


def bench(quick: bool) -> Section:
    batch, steps = (64, 4) if quick else (128, 16)
    torch.manual_seed(0)
    preprocessing = default_preprocessing(MODEL)
    ssl = SSLConfig(proj_hidden=PROJ_DIM, proj_dim=PROJ_DIM, pred_hidden=PROJ_DIM // 4)

    def fresh(memory_format: torch.memory_format) -> tuple[SSLMethod, torch.optim.Optimizer]:
        torch.manual_seed(0)
        method = build_method(create_model(MODEL).to(memory_format=memory_format), ssl).train()
        return method, build_optimizer(method, OptimConfig(), batch)

    method, optimizer = fresh(TRAIN_MEMORY_FORMAT)  # as `sdr train` runs
    nchw, nchw_optimizer = fresh(torch.contiguous_format)
    cfg = method.backbone.config
    source = SyntheticSource(batch, 8, cfg.in_chans, preprocessing.resize)
    augment = TwoViewAugment(AugmentConfig(), preprocessing)
    g = torch.Generator().manual_seed(0)
    x1, x2 = augment(source.images, g)
    kd = SiamKDLoss()

    times: dict[str, list[float]] = {
        "SimSiam step on W0": [],
        f"progressive step (phase 4, rho {RHO}, SiamKD)": [],
        "of which W0 steps": [],
        "of which sub-net steps (sub-net + W0 teacher)": [],
        "SimSiam step on W0, NCHW weights": [],
    }
    names = list(times)
    for i in range(steps + 2):
        t0 = time.perf_counter()
        ssl_step(method, optimizer, x1, x2, None, None, 0.0, amp=False)
        t1 = time.perf_counter()
        path = sample_path(g, RHO, 4, cfg.num_stages, cfg.num_groups)
        ssl_step(method, optimizer, x1, x2, path, kd, 1.0, amp=False)
        t2 = time.perf_counter()
        ssl_step(nchw, nchw_optimizer, x1, x2, None, None, 0.0, amp=False)
        t3 = time.perf_counter()
        if i >= 2:  # two warm-up rounds
            times[names[0]].append(t1 - t0)
            times[names[1]].append(t2 - t1)
            times[names[2] if path is None else names[3]].append(t2 - t1)
            times[names[4]].append(t3 - t2)

    base = statistics.mean(times[names[0]])
    table = Table(["step", "steps", "mean", "median", "vs SimSiam"])
    for name, values in times.items():
        if values:
            mean = statistics.mean(values)
            table.add(name, len(values), f"{mean:.3f} s", f"{statistics.median(values):.3f} s", f"{mean / base:.2f}x")
    ratio = statistics.mean(times[names[1]]) / base
    return Section(
        "Training: progressive step vs SimSiam step",
        __name__,
        f"{MODEL} at {preprocessing.input_size} px, batch {batch}, projector {PROJ_DIM}; the two kinds of "
        "step alternate on the same augmented batch.",
        tables=[table],
        notes=[
            "Both kinds of step train the supernet with channels_last weights (`training.run."
            "TRAIN_MEMORY_FORMAT`), as `sdr train` does; the last row is the SimSiam step of the same "
            "supernet in NCHW, stepped alongside, for what that layout saves."
        ],
        goals=[Goal(f"progressive step under {GOAL}x a SimSiam step (the paper's total: 1.9x)", ratio < GOAL)],
    )
