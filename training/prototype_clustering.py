"""Clustering by learnable prototypes against Sinkhorn targets (paper eq. 2, following SwAV).

Features F are fixed (the baseline's W0 features, L2-normalised). Prototypes C are unit vectors
trained by SGD on the cross-entropy between the Sinkhorn posterior U (computed from S = F^T C,
no gradient) and softmax(S / temperature). The final assignment is the argmax of U computed
over the whole set at once, with a smaller epsilon and more iterations than the training
targets so that the argmax of the soft posterior stays balanced. Taking the argmax of S alone
lets a few prototypes absorb most images (DESIGN §7: 2 to 1,683 images per cluster with plain
k-means), and balance is what gives every sub-net data.
"""

from __future__ import annotations

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


def assign_balanced(
    features: torch.Tensor, prototypes: torch.Tensor, eps: float, iters: int, min_size: int = 2
) -> torch.Tensor:
    """Hard cluster of every feature: argmax of the whole-set Sinkhorn posterior; int64 `[N]`.

    Every path must get data, and BatchNorm needs two samples, so a cluster the argmax leaves
    with fewer than `min_size` images (possible only when N is within a small factor of k) takes
    images from clusters above `min_size`: each time the one whose posterior prefers it most.
    Memory: an `[N, k]` float64 matrix (123 MB for 60k images and k = 256).
    """
    k = len(prototypes)
    if len(features) < min_size * k:
        raise ValueError(f"{len(features)} images cannot give {k} clusters {min_size} images each")
    posterior = sinkhorn(features @ prototypes.T, eps, iters)  # [N, k]
    assignment = posterior.argmax(dim=1)
    sizes = torch.bincount(assignment, minlength=k)
    while bool((sizes < min_size).any()):
        cluster = int(sizes.argmin())
        movable = sizes[assignment] > min_size  # [N] images whose cluster can spare one
        image = int(torch.where(movable, posterior[:, cluster], -1.0).argmax())
        sizes[assignment[image]] -= 1
        sizes[cluster] += 1
        assignment[image] = cluster
    return assignment
