"""Scoring one path: faiss (what routing uses) against a torch matmul + topk kNN, at routing's sizes.

One path's kNN work in a leave-one-out route: the train split searches itself for k + 1
neighbours (its own entry dropped), and the test split searches train for k. Both ways run on the
same unit-normalised random features, interleaved, and must return the same neighbours.

The second table puts scoring beside the prefix-tree walk in FLOPs for a 2,000-image route
(1,600 train, 400 test): scoring costs `257 * (1600 + 400) * 1600 * D * 2`, the walk the shared
FLOPs per image of `benchmarks.route_throughput` times 2,000. It says where scoring can matter:
for sdr_tiny's cheap 64-px features, not for sdr_resnet50 at 224 px.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.report import Section, Table
from benchmarks.route_throughput import bound, flops, stage_costs
from sdr_model import create_model, default_preprocessing
from sdr_model.config import Preprocessing
from sdr_model.datasets import normalize
from sdr_model.routing.knn import l2_normalize, nearest

K = 200  # the routing default
TRAIN, TEST = 1600, 400


def _torch_nearest(bank: torch.Tensor, queries: torch.Tensor, k: int, exclude_self: bool) -> torch.Tensor:
    sims = queries @ bank.T  # [Q, N]
    if exclude_self:
        sims.fill_diagonal_(-float("inf"))
    return torch.topk(sims, k, dim=1).indices


def _one_path(features: np.ndarray, use_faiss: bool) -> tuple[float, np.ndarray]:
    """Seconds for one path's leave-one-out + test searches, and the test neighbours."""
    train, test = features[:TRAIN], features[TRAIN:]
    start = time.perf_counter()
    if use_faiss:
        nearest(train, train, K, exclude_self=True)
        _, idx = nearest(train, test, K)
    else:
        bank = torch.from_numpy(train)
        _torch_nearest(bank, bank, K, exclude_self=True)
        idx = _torch_nearest(bank, torch.from_numpy(test), K, exclude_self=False).numpy()
    return time.perf_counter() - start, idx


def _walk_gflop_per_image(name: str, size: int) -> float:
    model = create_model(name).eval()
    p = default_preprocessing(name)
    p = Preprocessing(**{**p.to_dict(), "input_size": size, "resize": size})
    x = normalize(torch.zeros(1, model.config.in_chans, size, size, dtype=torch.uint8), p)
    return bound(model, *stage_costs(model, x, flops))[1] / 1e9


def bench(quick: bool) -> Section:
    repeats = 2 if quick else 5
    rng = np.random.default_rng(0)
    speed = Table(["D", "faiss per path", "torch matmul+topk per path", "faiss vs torch", "same test neighbours"])
    per_path: dict[int, float] = {}
    for dim in (256, 2048):
        features = l2_normalize(rng.standard_normal((TRAIN + TEST, dim)).astype(np.float32))
        _one_path(features, True), _one_path(features, False)  # warm-up
        faiss_s = torch_s = 0.0
        for _ in range(repeats):
            t, faiss_idx = _one_path(features, True)
            faiss_s += t
            t, torch_idx = _one_path(features, False)
            torch_s += t
        same = np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(faiss_idx, torch_idx, strict=True)])
        per_path[dim] = faiss_s / repeats
        speed.add(
            dim,
            f"{1000 * faiss_s / repeats:.0f} ms",
            f"{1000 * torch_s / repeats:.0f} ms",
            f"{torch_s / faiss_s:.2f}x faster" if faiss_s < torch_s else f"{faiss_s / torch_s:.2f}x slower",
            f"{100 * same:.1f}%",
        )
    share = Table(["preset", "input", "D", "walk GFLOP (2,000 images)", "scoring GFLOP (257 paths)", "scoring share"])
    for name, size, dim in (("sdr_tiny", 64, 256), ("sdr_resnet50", 224, 2048)):
        walk = _walk_gflop_per_image(name, size) * (TRAIN + TEST)
        scoring = 257 * (TRAIN + TEST) * TRAIN * dim * 2 / 1e9
        share.add(
            name, f"{size} px", dim, f"{walk:,.0f}", f"{scoring:,.0f}", f"{100 * scoring / (walk + scoring):.1f}%"
        )
    return Section(
        "Scoring: faiss vs torch kNN, and scoring's share of a route",
        __name__,
        f"One path's kNN searches at routing's sizes ({TRAIN} train searching itself leave-one-out and "
        f"{TEST} test searching train, k = {K}, random unit features, {repeats} repeats interleaved), "
        "then scoring beside the walk in FLOPs for a 2,000-image route.",
        tables=[speed, share],
        notes=[
            f"257 paths at D = 256 cost {257 * per_path[256]:.1f} s of faiss searches here. Measured "
            "route times, with their scoring share, are in the route section above. faiss stays the "
            "search engine (exact `IndexFlatIP`, the same neighbours as the torch version; "
            "`faiss-gpu` through the `gpu` extra)."
        ],
    )
