"""`sdr train plot RUN_DIR`: losses, collapse signal, cluster sizes and phase boundaries as PNGs.

The baseline and progressive stages share one step axis (progressive steps follow the
baseline's), with a dashed line at the start of every phase.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from training.metrics import read_metrics

__all__ = ["plot_run"]


def plot_run(run_dir: Path) -> list[Path]:
    """Write the PNGs for whatever stages of `run_dir` have metrics; returns their paths."""
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    records, boundaries = _training_records(run_dir)
    written = []
    if records:
        losses = ["loss", "loss_ssl", "loss_kd"]
        written.append(_series(records, boundaries, losses, "loss", out / "losses.png"))
        std_label = "std of L2-normalised z"
        written.append(_series(records, boundaries, ["collapse_std"], std_label, out / "collapse_std.png"))
    report_file = run_dir / "cluster" / "clusters.json"
    if report_file.is_file():
        written.append(_cluster_sizes(json.loads(report_file.read_text()), out / "cluster_sizes.png"))
    return written


def _training_records(run_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Metrics of both training stages on one step axis, and the (step, label) phase boundaries."""
    records: list[dict[str, Any]] = []
    boundaries: list[tuple[int, str]] = []
    offset = 0
    for stage in ("baseline", "progressive"):
        file = run_dir / stage / "metrics.jsonl"
        if not file.is_file():
            continue
        stage_records = read_metrics(file)
        done_file = run_dir / stage / "done.json"
        done = json.loads(done_file.read_text()) if done_file.is_file() else {}
        if stage == "baseline":
            boundaries.append((0, "phase 0"))
        else:
            starts = done.get("phase_starts") or _phase_starts(stage_records)
            boundaries += [(offset + s, f"phase {i}") for i, s in enumerate(starts, start=1)]
        records += [{**r, "global_step": offset + r["step"]} for r in stage_records]
        offset += int(done.get("steps", stage_records[-1]["step"] if stage_records else 0))
    return records, boundaries


def _phase_starts(records: list[dict[str, Any]]) -> list[int]:
    starts, seen = [], set()
    for r in records:
        if r.get("phase") not in seen:
            seen.add(r.get("phase"))
            starts.append(int(r["step"]))
    return starts


def _series(
    records: list[dict[str, Any]], boundaries: list[tuple[int, str]], keys: list[str], ylabel: str, file: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for key in keys:
        points = [(r["global_step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=key, linewidth=1)
    for step, label in boundaries:
        ax.axvline(step, color="grey", linestyle="--", linewidth=0.8)
        ax.text(step, ax.get_ylim()[1], f" {label}", va="top", fontsize=8, color="grey")
    ax.set_xlabel("training step (baseline, then progressive)")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)
    return file


def _cluster_sizes(report: dict[str, Any], file: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    sizes = report["split"]["sizes"]
    ax.bar(range(len(sizes)), sizes, width=1.0)
    title = f"images per path ({report['method']}, mapping {report['mapping']}"
    if "nmi" in report["split"]:
        title += f", NMI {report['split']['nmi']:.3f}"
    ax.set_title(title + ")")
    ax.axhline(sum(sizes) / len(sizes), color="red", linewidth=0.8, label="N / k")
    ax.set_xlabel("path id")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)
    return file
