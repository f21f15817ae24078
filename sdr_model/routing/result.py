"""The route report: ranking, best path, W0, intervals, ties, timings; its JSON is the public contract.

`RouteResult.to_dict()` is what `sdr route --json` writes and what the service's
`GET /route/{job_id}` returns as `result`. DESIGN §5's minimum is kept at the top level:
`{"best": {"path", "accuracy"}, "supernet": {"accuracy"}, "paths": [{"path", "accuracy"}, ...]}`,
every accuracy in [0, 1] on the reported split (`"reported_split": "test"`), which never took part
in choosing the best path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdr_model.atomic_write import write_text_atomic
from sdr_model.routing.data import RouteContext
from sdr_model.routing.options import RouteOptions

__all__ = ["FORMAT", "FORMAT_VERSION", "PathReport", "RouteResult", "ScreeningReport"]

FORMAT, FORMAT_VERSION = "sdr-route", 1


@dataclass(frozen=True)
class PathReport:
    """One candidate's line in the ranking."""

    path: str | None  # None: the supernet W0
    rank: int | None  # 1 = best; None for W0, which is reported but not a candidate
    selection_score: float  # what ranked it (see `RouteOptions.scorer` and `.selection`)
    accuracy: float  # kNN top-1 on test at the ranking k
    mean_class_accuracy: float  # kNN mean per-class accuracy on test at the ranking k
    knn_top1: dict[int, float]  # top-1 on test for every reported k
    tied: bool  # statistically tied with the best on the selection evidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rank": self.rank,
            "selection_score": self.selection_score,
            "accuracy": self.accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "knn_top1": {str(k): v for k, v in self.knn_top1.items()},
            "tied_with_best": self.tied,
        }


@dataclass(frozen=True)
class ScreeningReport:
    """How a screened route was made and what it saved."""

    subset_images: int  # train images every path was scored on
    candidates: tuple[str, ...]  # paths re-scored on everything
    best: str  # the screened route's pick
    screen_scores: dict[str, float]  # every path's selection score on the subset
    screen_seconds: float
    rescore_seconds: float
    estimated_full_seconds: float  # the screen phase's cost per image and path, scaled to a full route
    full_route_best: str | None = None  # set when the full route was run to check agreement
    full_route_seconds: float | None = None

    @property
    def agrees(self) -> bool | None:
        """Whether the screened pick is the full route's pick (None: not checked)."""
        return None if self.full_route_best is None else self.full_route_best == self.best

    def to_dict(self) -> dict[str, Any]:
        spent = self.screen_seconds + self.rescore_seconds
        full = self.full_route_seconds if self.full_route_seconds is not None else self.estimated_full_seconds
        return {
            "subset_images": self.subset_images,
            "candidates": list(self.candidates),
            "screen_scores": self.screen_scores,
            "screen_seconds": self.screen_seconds,
            "rescore_seconds": self.rescore_seconds,
            "full_route_seconds": full,
            "full_route_seconds_measured": self.full_route_seconds is not None,
            "time_saved_seconds": full - spent,
            "full_route_best": self.full_route_best,
            "agrees_with_full_route": self.agrees,
        }


@dataclass(frozen=True)
class RouteResult:
    """Everything a route found out."""

    ranking: tuple[PathReport, ...]  # scored paths, best first
    supernet: PathReport
    best_ci: tuple[float, float]  # bootstrap interval of the best path's test accuracy
    supernet_ci: tuple[float, float]
    gain: float  # best path's test accuracy minus W0's
    gain_ci: tuple[float, float]  # paired bootstrap interval of the gain
    ties: tuple[str, ...] | None  # paths tied with the best (None: the scorer gives no per-image evidence)
    options: RouteOptions
    context: RouteContext
    timings: dict[str, float]
    screening: ScreeningReport | None = None

    @property
    def best(self) -> PathReport:
        return self.ranking[0]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "best": {**best.to_dict(), "accuracy_ci": list(self.best_ci)},
            "supernet": {**self.supernet.to_dict(), "accuracy_ci": list(self.supernet_ci)},
            "gain": {"accuracy": self.gain, "ci": list(self.gain_ci)},
            "paths": [p.to_dict() for p in self.ranking],
            "ties": None if self.ties is None else list(self.ties),
            "reported_split": "test",
            "scorer": self.options.scorer,
            "selection": {
                "method": self.options.selection if self.options.scorer == "knn" else "train-score",
                "queries": self.context.selection_queries,
                "k": self.options.k,
                "temperature": self.options.temperature,
            },
            "options": self.options.to_dict(),
            "dataset": {k: v for k, v in self.context.to_dict().items() if k not in ("skipped", "decode_seconds")},
            "skipped": [{"file": s.file, "reason": s.reason} for s in self.context.skipped],
            "timings": self.timings,
            "screening": None if self.screening is None else self.screening.to_dict(),
        }

    def write_json(self, file: str | os.PathLike[str]) -> Path:
        """Write the report atomically (temporary name, then rename), so readers never see half a file."""
        return write_text_atomic(file, json.dumps(self.to_dict(), indent=2) + "\n")
