"""GBC: Gaussian Bhattacharyya Coefficient transferability score.

Pándy, Agostinelli, Uijlings, Ferrari, Mensink, "Transferability Estimation using Bhattacharyya
Class Separability", CVPR 2022. Features are reduced to 64 dimensions by PCA (as in the paper),
each class is modelled as a Gaussian with diagonal covariance, and the score is minus the sum of
the Bhattacharyya coefficients BC = exp(-D_B) over all ordered pairs of distinct classes (eq. 3-5):
classes that overlap less in feature space give a higher (closer to 0) score.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gbc_score"]

PCA_DIM = 64  # the paper's setting
_VARIANCE_FLOOR = 1e-4  # keeps D_B finite for a class with one sample or a constant dimension


def gbc_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Minus the summed pairwise Bhattacharyya coefficients of per-class diagonal Gaussians.

    Args:
        features: `[N, D]` raw features.
        labels: int `[N]`, classes `0..C-1`, every class present.
    """
    x = _pca(np.asarray(features, dtype=np.float64), PCA_DIM)
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes)[:, None]
    means = np.zeros((num_classes, x.shape[1]))
    np.add.at(means, labels, x)
    means /= counts
    variances = np.zeros_like(means)
    np.add.at(variances, labels, (x - means[labels]) ** 2)
    variances = variances / counts + _VARIANCE_FLOOR  # [C, d]

    # Bhattacharyya distance of diagonal Gaussians i, j, with sigma = (sigma_i + sigma_j) / 2:
    # D_B = 1/8 sum (mu_i - mu_j)^2 / sigma + 1/2 [sum log sigma - 1/2 sum log sigma_i - 1/2 sum log sigma_j]
    # One row of class pairs at a time keeps memory at O(C d) for datasets with many classes.
    log_var = np.log(variances).sum(axis=1)  # [C]
    total = 0.0
    for i in range(num_classes):
        avg = (variances[i] + variances) / 2.0  # [C, d]
        mahalanobis = (((means[i] - means) ** 2) / avg).sum(axis=1) / 8.0
        log_term = 0.5 * (np.log(avg).sum(axis=1) - 0.5 * log_var[i] - 0.5 * log_var)
        coefficients = np.exp(-(mahalanobis + log_term))
        total += coefficients.sum() - coefficients[i]  # pairs of distinct classes only
    return float(-total)


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Project centred features onto their top `dim` principal components (fewer if N or D is smaller)."""
    centred = x - x.mean(axis=0)
    dim = min(dim, *centred.shape)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dim].T
