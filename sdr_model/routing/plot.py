"""The route's picture: histogram of every path's kNN accuracy gain over W0 (the paper's Fig. 4b)."""

from __future__ import annotations

import os
from pathlib import Path

from sdr_model.routing.result import RouteResult

__all__ = ["plot_gain_histogram"]


def plot_gain_histogram(result: RouteResult, file: str | os.PathLike[str]) -> Path:
    """Write a PNG: x = test accuracy minus W0's (points), y = number of paths; the pick is marked.

    Gains are on the test split, which did not choose the pick: the pick's bar need not be the
    right-most one, and that is the honest picture of selection noise.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and workers
    import matplotlib.pyplot as plt

    baseline = result.supernet.accuracy
    gains = [100.0 * (p.accuracy - baseline) for p in result.ranking]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.hist(gains, bins=min(40, max(5, len(gains) // 4)), color="#4C72B0", edgecolor="white")
    ax.axvline(0.0, color="black", linewidth=1.0, label=f"W0 ({100 * baseline:.1f}%)")
    best_gain = 100.0 * result.gain
    ax.axvline(
        best_gain,
        color="#C44E52",
        linestyle="--",
        linewidth=1.5,
        label=f"pick {result.best.path} ({best_gain:+.1f} pts)",
    )
    ax.set_xlabel("kNN accuracy gain over W0 on test (points)")
    ax.set_ylabel("number of paths")
    ax.set_title(f"{result.context.dataset}: {len(gains)} paths, scorer {result.options.scorer}")
    ax.legend(frameon=False)
    fig.tight_layout()
    file = Path(file)
    fig.savefig(file)
    plt.close(fig)
    return file
