"""Progressive-training step vs plain SimSiam step on the same supernet, measured in one run.

The paper reports that 256 sub-nets cost 1.9x the baseline's total training time (Table 4);
our goal is under 1.3x per step. A progressive step (phase 4) trains W0 with probability rho,
else a sub-net on its own batch plus SiamKD (whose W0 teacher costs one extra forward pass
without grad). Both columns use `training.trainer.ssl_step`, the function the stages run, on
the same augmented batches, interleaved so that machine noise hits both alike.

    .venv/bin/python -m benchmarks.train_step                 # sdr_tiny, batch 256, 64 px
    .venv/bin/python -m benchmarks.train_step --batch 64 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdr_model.registry import create_model, default_preprocessing
from training.config import AugmentConfig, OptimConfig, SSLConfig
from training.data.augment import TwoViewAugment
from training.data.synthetic import SyntheticSource
from training.methods import build_method
from training.optim import build_optimizer
from training.progressive import sample_path
from training.siamkd_loss import SiamKDLoss
from training.trainer import ssl_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sdr_tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per kind (after 2 warm-up steps)")
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--proj-dim", type=int, default=512)
    args = parser.parse_args()

    torch.manual_seed(0)
    preprocessing = default_preprocessing(args.model)
    backbone = create_model(args.model)
    ssl = SSLConfig(proj_hidden=args.proj_dim, proj_dim=args.proj_dim, pred_hidden=args.proj_dim // 4)
    method = build_method(backbone, ssl).train()
    optimizer = build_optimizer(method, OptimConfig(), args.batch)
    cfg = backbone.config
    source = SyntheticSource(args.batch, 8, cfg.in_chans, preprocessing.resize)
    augment = TwoViewAugment(AugmentConfig(), preprocessing)
    g = torch.Generator().manual_seed(0)
    x1, x2 = augment(source.images, g)
    kd = SiamKDLoss()

    times: dict[str, list[float]] = {
        "simsiam (W0)": [],
        "progressive (phase 4)": [],
        "  of which W0 steps": [],
        "  of which sub-net steps": [],
    }
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        ssl_step(method, optimizer, x1, x2, None, None, 0.0, amp=False)
        t1 = time.perf_counter()
        path = sample_path(g, args.rho, 4, cfg.num_stages, cfg.num_groups)
        ssl_step(method, optimizer, x1, x2, path, kd, 1.0, amp=False)
        t2 = time.perf_counter()
        if i >= 2:
            times["simsiam (W0)"].append(t1 - t0)
            times["progressive (phase 4)"].append(t2 - t1)
            times["  of which W0 steps" if path is None else "  of which sub-net steps"].append(t2 - t1)

    base = statistics.mean(times["simsiam (W0)"])
    print(
        f"{args.model}, batch {args.batch}, {preprocessing.input_size} px, rho {args.rho}, "
        f"{torch.get_num_threads()} threads, {args.steps} steps each"
    )
    print(f"{'step':<28}{'n':>4}{'mean s':>10}{'median s':>10}{'vs simsiam':>12}")
    for name, values in times.items():
        if values:
            mean = statistics.mean(values)
            print(f"{name:<28}{len(values):>4}{mean:>10.3f}{statistics.median(values):>10.3f}{mean / base:>11.2f}x")


if __name__ == "__main__":
    main()
