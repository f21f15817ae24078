"""Score one path's features: the selection evidence that ranks it and the test accuracy reported.

Selection evidence never touches the test split: kNN ranks by leave-one-out on train or by the
carved selection split (`RoutePlan`); LogME, SFDA and GBC rank by their score on the train split.
Whatever ranks, every path's reported accuracy is kNN on test with the whole train split as the bank,
so all scorers report on the same, comparable scale.

A `PathScore` is what a shard hands back for one path. It is JSON-able (per-query outcomes are
bit-packed), so a Celery worker can store it in Redis and the merge can run anywhere.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from sdr_model.routing.gbc import gbc_score
from sdr_model.routing.knn import knn_accuracy
from sdr_model.routing.logme import logme_score
from sdr_model.routing.options import RouteOptions
from sdr_model.routing.selection import RoutePlan
from sdr_model.routing.sfda import sfda_score

__all__ = ["TRANSFERABILITY_SCORES", "PathScore", "score_features", "score_many", "scoring_kernels"]

# Label-aware transferability scores on train features: higher means more transferable.
TRANSFERABILITY_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "logme": logme_score,
    "sfda": sfda_score,
    "gbc": gbc_score,
}


@dataclass(frozen=True)
class PathScore:
    """One path's (or W0's) scores on one dataset."""

    path: str | None  # None: the supernet W0
    selection_score: float  # ranks the paths (kNN top-1 on the selection queries, or LogME / SFDA / GBC)
    selection_correct: np.ndarray | None  # bool per selection query at k (kNN only): for the tie test
    test_top1: dict[int, float]  # requested k -> top-1 accuracy on test (empty while screening)
    test_mean_per_class: dict[int, float]  # requested k -> mean per-class accuracy on test
    test_correct: np.ndarray | None  # bool per test image at the ranking k: for bootstrap intervals
    seconds: float  # scoring time (features excluded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "selection_score": self.selection_score,
            "selection_correct": _pack(self.selection_correct),
            "test_top1": {str(k): v for k, v in self.test_top1.items()},
            "test_mean_per_class": {str(k): v for k, v in self.test_mean_per_class.items()},
            "test_correct": _pack(self.test_correct),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathScore:
        return cls(
            path=d["path"],
            selection_score=float(d["selection_score"]),
            selection_correct=_unpack(d["selection_correct"]),
            test_top1={int(k): float(v) for k, v in d["test_top1"].items()},
            test_mean_per_class={int(k): float(v) for k, v in d["test_mean_per_class"].items()},
            test_correct=_unpack(d["test_correct"]),
            seconds=float(d["seconds"]),
        )


def _pack(bits: np.ndarray | None) -> dict[str, Any] | None:
    if bits is None:
        return None
    return {"n": len(bits), "bits": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")}


def _unpack(packed: dict[str, Any] | None) -> np.ndarray | None:
    if packed is None:
        return None
    raw = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(raw, count=int(packed["n"])).astype(bool)


def score_features(path: str | None, features: np.ndarray, plan: RoutePlan, options: RouteOptions) -> PathScore:
    """Selection score and test accuracies of one path from its `[N, D]` features."""
    start = time.perf_counter()
    labels, classes = plan.labels, plan.num_classes
    if options.scorer == "knn":
        bank, queries = plan.selection_bank, plan.selection_queries
        if plan.selection == "loo":
            selection = knn_accuracy(
                features[bank], labels[bank], None, None, classes, [options.k], options.temperature
            )
        else:
            selection = knn_accuracy(
                features[bank],
                labels[bank],
                features[queries],
                labels[queries],
                classes,
                [options.k],
                options.temperature,
            )
        selection_score, selection_correct = selection[options.k].top1, selection[options.k].correct
    else:
        train = plan.train
        selection_score = TRANSFERABILITY_SCORES[options.scorer](features[train], labels[train])
        selection_correct = None
    top1: dict[int, float] = {}
    mean_per_class: dict[int, float] = {}
    test_correct = None
    if len(plan.test):
        train, test = plan.train, plan.test
        report = knn_accuracy(
            features[train], labels[train], features[test], labels[test], classes, options.all_ks, options.temperature
        )
        top1 = {k: r.top1 for k, r in report.items()}
        mean_per_class = {k: r.mean_per_class for k, r in report.items()}
        test_correct = report[options.k].correct
    return PathScore(
        path=path,
        selection_score=float(selection_score),
        selection_correct=selection_correct,
        test_top1=top1,
        test_mean_per_class=mean_per_class,
        test_correct=test_correct,
        seconds=time.perf_counter() - start,
    )


# faiss computes a search's inner products with one BLAS matrix product from this many queries
# on; below it, with its own loop over pairs. faiss 1.15's default (128,000 queries) keeps every
# routing search (a few thousand queries) on the loop, which took 24 ms where BLAS took 14 ms for
# 400 test queries against 1,600 train at D = 256 (equal for 1,600 leave-one-out queries, where
# the top-200 selection dominates): 14% less scoring time in a 2,000-image route, same pick.
_BLAS_FROM_QUERIES = 20


@contextmanager
def scoring_kernels() -> Iterator[None]:
    """faiss and BLAS on one thread each, faiss's inner products through BLAS; restored afterwards.

    One path's problems are small (a few thousand vectors): OpenMP / BLAS threads inside one search
    gain little, and multi-threaded OpenBLAS on cores shared with other processes (a worker beside
    the API, other workers) was measured 100x slower on 160-d features. Parallelism comes from
    scoring several paths at once instead. The settings are process-wide, so they are set once
    here around the whole pool, never per path (threads restoring each other's values would race).
    Neighbours are the same either way up to float rounding of the inner products.
    """
    faiss_threads = faiss.omp_get_max_threads()
    blas_threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.omp_set_num_threads(1)
    faiss.cvar.distance_compute_blas_threshold = _BLAS_FROM_QUERIES
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(faiss_threads)
        faiss.cvar.distance_compute_blas_threshold = blas_threshold


def score_many(
    features: dict[str | None, np.ndarray],
    paths: Sequence[str | None],
    plan: RoutePlan,
    options: RouteOptions,
    workers: int,
    on_scored: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[PathScore] | None:
    """`score_features` for every path, `workers` paths at a time; scores in `paths` order.

    Each path's features are dropped from `features` when its scoring starts. `on_scored(i)` is
    called in order from this thread. Returns None as soon as `should_stop()` (polled before each
    path's result is taken) is True; at most `workers` paths have started beyond those scored.

    Threads, not processes: faiss and numpy release the GIL in the heavy parts, and the features
    are shared without copies. The scores equal a one-by-one loop's (each path's arithmetic is the
    same single-threaded kernel whatever the interleaving).
    """
    workers = max(1, workers)
    with scoring_kernels(), ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
        # A window of `workers` paths in flight: a stop leaves at most that many started.
        window: deque[Future[PathScore]] = deque()
        started = 0
        scores: list[PathScore] = []
        for i in range(len(paths)):
            while started < len(paths) and len(window) < workers:
                path = paths[started]
                window.append(pool.submit(score_features, path, features.pop(path), plan, options))
                started += 1
            if should_stop is not None and should_stop():
                for future in window:
                    future.cancel()
                return None
            scores.append(window.popleft().result())
            if on_scored is not None:
                on_scored(i)
    return scores
