"""faiss k-means: the clustering baseline DESIGN §4 B compares Sinkhorn against."""

from __future__ import annotations

import faiss
import numpy as np
import torch

__all__ = ["faiss_kmeans"]


def faiss_kmeans(features: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means on `[N, D]` features; returns (centroids `[k, D]`, assignment int64 `[N]`)."""
    x = np.ascontiguousarray(features.float().cpu().numpy())
    if len(x) < k:
        raise ValueError(f"cannot run k-means with k={k} on {len(x)} points")
    kmeans = faiss.Kmeans(
        x.shape[1],
        k,
        niter=iters,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, len(x) // k + 1),
    )
    kmeans.train(x)
    _, nearest = kmeans.index.search(x, 1)
    assert kmeans.centroids is not None  # set by train()
    return torch.from_numpy(kmeans.centroids.copy()), torch.from_numpy(nearest[:, 0].astype(np.int64))
