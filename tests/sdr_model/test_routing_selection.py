"""Selection never looks at test; intervals and ties behave; plans refuse unusable datasets clearly."""

from __future__ import annotations

import numpy as np
import pytest

from sdr_model import create_model
from sdr_model.routing.data import RouteContext
from sdr_model.routing.engine import auto_num_shards
from sdr_model.routing.merge import MergeError, merge_scores
from sdr_model.routing.options import RouteOptions
from sdr_model.routing.scoring import PathScore, score_features
from sdr_model.routing.selection import SelectionError, bootstrap_ci, make_plan, paired_bootstrap_ties
from sdr_model.routing.shard import ShardResult, plan_shards

CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, DIM = 3, 20, 10, 8


def _context(queries: int) -> RouteContext:
    return RouteContext(
        dataset="synthetic",
        classes=("a", "b", "c"),
        counts={"train": {}, "test": {}},
        test_source="given",
        selection_queries=queries,
        skipped=(),
        decode_seconds=0.0,
    )


def _leaky_features() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str | None, np.ndarray]]:
    """Path 0000 separates train classes perfectly but fails on test; 0001 the other way round."""
    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.arange(CLASSES), TRAIN_PER_CLASS)
    test_labels = np.repeat(np.arange(CLASSES), TEST_PER_CLASS)
    labels = np.concatenate([train_labels, test_labels])
    train = np.arange(len(train_labels))
    test = np.arange(len(train_labels), len(labels))

    def clustered(centres: np.ndarray, lab: np.ndarray, noise: float) -> np.ndarray:
        return centres[lab] + noise * rng.normal(size=(len(lab), DIM))

    features: dict[str | None, np.ndarray] = {}
    centres = rng.normal(size=(CLASSES, DIM)) * 3
    features["0000"] = np.concatenate([clustered(centres, train_labels, 0.1), rng.normal(size=(len(test), DIM))])
    centres = rng.normal(size=(CLASSES, DIM)) * 3
    features["0001"] = np.concatenate([clustered(centres, train_labels, 3.0), clustered(centres, test_labels, 0.1)])
    centres = rng.normal(size=(CLASSES, DIM)) * 3
    features[None] = clustered(centres, labels, 2.0)
    return labels, train, test, features


@pytest.mark.parametrize("selection", ["loo", "split"])
def test_a_test_split_that_would_flip_the_pick_does_not_leak_into_selection(selection: str) -> None:
    labels, train, test, features = _leaky_features()
    options = RouteOptions(selection=selection, k=5, ks=(5,), n_boot=200)
    plan = make_plan(labels, CLASSES, train, test, options.selection, options.selection_fraction, options.seed)
    assert not set(plan.selection_bank) & set(test) and not set(plan.selection_queries) & set(test)
    scores = tuple(score_features(p, f, plan, options) for p, f in features.items())
    result = merge_scores([ShardResult(scores, _context(len(plan.selection_queries)), options, 0.0, 0.0)])

    by_path = {p.path: p for p in result.ranking}
    # The premise: picked by test accuracy, 0001 would win by a mile...
    assert by_path["0001"].accuracy > by_path["0000"].accuracy + 0.3
    # ...but selection only saw train, where 0000 is better, and the report says so honestly.
    assert result.best.path == "0000"
    assert result.best.accuracy == by_path["0000"].accuracy < 0.6
    assert result.to_dict()["best"]["path"] == "0000"


def test_selection_scores_do_not_depend_on_test_labels_or_features() -> None:
    labels, train, test, features = _leaky_features()
    options = RouteOptions(k=5, ks=(5,))
    plan = make_plan(labels, CLASSES, train, test)
    shuffled_labels = labels.copy()
    shuffled_labels[test] = np.random.default_rng(1).permutation(labels[test])
    other_plan = make_plan(shuffled_labels, CLASSES, train, test)
    for path, f in features.items():
        scrambled = f.copy()
        scrambled[test] = np.random.default_rng(2).normal(size=(len(test), DIM))
        a, b = score_features(path, f, plan, options), score_features(path, scrambled, other_plan, options)
        assert a.selection_score == b.selection_score
        assert a.selection_correct is not None and b.selection_correct is not None
        assert np.array_equal(a.selection_correct, b.selection_correct)


def test_bootstrap_interval_width_and_degenerate_cases() -> None:
    assert bootstrap_ci(np.ones(50, dtype=bool)) == (1.0, 1.0)
    coin = np.arange(1000) % 2 == 0
    low, high = bootstrap_ci(coin, n_boot=2000, seed=1)
    # Normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 1000) = 0.5 +- 0.031.
    assert low == pytest.approx(0.469, abs=0.006) and high == pytest.approx(0.531, abs=0.006)
    assert bootstrap_ci(coin, seed=5) == bootstrap_ci(coin, seed=5)


def test_ties_are_paired_and_separate_clear_losers() -> None:
    rng = np.random.default_rng(0)
    best = rng.random(400) < 0.8
    same_but_one = best.copy()
    same_but_one[0] = not same_but_one[0]  # one query differs: indistinguishable
    independent_equal_rate = rng.random(400) < 0.78  # similar accuracy, different queries: still tied
    clearly_worse = rng.random(400) < 0.6
    tied = paired_bootstrap_ties(np.stack([best, same_but_one, independent_equal_rate, clearly_worse]), 0)
    assert tied.tolist() == [True, True, True, False]


def test_plan_refuses_unusable_datasets_with_a_reason() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(SelectionError, match="appear in test but not in train"):
        make_plan(labels, 3, np.array([0, 1, 2, 3]), np.array([4]))
    with pytest.raises(SelectionError, match="at least 2 classes"):
        make_plan(labels, 3, np.array([0, 1]), np.array([2]))
    with pytest.raises(SelectionError, match="test split is empty"):
        make_plan(labels, 3, np.array([0, 1, 2, 3, 4]), np.array([], dtype=np.int64))
    with pytest.raises(SelectionError, match="use selection='loo'"):
        make_plan(labels, 3, np.array([0, 2, 4]), np.array([1]), selection="split")
    # A class only in train is fine (it can still be predicted, and mislead, on test).
    plan = make_plan(labels, 3, np.array([0, 1, 2, 4]), np.array([3]))
    assert plan.selection_queries.tolist() == [0, 1, 2, 4]


def test_merge_refuses_duplicates_missing_w0_and_mismatched_shards() -> None:
    labels, train, test, features = _leaky_features()
    options = RouteOptions(k=5, ks=(5,), n_boot=50)
    plan = make_plan(labels, CLASSES, train, test)
    scores = {p: score_features(p, f, plan, options) for p, f in features.items()}
    context = _context(len(train))

    def shard(*paths: str | None, opts: RouteOptions = options) -> ShardResult:
        return ShardResult(tuple(scores[p] for p in paths), context, opts, 0.0, 0.0)

    with pytest.raises(MergeError, match="scored twice"):
        merge_scores([shard(None, "0000"), shard("0000", "0001")])
    with pytest.raises(MergeError, match="W0"):
        merge_scores([shard("0000", "0001")])
    with pytest.raises(MergeError, match="different"):
        merge_scores([shard(None, "0000"), shard("0001", opts=RouteOptions(k=6, ks=(5,)))])
    split = merge_scores([shard(None, "0000"), shard("0001")]).to_dict()
    whole = merge_scores([shard("0001", None, "0000")]).to_dict()
    assert {k: v for k, v in split.items() if k != "timings"} == {k: v for k, v in whole.items() if k != "timings"}


def test_path_score_round_trips_through_json() -> None:
    score = PathScore(
        path="0123",
        selection_score=0.5,
        selection_correct=np.array([True, False, True]),
        test_top1={20: 0.25},
        test_mean_per_class={20: 0.3},
        test_correct=np.zeros(9, dtype=bool),
        seconds=1.5,
    )
    again = PathScore.from_dict(score.to_dict())
    assert again.selection_correct is not None and again.test_correct is not None
    assert np.array_equal(again.selection_correct, score.selection_correct)
    assert np.array_equal(again.test_correct, score.test_correct) and again.test_top1 == {20: 0.25}


def test_plan_shards_are_prefix_subtrees_with_w0_first() -> None:
    shards = plan_shards(4)
    assert shards[0][0] is None and [len(s) for s in shards] == [65, 64, 64, 64]
    assert all({str(p)[0] for p in s if p is not None} == {str(i)} for i, s in enumerate(shards))
    assert sum(len(s) for s in plan_shards(7)) == 257
    with pytest.raises(ValueError):
        plan_shards(0)


def test_auto_num_shards_bounds_feature_memory_with_prefix_subtrees() -> None:
    tiny = create_model("sdr_tiny")  # 160-d sub-net features
    assert auto_num_shards(tiny, 2000) == 1  # 257 x 2000 x 160 x 4 B = 0.3 GB fits in 1 GiB
    assert auto_num_shards(tiny, 2000, budget=100 << 20) == 4  # a power of G: whole subtrees
    assert auto_num_shards(tiny, 10**7) == 256  # never more shards than paths
