"""Sinkhorn-Knopp equipartition (Cuturi 2013), as SwAV uses it to make clustering targets.

Solves the entropic transport problem behind paper eq. 2: the posterior U that maximises
Tr(U^T S) + eps * H(U) subject to every cluster receiving an equal share of the samples.
Computed in the log domain and in float64: exp(S / eps) with eps = 0.05 overflows float32 for
cosine scores near 1 once scaled (e^20 per entry, summed over thousands of rows).
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinkhorn"]


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Balanced soft assignment of `N` samples to `K` clusters.

    Args:
        scores: `[N, K]` similarities S = F^T C (paper eq. 2).
        eps: entropic regularisation; smaller is closer to a hard assignment.
        iters: alternating normalisations (SwAV uses 3).

    Returns:
        float64 `[N, K]`, each row a distribution over clusters; column sums approach N/K.
    """
    n, k = scores.shape
    log_q = scores.double() / eps  # [N, K]
    for _ in range(iters):
        # every cluster gets total mass 1/K ...
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)
        # ... and every sample total mass 1/N
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
    return (log_q + math.log(n)).exp()  # rows sum to 1
