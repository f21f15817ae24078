"""Scoring one path: faiss (what routing uses) against a torch matmul + topk kNN, at routing's sizes.

One path's kNN work in a leave-one-out route: the train split searches itself for k + 1
neighbours (its own entry dropped), and the test split searches train for k. Every way runs on one
thread, as each scoring thread of a route does (`scoring_kernels`), on the same unit-normalised
random features, interleaved, and must return the same neighbours: faiss as routing runs it (inner
products through BLAS), faiss with its default settings (its own loop over pairs below 128,000
queries), and torch. "Inner products alone" is the same two BLAS matrix products without any
neighbour selection: what is left once the top-k selection is free, the floor for exact kNN.

The second table puts scoring beside the prefix-tree walk in FLOPs for a 2,000-image route
(1,600 train, 400 test): scoring costs `257 * (1600 + 400) * 1600 * D * 2`, the walk the shared
FLOPs per image of `benchmarks.route_throughput` times 2,000. It says where scoring can matter:
for sdr_tiny's cheap 64-px features, not for sdr_resnet50 at 224 px.
"""

from __future__ import annotations

import time

import faiss
import numpy as np
import torch

from benchmarks.report import Section, Table
from benchmarks.route_throughput import bound, flops, stage_costs
from sdr_model import create_model, default_preprocessing
from sdr_model.config import Preprocessing
from sdr_model.datasets import normalize
from sdr_model.routing.knn import l2_normalize, nearest
from sdr_model.routing.scoring import scoring_kernels
from sdr_model.torch_threads import torch_threads

K = 200  # the routing default
TRAIN, TEST = 1600, 400
FAISS_DEFAULT_BLAS_THRESHOLD = faiss.cvar.distance_compute_blas_threshold  # read at import, outside scoring_kernels


def torch_nearest(bank: torch.Tensor, queries: torch.Tensor, k: int, exclude_self: bool) -> torch.Tensor:
    """Indices `[Q, k]` of the k most similar bank rows (unit vectors): matrix product and top-k, in chunks.

    With `exclude_self`, `queries` is the bank and query i never gets row i. The torch side of the
    comparison here, and faiss-gpu's stand-in in `benchmarks.gpu_route` (chunked for Food-101's size).
    """
    chunk = 4096
    found = []
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ bank.T  # [q, N]
        if exclude_self:
            rows = torch.arange(len(sims), device=sims.device)
            sims[rows, rows + start] = -torch.inf
        found.append(torch.topk(sims, k, dim=1).indices)
    return torch.cat(found)


def _faiss(features: np.ndarray) -> np.ndarray:
    train, test = features[:TRAIN], features[TRAIN:]
    nearest(train, train, K, exclude_self=True)
    return nearest(train, test, K)[1]


def _torch(features: np.ndarray) -> np.ndarray:
    bank = torch.from_numpy(features[:TRAIN])
    torch_nearest(bank, bank, K, exclude_self=True)
    return torch_nearest(bank, torch.from_numpy(features[TRAIN:]), K, exclude_self=False).numpy()


def _products(features: np.ndarray) -> None:
    train = features[:TRAIN]
    train @ train.T, features[TRAIN:] @ train.T


def _faiss_default(features: np.ndarray) -> np.ndarray:
    """`_faiss` with faiss's own inner-product loop (its default threshold for BLAS, restored after)."""
    routing_threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = FAISS_DEFAULT_BLAS_THRESHOLD
    try:
        return _faiss(features)
    finally:
        faiss.cvar.distance_compute_blas_threshold = routing_threshold


def _walk_gflop_per_image(name: str, size: int) -> float:
    model = create_model(name).eval()
    p = default_preprocessing(name)
    p = Preprocessing(**{**p.to_dict(), "input_size": size, "resize": size})
    x = normalize(torch.zeros(1, model.config.in_chans, size, size, dtype=torch.uint8), p)
    return bound(model, *stage_costs(model, x, flops))[1] / 1e9


def bench(quick: bool) -> Section:
    repeats = 2 if quick else 5
    rng = np.random.default_rng(0)
    speed = Table(
        [
            "D",
            "faiss per path (routing)",
            "faiss, default settings",
            "torch matmul+topk",
            "inner products alone",
            "faiss vs torch",
            "same test neighbours",
        ]
    )
    per_path: dict[int, float] = {}
    products_per_path: dict[int, float] = {}
    ways = {"faiss": _faiss, "default": _faiss_default, "torch": _torch, "products": _products}
    with torch_threads(1), scoring_kernels():
        for dim in (256, 2048):
            features = l2_normalize(rng.standard_normal((TRAIN + TEST, dim)).astype(np.float32))
            for way in ways.values():  # warm-up
                way(features)
            seconds = dict.fromkeys(ways, 0.0)
            found: dict[str, np.ndarray] = {}
            for _ in range(repeats):
                for name, way in ways.items():
                    start = time.perf_counter()
                    out = way(features)
                    seconds[name] += (time.perf_counter() - start) / repeats
                    if out is not None:
                        found[name] = out
            pairs = zip(found["faiss"], found["torch"], strict=True)
            same = np.mean([len(np.intersect1d(a, b)) / K for a, b in pairs])
            per_path[dim] = seconds["faiss"]
            products_per_path[dim] = seconds["products"]
            faiss_s, torch_s = seconds["faiss"], seconds["torch"]
            speed.add(
                dim,
                f"{1000 * faiss_s:.0f} ms",
                f"{1000 * seconds['default']:.0f} ms",
                f"{1000 * torch_s:.0f} ms",
                f"{1000 * seconds['products']:.0f} ms",
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
            f"257 paths at D = 256 cost {257 * per_path[256]:.1f} s of one thread's faiss searches here (a "
            "route scores two paths at a time on two cores). Measured route times, with their scoring share, "
            "are in the route section above. faiss stays the search engine (exact `IndexFlatIP`, the same "
            "neighbours as the torch version; `faiss-gpu` through the `gpu` extra).",
            "Why scoring stays above 10% of an sdr_tiny route on CPU: at k = 200 out of a 1,600-image bank, "
            "the exact top-k selection costs "
            f"{(per_path[256] - products_per_path[256]) / products_per_path[256]:.1f}x the inner products "
            f"(D = 256; faiss's and torch's selection alike). On two cores, 257 paths' inner products alone "
            f"would take {257 * products_per_path[256] / 2:.1f} s and the selection adds "
            f"{257 * (per_path[256] - products_per_path[256]) / 2:.1f} s, beside the features time of the "
            "2,000-image route in the route section. For sdr_resnet50 at 224 px scoring is a small share "
            "of the FLOPs (second table).",
        ],
    )
