"""Merge shard results into one route report: rank, pick, intervals, ties.

Runs wherever the last shard finishes (a Celery callback, or `route` in-process). It refuses shards
that disagree on data or options, and a path scored twice, rather than silently mixing them: a
redelivered shard must be de-duplicated by the caller's idempotent store before it gets here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from sdr_model.routing.result import PathReport, RouteResult
from sdr_model.routing.scoring import PathScore
from sdr_model.routing.selection import bootstrap_ci, paired_bootstrap_ties
from sdr_model.routing.shard import ShardResult

__all__ = ["MergeError", "merge_scores"]


class MergeError(ValueError):
    """Shard results that cannot be merged into one route; the message says which and why."""


def merge_scores(shards: Sequence[ShardResult]) -> RouteResult:
    """Rank every scored path by its selection score and build the report.

    The best path is the highest selection score (ties broken by the lower path id, so the pick is
    deterministic); its test accuracy, which played no part in the choice, is the headline.

    Raises:
        MergeError: no shards, shards from different data or options, a path scored twice, no W0,
            no candidate path, or scores without test results (a screening phase's).
    """
    start = time.perf_counter()
    if not shards:
        raise MergeError("no shard results to merge")
    first = shards[0]
    for shard in shards[1:]:
        if shard.options != first.options or not shard.context.same_data(first.context):
            raise MergeError("shard results come from different datasets, splits or route options")
    scores: dict[str | None, PathScore] = {}
    for shard in shards:
        for score in shard.scores:
            if score.path in scores:
                raise MergeError(f"path {score.path or 'W0'} was scored twice; de-duplicate redelivered shards")
            scores[score.path] = score
    if None not in scores:
        raise MergeError("W0 (the supernet) was not scored; it belongs to the first shard")
    if len(scores) < 2:
        raise MergeError("no sub-net path was scored")
    if any(s.test_correct is None for s in scores.values()):
        raise MergeError("scores without test results (a screening phase's) cannot be reported")

    options = first.options
    supernet = scores.pop(None)
    ranked = sorted(scores.values(), key=lambda s: (-s.selection_score, str(s.path)))
    best = ranked[0]

    # Ties over candidates plus W0 (last row): is anything, the baseline included, as good as the best?
    tied = np.zeros(len(ranked) + 1, dtype=bool)
    ties: tuple[str, ...] | None = None
    if options.scorer == "knn":
        evidence = np.stack([_required(s.selection_correct) for s in [*ranked, supernet]])  # [P + 1, Q]
        tied = paired_bootstrap_ties(evidence, 0, options.n_boot, options.ci_level, options.seed)
        ties = tuple(str(s.path) for s, t in zip(ranked, tied[:-1], strict=True) if t)

    def report(score: PathScore, rank: int | None, is_tied: bool) -> PathReport:
        return PathReport(
            path=score.path,
            rank=rank,
            selection_score=score.selection_score,
            accuracy=score.test_top1[options.k],
            mean_class_accuracy=score.test_mean_per_class[options.k],
            knn_top1=dict(score.test_top1),
            tied=bool(is_tied),
        )

    best_correct, supernet_correct = _required(best.test_correct), _required(supernet.test_correct)
    level, n_boot, seed = options.ci_level, options.n_boot, options.seed
    return RouteResult(
        ranking=tuple(report(s, rank, t) for rank, (s, t) in enumerate(zip(ranked, tied[:-1], strict=True), 1)),
        supernet=report(supernet, None, tied[-1]),
        best_ci=bootstrap_ci(best_correct, n_boot, level, seed + 1),
        supernet_ci=bootstrap_ci(supernet_correct, n_boot, level, seed + 2),
        gain=best.test_top1[options.k] - supernet.test_top1[options.k],
        gain_ci=bootstrap_ci(best_correct.astype(np.float32) - supernet_correct, n_boot, level, seed + 3),
        ties=ties,
        options=options,
        context=first.context,
        timings={
            "decode_seconds": first.context.decode_seconds,
            "features_seconds": sum(s.features_seconds for s in shards),
            "scoring_seconds": sum(s.scoring_seconds for s in shards),
            "merge_seconds": time.perf_counter() - start,
            "shards": len(shards),
        },
    )


def _required(outcomes: np.ndarray | None) -> np.ndarray:
    if outcomes is None:  # kNN always records per-image outcomes; only a bug gets here
        raise MergeError("a kNN score lacks its per-image outcomes")
    return outcomes
