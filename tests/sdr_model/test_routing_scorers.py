"""LogME, SFDA and GBC against direct ports of their papers' reference code, plus a sanity ordering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.special import softmax

from sdr_model.routing.gbc import gbc_score
from sdr_model.routing.logme import logme_score
from sdr_model.routing.sfda import sfda_score


def _features(seed: int, n: int, d: int, classes: int = 3, signal: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, d))
    return signal * centres[labels] + rng.normal(size=(n, d)), labels


def _logme_reference(f: np.ndarray, y: np.ndarray) -> float:
    """LogME (You et al. 2021) as in the authors' code: eigendecomposition of the D x D F^T F."""
    f = f.astype(np.float64)
    fh, f = f, f.T
    d, n = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    evidences = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64)
        alpha, beta, epsilon = 1.0, 1.0, 1e-5
        lam = alpha / beta
        tmp = vh @ (f @ y_)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + epsilon)
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + epsilon)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2.0 * (beta_de + epsilon)
            - alpha / 2.0 * (alpha_de + epsilon)
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def _sfda_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SFDA (Shao et al. 2022) as in the authors' code, with the generalised eigenproblem."""

    def class_means(x: np.ndarray) -> np.ndarray:
        return np.stack([x[y == c].mean(axis=0) for c in np.unique(y)])

    def fit_predict(x: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, float]:
        classes = np.unique(y)
        priors = np.bincount(y) / len(y)
        means = class_means(x)
        sw = sum(priors[c] * np.cov(x[y == c], rowvar=False, bias=True) for c in classes)
        if shrinkage is None:
            x0 = sw.sum(axis=1)  # the authors' power iteration for the largest eigenvalue
            for _ in range(3):
                t = sw @ x0
                yv = t / np.linalg.norm(t)
                t = sw @ yv
                x0 = t / np.linalg.norm(t)
            shrinkage = float(np.exp(-5 * (x0 @ sw @ yv)))
        d = x.shape[1]
        st = np.cov(x, rowvar=False, bias=True)
        st = (1 - shrinkage) * st + shrinkage * np.trace(st) / d * np.eye(d)
        shrunk = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
        evals, evecs = linalg.eigh(st - shrunk, shrunk)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        return softmax(x @ coef.T + intercept, axis=1), shrinkage

    x = x.astype(np.float64).copy()
    prob, shrinkage = fit_predict(x, None)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = class_means(x)
    others = (means.sum(axis=0) - means) / (len(means) - 1)
    for c in np.unique(y):
        p = prob[y == c, c][:, None]
        x[y == c] = p * x[y == c] + (1 - p) * others[c]
    prob, _ = fit_predict(x, shrinkage)
    return float(prob[np.arange(len(y)), y].mean())


@pytest.mark.parametrize(("n", "d"), [(60, 10), (25, 40)])  # both branches: N >= D and N < D
def test_logme_matches_the_reference_code(n: int, d: int) -> None:
    f, y = _features(0, n, d)
    assert logme_score(f, y) == pytest.approx(_logme_reference(f, y), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(("n", "d"), [(60, 8), (30, 12)])
def test_sfda_matches_the_reference_code(n: int, d: int) -> None:
    f, y = _features(1, n, d, signal=0.7)
    f = f * 0.2  # the adaptive shrinkage exp(-5 lambda_max) only matters at small feature scales
    assert sfda_score(f, y) == pytest.approx(_sfda_reference(f, y), rel=1e-6)


def test_gbc_matches_the_pairwise_formula() -> None:
    f, y = _features(2, 45, 6)  # D < 64: PCA keeps every dimension (a rotation)
    centred = f - f.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    x = centred @ vt.T
    stats = [(x[y == c].mean(axis=0), x[y == c].var(axis=0) + 1e-4) for c in range(3)]
    expected = 0.0
    for i in range(3):
        for j in range(3):
            if i != j:
                (m1, v1), (m2, v2) = stats[i], stats[j]
                v = (v1 + v2) / 2
                distance = np.sum((m1 - m2) ** 2 / v) / 8 + 0.5 * (
                    np.sum(np.log(v)) - 0.5 * np.sum(np.log(v1)) - 0.5 * np.sum(np.log(v2))
                )
                expected -= np.exp(-distance)
    assert gbc_score(f, y) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("score", [logme_score, sfda_score, gbc_score])
def test_informative_features_score_higher_than_noise(score) -> None:
    informative, y = _features(3, 90, 20, signal=2.0)
    noise = np.random.default_rng(4).normal(size=informative.shape)
    assert score(informative, y) > score(noise, y)
