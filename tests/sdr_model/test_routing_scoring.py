"""`score_many`: several paths scored at once give exactly the one-by-one scores, in order, and stop cleanly."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from sdr_model.routing.options import RouteOptions
from sdr_model.routing.scoring import score_features, score_many
from sdr_model.routing.selection import make_plan


def _problem(paths: int = 12, n: int = 300, dim: int = 32) -> tuple[dict[str | None, np.ndarray], list[str | None]]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, n)
    names: list[str | None] = [None, *(f"{i:04d}" for i in range(paths - 1))]
    # Paths differ in how much of the label signal they carry, so their scores differ too.
    features = {
        p: (rng.standard_normal((n, dim)) + 0.1 * i * labels[:, None]).astype(np.float32) for i, p in enumerate(names)
    }
    return features, names


@pytest.mark.parametrize("scorer", ["knn", "logme"])
def test_parallel_scores_equal_one_by_one_in_path_order(scorer: str) -> None:
    features, paths = _problem()
    labels = np.random.default_rng(0).integers(0, 5, 300)
    plan = make_plan(labels, 5, np.arange(240), np.arange(240, 300))
    options = RouteOptions(scorer=scorer, k=20)  # type: ignore[arg-type]
    expected = [score_features(p, features[p], plan, options) for p in paths]
    threads_before = faiss.omp_get_max_threads()
    seen: list[int] = []
    got = score_many(dict(features), paths, plan, options, workers=3, on_scored=seen.append)
    assert got is not None and seen == list(range(len(paths)))
    assert [s.path for s in got] == paths
    for a, b in zip(expected, got, strict=True):
        assert a.selection_score == b.selection_score and a.test_top1 == b.test_top1
        assert np.array_equal(a.test_correct, b.test_correct)
    assert len({s.selection_score for s in got}) > 1  # the comparison could have failed
    assert faiss.omp_get_max_threads() == threads_before  # the one-thread setting was restored


def test_stop_returns_none_and_skips_the_rest() -> None:
    features, paths = _problem(paths=40)
    labels = np.random.default_rng(0).integers(0, 5, 300)
    plan = make_plan(labels, 5, np.arange(240), np.arange(240, 300))
    polls = iter(range(1000))
    remaining = dict(features)
    got = score_many(remaining, paths, plan, RouteOptions(k=20), workers=2, should_stop=lambda: next(polls) >= 3)
    assert got is None
    assert len(remaining) >= len(paths) - 3 - 2, "more than the in-flight window started after the stop"
