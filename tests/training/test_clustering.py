"""Sinkhorn-Knopp, prototype clustering (eq. 2), faiss k-means, the cluster -> path mappings, the artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score

from sdr_model.paths import all_paths
from training.cluster_mapping import cluster_paths
from training.clusters import Clusters
from training.config import ClusterConfig
from training.kmeans import faiss_kmeans
from training.prototype_clustering import assign_balanced, train_prototypes
from training.sinkhorn import sinkhorn

CONFIG = ClusterConfig(epochs=30, batch_size=1024)


def planted(k: int, per_cluster: int, dim: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`k` equal Gaussian clusters on the unit sphere: (L2-normalised features, labels)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    labels = torch.arange(k).repeat_interleave(per_cluster)
    x = centres[labels] + noise * torch.randn(k * per_cluster, dim, generator=g)
    return F.normalize(x, dim=1), labels


def test_sinkhorn_rows_are_distributions_and_columns_balanced() -> None:
    scores = 0.3 * torch.randn(600, 6, generator=torch.Generator().manual_seed(0))  # cosine-like range
    q = sinkhorn(scores, eps=0.05, iters=30)
    assert q.dtype == torch.float64
    torch.testing.assert_close(q.sum(dim=1), torch.ones(600, dtype=torch.float64))
    assert torch.allclose(q.sum(dim=0), torch.full((6,), 100.0, dtype=torch.float64), rtol=0.05)


def test_sinkhorn_is_stable_where_a_naive_exp_overflows() -> None:
    scores = torch.tensor([[50.0, -50.0], [45.0, 50.0], [-50.0, 50.0]])  # exp(50 / 0.05) = inf in float64 too
    assert torch.isinf(torch.exp(scores.double() / 0.05)).any()
    q = sinkhorn(scores, eps=0.05, iters=3)
    assert torch.isfinite(q).all()
    assert q.argmax(dim=1).tolist() == [0, 1, 1]


def test_sinkhorn_assignment_is_balanced_where_kmeans_is_not() -> None:
    """Overlapping but equal planted clusters: every Sinkhorn cluster within ±10% of N/k."""
    k, per = 32, 100
    x, _ = planted(k, per, dim=32, noise=0.3)
    g = torch.Generator().manual_seed(0)
    prototypes = train_prototypes(x, k, ClusterConfig(epochs=20, batch_size=1600), g)
    sizes = torch.bincount(assign_balanced(x, prototypes, eps=0.02, iters=50), minlength=k)
    assert sizes.min() >= 0.9 * per and sizes.max() <= 1.1 * per, sizes.tolist()
    kmeans_sizes = torch.bincount(faiss_kmeans(x, k, iters=50, seed=0)[1], minlength=k)
    assert kmeans_sizes.min() < 0.9 * per or kmeans_sizes.max() > 1.1 * per  # the data makes balance non-trivial


@pytest.mark.parametrize("method", ["sinkhorn", "kmeans"])
def test_clustering_recovers_planted_clusters(method: str) -> None:
    k, per = 16, 150
    x, labels = planted(k, per, dim=32, noise=0.2, seed=1)
    if method == "sinkhorn":
        g = torch.Generator().manual_seed(0)
        assignment = assign_balanced(x, train_prototypes(x, k, CONFIG, g), CONFIG.assign_eps, CONFIG.assign_iters)
    else:
        assignment = faiss_kmeans(x, k, iters=50, seed=0)[1]
    assert normalized_mutual_info_score(labels.numpy(), assignment.numpy()) > 0.9


def test_identity_mapping_is_path_id_order() -> None:
    assert cluster_paths("identity", torch.randn(256, 8), 4, 4, seed=0) == all_paths()


def test_aligned_mapping_is_a_bijection_grouping_similar_prototypes() -> None:
    # 4 well-separated super-clusters of 64 prototypes each: siblings under one first digit must
    # come from one super-cluster.
    g = torch.Generator().manual_seed(0)
    super_centres = torch.eye(16)[:4]  # orthogonal
    noise = 0.15 * torch.randn(256, 16, generator=g)
    prototypes = F.normalize(super_centres.repeat_interleave(64, dim=0) + noise, dim=1)
    paths = cluster_paths("aligned", prototypes, 4, 4, seed=0)
    assert sorted(paths) == all_paths()
    first_digit = torch.tensor([int(p[0]) for p in paths])
    for s in range(4):
        assert first_digit[s * 64 : (s + 1) * 64].unique().numel() == 1


def test_clusters_artifact_round_trips_without_pickle(tmp_path: Path) -> None:
    path_ids = torch.tensor([0, 5, -1, 255, 5])
    report = {"method": "sinkhorn", "mapping": "identity", "num_paths": 256, "num_stages": 4, "num_groups": 4}
    Clusters(path_ids, torch.randn(256, 8), report).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clusters.json", "clusters.safetensors"]
    loaded = Clusters.load(tmp_path)
    assert loaded.members("0011").tolist() == [1, 4]
    assert loaded.readable().tolist() == [0, 1, 3, 4]
    sizes = loaded.sizes()
    assert len(sizes) == 256 and sizes["0000"] == 1 and sizes["0011"] == 2 and sizes["3333"] == 1


@pytest.mark.parametrize("n", [64, 70, 95])
def test_assignment_is_exactly_balanced_even_on_featureless_data(n: int) -> None:
    # n images for 32 clusters, all nearly identical: the argmax alone piles them up.
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.ones(n, 8) + 0.01 * torch.randn(n, 8, generator=g), dim=1)
    prototypes = F.normalize(torch.randn(32, 8, generator=g), dim=1)
    assert torch.bincount(sinkhorn(x @ prototypes.T, 0.02, 50).argmax(dim=1), minlength=32).min() == 0
    sizes = torch.bincount(assign_balanced(x, prototypes, eps=0.02, iters=50), minlength=32)
    assert sizes.sum() == n and sizes.min() == n // 32 and sizes.max() == -(-n // 32)
