"""SFDA: Self-challenging Fisher Discriminant Analysis transferability score.

Shao, Zhao, Gao, Huang, Zhang, Ge, "Not All Models Are Equal: Predicting Model Transferability
in a Self-challenging Fisher Space", ECCV 2022. Two steps, following the authors' reference code:

1. Regularised FDA (eq. 3-5): within-class scatter S_w shrunk towards a scaled identity with the
   adaptive strength lambda = exp(-5 * largest eigenvalue of S_w) (power iteration, 3 steps, as in
   their code); class posteriors from the linear discriminant in the Fisher space of the
   generalised eigenproblem S_b v = mu S_w' v (see `_fda_posteriors` for why that is one solve).
2. Self-challenge (ConfMix, eq. 6): every sample is pulled towards the mean of the *other*
   classes by (1 - p(y|x)) (posteriors softened by a second softmax, as in the code), and a second
   FDA with the same lambda is fitted on the mixed features. The score is the mean posterior of the
   true class (the code drops the log "in case of instability"). Higher is better.

Cost per path: two D x D scatter matrices and Cholesky solves, about a second for 2000-d features.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import softmax

__all__ = ["sfda_score"]

_POWER_ITERATIONS = 3
_SHRINKAGE_SLOPE = 5.0  # lambda = exp(-5 * largest eigenvalue of S_w)


def sfda_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean probability of the true class under the self-challenged FDA (higher: more transferable).

    Args:
        features: `[N, D]` raw features.
        labels: int `[N]`, classes `0..C-1`, every class present.
    """
    x = np.array(features, dtype=np.float64)  # copied: ConfMix rewrites it
    num_classes = int(labels.max()) + 1
    shrinkage = _adaptive_shrinkage(_within_scatter(x, labels, num_classes))
    posteriors = softmax(_fda_posteriors(x, labels, num_classes, shrinkage), axis=1)  # softened again
    means = _class_means(x, labels, num_classes)
    other_means = (means.sum(axis=0, keepdims=True) - means) / max(num_classes - 1, 1)  # [C, D]
    confidence = posteriors[np.arange(len(labels)), labels][:, None]  # p(y|x) of the true class
    mixed = confidence * x + (1.0 - confidence) * other_means[labels]
    posteriors = _fda_posteriors(mixed, labels, num_classes, shrinkage)
    return float(posteriors[np.arange(len(labels)), labels].mean())


def _class_means(x: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    sums = np.zeros((num_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    return sums / np.bincount(labels, minlength=num_classes)[:, None]


def _within_scatter(x: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Prior-weighted sum of the per-class (biased) covariances.

    sum_c (n_c / N) * cov_c = sum_c (n_c / N) (1 / n_c) X_c^T X_c = X_centred^T X_centred / N.
    """
    centred = x - _class_means(x, labels, num_classes)[labels]
    return centred.T @ centred / len(labels)


def _adaptive_shrinkage(scatter: np.ndarray) -> float:
    x = scatter.sum(axis=1)
    y = x
    for _ in range(_POWER_ITERATIONS):
        y = scatter @ x
        y /= np.linalg.norm(y)
        x = scatter @ y
        x /= np.linalg.norm(x)
    largest_eigenvalue = float(x @ scatter @ y)
    return float(np.exp(-_SHRINKAGE_SLOPE * largest_eigenvalue))


def _fda_posteriors(x: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float) -> np.ndarray:
    """Softmax posteriors of the regularised linear discriminant (the reference `SFDA.predict_proba`).

    The reference code solves S_b E = S_w' E diag(mu) and uses coef = means E E^T with *all* D
    eigenvectors. Generalised eigenvectors are S_w'-orthonormal (E^T S_w' E = I), so E E^T is exactly
    S_w'^{-1}, and coef = means S_w'^{-1}: one Cholesky solve instead of an eigenproblem, same numbers.
    """
    d = x.shape[1]
    priors = np.bincount(labels, minlength=num_classes) / len(labels)
    means = _class_means(x, labels, num_classes)
    within = _within_scatter(x, labels, num_classes)
    shrunk_within = (1.0 - shrinkage) * within + shrinkage * np.trace(within) / d * np.eye(d)
    coef = linalg.solve(shrunk_within, means.T, assume_a="pos").T  # [C, D]
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return softmax(x @ coef.T + intercept, axis=1)
