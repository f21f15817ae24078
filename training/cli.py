"""`sdr train baseline|cluster|progressive|calibrate|all --config FILE.yaml` and `sdr train plot RUN_DIR`.

Registration imports nothing heavy (the `sdr` dispatcher imports every command module); torch
and the training code load when a command runs. Under `torchrun` every process runs the same
command: `torchrun --nproc_per_node=2 -m sdr_model.cli train all --config FILE.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_STAGE_HELP = {
    "baseline": "phase 0: SimSiam/BYOL on the supernet W0 over the whole set",
    "cluster": "cluster the baseline's W0 features into one cluster per path (eq. 2)",
    "progressive": "phases 1-4: progressive training of W0 and the 256 sub-nets with SiamKD",
    "calibrate": "BN statistics of W0 and every path; writes RUN_DIR/supernet.safetensors",
    "all": "the four stages in order, skipping finished ones and resuming a stopped one",
}


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train the supernet: baseline, cluster, progressive, calibrate")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, text in _STAGE_HELP.items():
        p = stages.add_parser(stage, help=text, description=text)
        p.add_argument("--config", required=True, type=Path, help="recipe YAML (see configs/)")
        p.add_argument("--run-dir", type=Path, default=None, help="override the recipe's run_dir")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one recipe setting, e.g. --set cluster.mapping=random (repeatable; values are YAML)",
        )
        p.set_defaults(func=_train)
    p = stages.add_parser("plot", help="write PNG plots of a run's metrics into RUN_DIR/plots/")
    p.add_argument("run_dir", type=Path, help="a run directory written by `sdr train`")
    p.set_defaults(func=_plot)


def _train(args: argparse.Namespace) -> int:
    from training.config import TrainConfigError, load_config
    from training.data import DataError
    from training.run import FINAL_CHECKPOINT, open_run
    from training.stages import StageError, run_stage

    try:
        run = open_run(load_config(args.config, args.overrides), args.run_dir)
        run_stage(run, args.stage)
    except (TrainConfigError, DataError, StageError) as exc:
        print(f"sdr train: error: {exc}", file=sys.stderr)
        return 2
    if run.dist.is_main:
        final = run.run_dir / FINAL_CHECKPOINT
        print(f"sdr train {args.stage}: done in {run.run_dir}" + (f"; checkpoint {final}" if final.is_file() else ""))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from training.plot import plot_run

    if not args.run_dir.is_dir():
        print(f"sdr train plot: error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    for file in plot_run(args.run_dir):
        print(file)
    return 0
