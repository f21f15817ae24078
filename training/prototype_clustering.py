"""Clustering by learnable prototypes against Sinkhorn targets (paper eq. 2, following SwAV).

Features F are fixed (the baseline's W0 features, L2-normalised). Prototypes C are unit vectors
trained by SGD on the cross-entropy between the Sinkhorn posterior U (computed from S = F^T C,
no gradient) and softmax(S / temperature). The final assignment follows U computed over the
whole set at once, under an exact balance constraint (`assign_balanced`): taking the argmax of
S alone lets a few prototypes absorb most images (DESIGN §7: 2 to 1,683 images per cluster with
plain k-means), and balance is what gives every sub-net data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.config import ClusterConfig
from training.sinkhorn import sinkhorn

__all__ = ["assign_balanced", "train_prototypes"]


def train_prototypes(
    features: torch.Tensor, k: int, config: ClusterConfig, generator: torch.Generator, progress: bool = False
) -> torch.Tensor:
    """Learn `k` prototypes for L2-normalised `features` `[N, D]`; returns unit-norm `[k, D]`."""
    n = len(features)
    init = features[torch.randperm(n, generator=generator)[:k]]  # k distinct samples
    if len(init) < k:
        raise ValueError(f"cannot learn {k} prototypes from {n} images: need at least one image per cluster")
    prototypes = torch.nn.Parameter(F.normalize(init.clone(), dim=1))
    optimizer = torch.optim.SGD([prototypes], lr=config.lr, momentum=0.9)
    batch = min(config.batch_size, n)
    for _ in tqdm(range(config.epochs), desc="prototypes", disable=not progress, leave=False):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):  # full batches only: Sinkhorn balances within a batch
            f = features[order[start : start + batch]]  # [B, D]
            with torch.no_grad():
                prototypes.copy_(F.normalize(prototypes, dim=1))  # SwAV keeps prototypes on the sphere
            scores = f @ prototypes.T  # [B, k]  S = F^T C
            targets = sinkhorn(scores, config.sinkhorn_eps, config.sinkhorn_iters).float()  # U, no grad
            loss = -(targets * F.log_softmax(scores / config.temperature, dim=1)).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return F.normalize(prototypes.detach(), dim=1)


def assign_balanced(features: torch.Tensor, prototypes: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Hard cluster of every feature, exactly balanced: int64 `[N]`, every cluster floor or ceil of N/k.

    The whole-set Sinkhorn posterior ranks the clusters for each image; images are then placed
    greedily, most confident first, each in its best-ranked cluster that still has room. The
    argmax of the posterior alone is balanced only when the features separate well: on the
    features of a weak baseline it gave clusters of 2 to 2,144 Fashion-MNIST images, and every
    path needs data. Memory: an `[N, k]` float64 matrix (123 MB for 60k images and k = 256).
    """
    n, k = len(features), len(prototypes)
    if n < 2 * k:
        raise ValueError(f"{n} images cannot give {k} clusters two images each")
    posterior = sinkhorn(features @ prototypes.T, eps, iters).numpy()  # [N, k]
    small, extra = divmod(n, k)  # every cluster gets `small`, `extra` of them one more
    sizes = np.zeros(k, dtype=np.int64)
    full_at = small + 1 if extra else small  # room per cluster until `extra` clusters took one more
    assignment = np.empty(n, dtype=np.int64)
    for image in np.argsort(-posterior.max(axis=1), kind="stable"):
        row = posterior[image]
        best = int(row.argmax())
        if sizes[best] >= full_at:
            best = next(int(c) for c in np.argsort(-row, kind="stable") if sizes[c] < full_at)
        assignment[image] = best
        sizes[best] += 1
        if full_at == small + 1 and sizes[best] == full_at:
            extra -= 1
            if extra == 0:
                full_at = small
    return torch.from_numpy(assignment)
