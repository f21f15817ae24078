"""Selection you can trust: which images choose the path, which report it, and how sure we are.

Choosing the best of 256 candidates on the split you then report inflates the reported number
(the winner's curse), so the test split never takes part in the choice (DESIGN §5):

- `loo` (default): every path is ranked by leave-one-out kNN over the whole train split (each
  training image classified by the others). DESIGN §7 measured it picking better than a held-out
  selection split at small downstream sizes, where a 20% split's noise (about ±3 points on 240
  images) exceeds the spread between paths.
- `split`: a stratified selection split (fixed seed) is carved from train; paths are ranked by kNN
  of those images against the rest of train.

The chosen path's accuracy is reported on test with the whole train split as the bank. Percentile
bootstrap intervals are given for the best path and W0, and a paired bootstrap over the selection
evidence names the paths that cannot be told apart from the best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sdr_model.datasets.labelled import stratified_split

__all__ = [
    "SELECTION_METHODS",
    "RoutePlan",
    "SelectionError",
    "bootstrap_ci",
    "make_plan",
    "paired_bootstrap_ties",
]

Selection = Literal["loo", "split"]
SELECTION_METHODS: tuple[Selection, ...] = ("loo", "split")
_BOOTSTRAP_BLOCK = 200  # resamples drawn at once: bounds the [block, N] count matrix


class SelectionError(ValueError):
    """A dataset too small or too lopsided to select and report fairly; the message says what is missing."""


@dataclass(frozen=True)
class RoutePlan:
    """Index sets over the decoded images: who chooses, who reports."""

    labels: np.ndarray  # int64 [N] class ids
    num_classes: int
    train: np.ndarray  # bank of the reported kNN accuracy; the data LogME / SFDA / GBC score
    test: np.ndarray  # the reported split; empty only while screening
    selection: Selection
    selection_bank: np.ndarray  # loo: train; split: train minus the selection split
    selection_queries: np.ndarray  # loo: train; split: the selection split


def make_plan(
    labels: np.ndarray,
    num_classes: int,
    train: np.ndarray,
    test: np.ndarray,
    selection: Selection = "loo",
    selection_fraction: float = 0.2,
    seed: int = 0,
) -> RoutePlan:
    """Build and check the plan for a dataset whose train / test split is already fixed.

    Raises:
        SelectionError: fewer than two classes or two images in train, an empty test split, a test
            class never seen in train, or (split) no image left for the selection split.
    """
    if selection not in SELECTION_METHODS:
        raise SelectionError(f"selection must be one of {list(SELECTION_METHODS)}, got {selection!r}")
    train_classes = np.unique(labels[train])
    if len(train_classes) < 2 or len(train) < 2:
        raise SelectionError(
            f"the train split needs at least 2 classes and 2 images, got {len(train_classes)} class(es) "
            f"and {len(train)} image(s)"
        )
    if len(test) == 0:
        raise SelectionError("the test split is empty: add images, or a test/ folder, to report an accuracy")
    unseen = np.setdiff1d(np.unique(labels[test]), train_classes)
    if len(unseen):
        raise SelectionError(
            f"{len(unseen)} class id(s) {unseen.tolist()} appear in test but not in train; no path can "
            "predict them (add training images for them or drop them from test)"
        )
    if selection == "loo":
        bank, queries = train, train
    else:
        kept, held = stratified_split(labels[train], selection_fraction, seed + 1)
        bank, queries = train[kept], train[held]
        if len(queries) == 0:
            raise SelectionError("no class has enough training images to carve a selection split; use selection='loo'")
    return RoutePlan(
        labels=labels,
        num_classes=num_classes,
        train=train,
        test=test,
        selection=selection,
        selection_bank=bank,
        selection_queries=queries,
    )


def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """`[n_boot, n]` multiplicities of each sample in each bootstrap resample (drawn in blocks)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, n_boot, _BOOTSTRAP_BLOCK):
        size = min(_BOOTSTRAP_BLOCK, n_boot - start)
        # Row r's draws are offset by r * n, so one bincount counts every resample of the block.
        draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        blocks.append(np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float32))
    return np.concatenate(blocks)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-sample values.

    Per-query outcomes (bool) give an accuracy's interval; the difference of two candidates'
    outcomes on the same queries gives the paired interval of their accuracy difference.
    """
    means = _resample_counts(len(values), n_boot, seed) @ values.astype(np.float32) / len(values)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap_ties(
    correct: np.ndarray, best: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> np.ndarray:
    """Which candidates are statistically tied with candidate `best`.

    Candidate j is tied when the paired bootstrap interval (at `level`, two-sided) of
    accuracy(best) - accuracy(j), resampling the same queries for every candidate, contains 0:
    the selection evidence cannot say that the best is better. No multiple-comparison correction,
    which errs towards larger tie sets, the safe side for a "these are all as good" report.

    Args:
        correct: bool `[P, Q]`: per-query outcome of every candidate on the selection queries.
        best: row of the chosen candidate.

    Returns:
        bool `[P]`; the best is tied with itself.
    """
    counts = _resample_counts(correct.shape[1], n_boot, seed)  # [B, Q]
    accuracies = counts @ correct.T.astype(np.float32) / correct.shape[1]  # [B, P]
    differences = accuracies[:, [best]] - accuracies  # [B, P]
    lower = np.quantile(differences, (1.0 - level) / 2.0, axis=0)
    return lower <= 0.0
