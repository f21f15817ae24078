"""Weighted k-nearest-neighbour classification of frozen features: the default routing scorer.

This is the protocol of the paper's §4.3 and appendix A (Wu et al. 2018) as DINO's `eval_knn.py`
implements it: features are L2-normalised, each of the k most cosine-similar bank features votes
for its class with weight `exp(similarity / T)` (T = 0.07), and the class with the largest vote
sum wins. k is capped at the bank size, so tiny datasets work; one neighbour search at the largest
k serves every k (the k nearest are a prefix of the K nearest).

Neighbours come from a faiss `IndexFlatIP` (exact inner product = cosine on unit vectors; on the GPU
with faiss-gpu), queried
in chunks so that the `[queries, k]` blocks stay small. Leave-one-out on the bank itself
(`exclude_self`) asks for one extra neighbour and drops each query's own bank entry, so a training
image never votes for itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["DEFAULT_KS", "TEMPERATURE", "KNNAccuracy", "knn_accuracy", "knn_predict", "l2_normalize", "nearest"]

TEMPERATURE = 0.07  # DINO / Wu et al.: vote weight exp(sim / T)
DEFAULT_KS = (20, 200)  # DINO reports both; the paper ranks with k = 200
_QUERY_CHUNK = 4096
_GPU_MAX_K = 2048  # faiss-gpu's limit for exact k-selection


@dataclass(frozen=True)
class KNNAccuracy:
    """kNN accuracy of one k on one set of queries."""

    k: int  # the k actually used: the requested k capped at the bank size
    top1: float  # fraction of queries whose prediction is their label
    mean_per_class: float  # mean over the classes present among the queries of their recall
    correct: np.ndarray  # bool [num_queries]: per-query outcome, for bootstrap intervals and ties


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 C-contiguous (what faiss wants)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def nearest(bank: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar bank rows of every query (inputs already L2-normalised).

    Args:
        bank: `[N, D]` float32 unit vectors.
        queries: `[Q, D]` float32 unit vectors; with `exclude_self`, must be the bank itself.
        k: neighbours per query; must not exceed the bank size (minus one with `exclude_self`).
        exclude_self: leave-one-out: query i never gets bank row i as a neighbour.

    Returns:
        similarities `[Q, k]` (descending) and bank indices `[Q, k]`.
    """
    available = len(bank) - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} needs 1 <= k <= {available} (bank of {len(bank)}, exclude_self={exclude_self})")
    index = _flat_index(bank.shape[1], k + int(exclude_self))
    index.add(bank)
    search_k = k + int(exclude_self)
    sims = np.empty((len(queries), k), dtype=np.float32)
    idx = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), _QUERY_CHUNK):
        chunk_sims, chunk_idx = index.search(queries[start : start + _QUERY_CHUNK], search_k)
        if exclude_self:
            # Drop each query's own entry (boolean compaction keeps the others in similarity order);
            # if an exact duplicate pushed it out of the list, the last neighbour is dropped instead.
            drop = chunk_idx == np.arange(start, start + len(chunk_idx))[:, None]
            drop[~drop.any(axis=1), -1] = True
            chunk_sims = chunk_sims[~drop].reshape(-1, k)
            chunk_idx = chunk_idx[~drop].reshape(-1, k)
        sims[start : start + len(chunk_idx)] = chunk_sims
        idx[start : start + len(chunk_idx)] = chunk_idx
    return sims, idx


def _flat_index(dim: int, k: int) -> faiss.Index:
    """Exact inner-product index; on a GPU when faiss was built with CUDA (the `gpu` extra) and one is visible.

    faiss-gpu's exact search handles k up to 2048; larger k stays on the CPU.
    """
    index = faiss.IndexFlatIP(dim)
    if k <= _GPU_MAX_K and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def knn_predict(
    neighbour_sims: np.ndarray, neighbour_labels: np.ndarray, num_classes: int, temperature: float = TEMPERATURE
) -> np.ndarray:
    """Weighted vote (DINO `knn_classifier`): class with the largest sum of `exp(sim / T)`.

    Args:
        neighbour_sims: `[Q, k]` cosine similarities.
        neighbour_labels: `[Q, k]` labels of those neighbours.
        num_classes: number of classes C.

    Returns:
        int64 `[Q]` predicted labels; a tie between classes goes to the lower label.
    """
    num_queries = len(neighbour_sims)
    weights = np.exp(neighbour_sims.astype(np.float64) / temperature)  # [Q, k]
    # votes[q, c] = sum of the weights of q's neighbours labelled c, as one bincount over (q, c) cells.
    cells = np.arange(num_queries)[:, None] * num_classes + neighbour_labels
    votes = np.bincount(cells.ravel(), weights=weights.ravel(), minlength=num_queries * num_classes)
    return votes.reshape(num_queries, num_classes).argmax(axis=1)


def knn_accuracy(
    bank_features: np.ndarray,
    bank_labels: np.ndarray,
    query_features: np.ndarray | None,
    query_labels: np.ndarray | None,
    num_classes: int,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = TEMPERATURE,
) -> dict[int, KNNAccuracy]:
    """kNN accuracy for every requested k, keyed by the requested k.

    Args:
        bank_features: `[N, D]` raw features of the labelled bank (normalised here).
        bank_labels: int `[N]`.
        query_features: `[Q, D]` raw features to classify, or None for leave-one-out on the bank.
        query_labels: int `[Q]`, or None for leave-one-out.
        num_classes: number of classes C (labels are in `0..C-1`).
        ks: neighbour counts; each is capped at the bank size (minus one for leave-one-out).
        temperature: T of the vote weights.

    Raises:
        ValueError: an empty query set, or a bank too small to have a single neighbour.
    """
    bank = l2_normalize(bank_features)
    leave_one_out = query_features is None
    if query_features is None:
        queries, labels = bank, bank_labels
    elif query_labels is None:
        raise ValueError("query_features need query_labels")
    else:
        queries, labels = l2_normalize(query_features), query_labels
    if len(queries) == 0:
        raise ValueError("kNN needs at least one query")
    available = len(bank) - int(leave_one_out)
    if available < 1:
        raise ValueError(f"kNN needs a bank of at least {1 + int(leave_one_out)} images, got {len(bank)}")
    effective = {k: min(k, available) for k in ks}
    sims, idx = nearest(bank, queries, max(effective.values()), exclude_self=leave_one_out)
    neighbour_labels = bank_labels[idx]
    results = {}
    for k, k_used in effective.items():
        predictions = knn_predict(sims[:, :k_used], neighbour_labels[:, :k_used], num_classes, temperature)
        correct = predictions == labels
        recalls = [correct[labels == c].mean() for c in np.unique(labels)]
        results[k] = KNNAccuracy(
            k=k_used, top1=float(correct.mean()), mean_per_class=float(np.mean(recalls)), correct=correct
        )
    return results
