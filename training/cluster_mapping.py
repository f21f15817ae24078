"""Which path each cluster trains: identity (default) or aligned (DESIGN §4 B, an ablation).

`aligned` orders clusters so that paths sharing a prefix hold similar clusters: the prototypes
are split into G equal groups by balanced k-means (faiss centroids, then an optimal assignment
of exactly k/G prototypes per centroid), each group takes one first-stage digit, and the split
recurses. Balanced at every level, unlike the plain recursive k-means of DESIGN §7.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from sdr_model.paths import id_to_path
from training.kmeans import faiss_kmeans

__all__ = ["cluster_paths"]


def cluster_paths(mapping: str, prototypes: torch.Tensor, num_stages: int, num_groups: int, seed: int) -> list[str]:
    """The path of each cluster: element `j` is the path cluster `j` trains.

    Args:
        mapping: "identity" (cluster j -> path id j) or "aligned".
        prototypes: `[k, D]` cluster centres, k = num_groups ** num_stages.
    """
    k = num_groups**num_stages
    if len(prototypes) != k:
        raise ValueError(f"{len(prototypes)} clusters for {k} paths")
    if mapping == "identity":
        return [id_to_path(j, num_stages, num_groups) for j in range(k)]
    if mapping == "aligned":
        order = _balanced_tree_order(torch.arange(k), prototypes, num_groups, seed)
        paths = [""] * k
        for path_id, cluster in enumerate(order.tolist()):
            paths[cluster] = id_to_path(path_id, num_stages, num_groups)
        return paths
    raise ValueError(f"unknown cluster mapping {mapping!r}; use identity, aligned or random")


def _balanced_tree_order(ids: torch.Tensor, prototypes: torch.Tensor, groups: int, seed: int) -> torch.Tensor:
    """Cluster ids in prefix-tree order: siblings are the most similar balanced groups."""
    if len(ids) == 1:
        return ids
    x = prototypes[ids]  # [m, D]
    centroids, _ = faiss_kmeans(x, groups, iters=20, seed=seed)
    slots = len(ids) // groups
    cost = -(x @ centroids.T).repeat_interleave(slots, dim=1)  # [m, m]: slot s belongs to centroid s // slots
    rows, cols = linear_sum_assignment(cost.numpy())
    group = torch.empty(len(ids), dtype=torch.long)
    group[torch.from_numpy(rows)] = torch.from_numpy(cols) // slots
    return torch.cat([_balanced_tree_order(ids[group == g], prototypes, groups, seed) for g in range(groups)])
