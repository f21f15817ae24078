"""Weighted kNN against an independent implementation (scikit-learn) with the same neighbour weights."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from sdr_model.routing.knn import TEMPERATURE, knn_accuracy, knn_predict, nearest


def _reference(k: int) -> KNeighborsClassifier:
    # Cosine distance d = 1 - sim, so exp((1 - d) / T) is the DINO vote weight exp(sim / T).
    return KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1.0 - d) / TEMPERATURE)
    )


def _data(seed: int, n_bank: int = 60, n_query: int = 40, dim: int = 16, classes: int = 4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    bank_labels = rng.integers(0, classes, n_bank)
    query_labels = rng.integers(0, classes, n_query)
    bank = centres[bank_labels] + 1.5 * rng.normal(size=(n_bank, dim))
    queries = centres[query_labels] + 1.5 * rng.normal(size=(n_query, dim))
    return bank * rng.uniform(0.5, 3, (n_bank, 1)), bank_labels, queries, query_labels  # scale must not matter


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_matches_sklearn_for_several_k_including_more_than_the_bank(seed: int) -> None:
    bank, bank_labels, queries, query_labels = _data(seed)
    ks = [1, 5, 20, 59, 60, 200]  # 200 > bank size 60: capped
    ours = knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=4, ks=ks)
    for k in ks:
        reference = _reference(min(k, len(bank))).fit(bank, bank_labels).predict(queries)
        assert ours[k].k == min(k, len(bank))
        assert np.array_equal(ours[k].correct, reference == query_labels), f"k={k}"
        assert ours[k].top1 == pytest.approx(np.mean(reference == query_labels))
        recalls = [np.mean(reference[query_labels == c] == c) for c in np.unique(query_labels)]
        assert ours[k].mean_per_class == pytest.approx(np.mean(recalls))
    assert len({ours[k].top1 for k in ks}) > 1, "different k should give different answers on this data"


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_matches_sklearn_without_self_matches(seed: int) -> None:
    bank, labels, _, _ = _data(seed, n_bank=50)
    ours = knn_accuracy(bank, labels, None, None, num_classes=4, ks=[1, 10, 49, 200])
    for k in (1, 10, 49, 200):
        # sklearn's predict(None) classifies every training point without itself as a neighbour.
        reference = _reference(min(k, len(bank) - 1)).fit(bank, labels).predict(None)
        assert ours[k].k == min(k, len(bank) - 1)
        assert np.array_equal(ours[k].correct, reference == labels), f"k={k}"


def test_leave_one_out_removes_self_even_with_exact_duplicates() -> None:
    bank = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    sims, idx = nearest(bank, bank, k=3, exclude_self=True)
    assert all(i not in row for i, row in enumerate(idx))
    # A duplicate's twin is the other duplicate, at similarity 1.
    assert idx[0, 0] == 1 and idx[1, 0] == 0 and sims[0, 0] == pytest.approx(1.0)


def test_tiny_banks_work_and_empty_ones_fail_clearly() -> None:
    bank, labels = np.array([[1.0, 0.2], [0.1, 1.0]]), np.array([0, 1])
    result = knn_accuracy(bank, labels, np.array([[0.9, 0.1]]), np.array([0]), num_classes=2, ks=[20, 200])
    assert result[20].k == 2 and result[20].top1 == 1.0
    assert knn_accuracy(bank, labels, None, None, num_classes=2, ks=[200])[200].k == 1
    with pytest.raises(ValueError, match="bank of at least 2"):
        knn_accuracy(bank[:1], labels[:1], None, None, num_classes=2)


def test_vote_sums_weights_per_class_and_breaks_ties_low() -> None:
    sims = np.array([[0.9, 0.5, 0.5], [0.5, 0.5, 0.0]])
    labels = np.array([[0, 1, 1], [1, 0, 2]])
    # Row 0: class 0 gets e^(0.9/T) = 3.8e5 > class 1's 2 e^(0.5/T) = 2.5e3. Row 1: exact tie of 0 and 1.
    assert knn_predict(sims, labels, num_classes=3).tolist() == [0, 0]


def test_chunked_search_equals_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, labels, queries, query_labels = _data(4, n_bank=80, n_query=33)
    whole = knn_accuracy(bank, labels, queries, query_labels, 4, ks=[7])
    loo_whole = knn_accuracy(bank, labels, None, None, 4, ks=[7])
    monkeypatch.setattr("sdr_model.routing.knn._QUERY_CHUNK", 5)  # self-exclusion offsets must follow chunks
    chunked = knn_accuracy(bank, labels, queries, query_labels, 4, ks=[7])
    loo_chunked = knn_accuracy(bank, labels, None, None, 4, ks=[7])
    assert np.array_equal(whole[7].correct, chunked[7].correct)
    assert np.array_equal(loo_whole[7].correct, loo_chunked[7].correct)
