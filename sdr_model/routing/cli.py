"""`sdr route DATASET --checkpoint FILE`: route a dataset from the shell, with a progress bar and a table.

Registering imports nothing heavy; torch and the engine are imported when the command runs, so
`sdr serve` (which builds the same parser) stays free of torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdr_model.routing.result import PathReport, RouteResult

__all__ = ["format_table", "register"]

_SCORERS = ("knn", "logme", "sfda", "gbc")  # kept literal here: importing options would import numpy


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "route",
        help="score every sub-net on a labelled dataset and pick the best",
        description="Score all 256 sub-nets (and W0) of a supernet checkpoint on a labelled dataset; rank them "
        "on train (leave-one-out kNN by default) and report the pick's accuracy on test.",
    )
    p.add_argument("dataset", type=Path, help="ImageFolder (train/ [test/]), JSONL manifest, or zip/tar of either")
    p.add_argument("--checkpoint", required=True, type=Path, help="supernet checkpoint (.safetensors)")
    p.add_argument("--scorer", choices=_SCORERS, default="knn", help="what ranks the paths (default: knn)")
    p.add_argument(
        "--selection",
        choices=("loo", "split"),
        default="loo",
        help="kNN selection: leave-one-out on train (default) or a stratified selection split",
    )
    p.add_argument("--k", type=int, default=200, help="kNN neighbours for ranking and accuracy (default: 200)")
    p.add_argument("--screen", action="store_true", help="rank on a train subset, re-score the top few on all")
    p.add_argument("--verify-screen", action="store_true", help="with --screen, also run the full route")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and bootstrap (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward mini-batch (default: 128)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", type=Path, help="write the route report as JSON here")
    p.add_argument("--plot", type=Path, help="write the histogram of gains over W0 as PNG here")
    p.add_argument("--top", type=int, default=10, help="rows of the ranking to print (default: 10)")
    p.set_defaults(func=_route_command)


def _route_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sdr_model.checkpoint import CheckpointError
    from sdr_model.datasets import ArchiveError, DatasetError
    from sdr_model.routing.engine import route
    from sdr_model.routing.plot import plot_gain_histogram

    with tqdm(
        total=100.0,
        unit="%",
        desc="routing",
        bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}]",
        file=sys.stderr,
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(100.0 * done / total - bar.n)

        try:
            result = route(
                args.checkpoint,
                args.dataset,
                args.scorer,
                screen=args.screen,
                verify_screen=args.verify_screen,
                device=args.device,
                progress=progress,
                selection=args.selection,
                k=args.k,
                seed=args.seed,
                batch_size=args.batch_size,
            )
        except (DatasetError, ArchiveError, CheckpointError, ValueError) as exc:
            bar.close()
            print(f"sdr route: error: {exc}", file=sys.stderr)
            return 2
    print(format_table(result, args.top))
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    if args.plot:
        print(f"wrote {plot_gain_histogram(result, args.plot)}")
    return 0


def format_table(result: RouteResult, top: int = 10) -> str:
    """The ranking as the terminal shows it: top rows, W0, ties, intervals, skipped files, timings."""
    k = result.options.k
    score_name = (
        f"LOO kNN@{k}"
        if result.options.scorer == "knn" and result.options.selection == "loo"
        else (f"sel kNN@{k}" if result.options.scorer == "knn" else result.options.scorer)
    )

    def row(p: PathReport) -> str:
        name = "W0" if p.path is None else p.path
        rank = "" if p.rank is None else str(p.rank)
        return (
            f"{rank:>4}  {name:>5}  {p.selection_score:>12.4f}  {100 * p.accuracy:>8.2f}  "
            f"{100 * p.mean_class_accuracy:>9.2f}  {'tied' if p.tied else ''}"
        )

    context = result.context
    level = f"{100 * result.options.ci_level:g}%"
    lines = [
        f"dataset {context.dataset}: {len(context.classes)} classes, "
        f"{sum(context.counts['train'].values())} train / {sum(context.counts['test'].values())} test images "
        f"(test {context.test_source}), {len(context.skipped)} skipped",
        f"{'rank':>4}  {'path':>5}  {score_name:>12}  {'test acc':>8}  {'class acc':>9}",
        *[row(p) for p in result.ranking[:top]],
        row(result.supernet),
        "",
        f"best {result.best.path}: {100 * result.best.accuracy:.2f}% on test ({level} CI {_ci(result.best_ci)}); "
        f"W0 {100 * result.supernet.accuracy:.2f}% ({_ci(result.supernet_ci)}); "
        f"gain {100 * result.gain:+.2f} pts ({_ci(result.gain_ci, signed=True)})",
    ]
    if result.ties is not None:
        shown = ", ".join(result.ties[:12]) + (" ..." if len(result.ties) > 12 else "")
        lines.append(f"{len(result.ties)} path(s) statistically tied with the best: {shown}")
    if result.screening is not None:
        s = result.screening.to_dict()
        agrees = {None: "not checked", True: "yes", False: "no"}[s["agrees_with_full_route"]]
        lines.append(
            f"screening: {s['subset_images']} images, {len(s['candidates'])} candidates, "
            f"saved {s['time_saved_seconds']:.1f} s, agrees with full route: {agrees}"
        )
    for skipped in context.skipped[:5]:
        lines.append(f"skipped {skipped.file}: {skipped.reason}")
    t = result.timings
    lines.append(
        f"time: decode {t['decode_seconds']:.1f} s, features {t['features_seconds']:.1f} s, "
        f"scoring {t['scoring_seconds']:.1f} s"
    )
    return "\n".join(lines)


def _ci(interval: tuple[float, float], signed: bool = False) -> str:
    low, high = (100 * v for v in interval)
    return f"{low:+.1f} to {high:+.1f}" if signed else f"{low:.1f}-{high:.1f}"
