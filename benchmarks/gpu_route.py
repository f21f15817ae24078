"""GPU: sdr_resnet50 route throughput at 224 px, and the Food-101-size route time it implies.

The paper routes Food-101 (101k images) over 256 sub-nets in 20 minutes on 8 V100s; issue 9's goal
is under 10 minutes on one H100. Measured here: the prefix-tree walk (W0 + 256 paths) on synthetic
224-px images with bf16 autocast and channels_last, in image-paths per second after a warm-up, and
one path's faiss kNN scoring at Food-101's size (75,750 train searching themselves leave-one-out,
25,250 test), on the GPU when faiss-gpu is installed (`pip install -e '.[gpu]'`). The extrapolated
route is walk + 257 x scoring; decoding (threaded, `decode_images`) is left out.

Without a GPU this section says so and measures nothing.
"""

from __future__ import annotations

import time

import faiss
import numpy as np
import torch

from benchmarks.report import Goal, Section, Table
from sdr_model import all_paths, create_model, default_preprocessing
from sdr_model.routing import prefix_tree_features
from sdr_model.routing.knn import l2_normalize, nearest

FOOD101_TRAIN, FOOD101_TEST = 75_750, 25_250
GOAL_MINUTES = 10.0
K = 200


def bench(quick: bool) -> Section:
    section = Section(
        "GPU: sdr_resnet50 at 224 px, extrapolated to Food-101",
        __name__,
        "W0 + 256 paths on synthetic 224-px images (bf16 autocast, channels_last), and one path's kNN at "
        "Food-101's size; the route time for 101k images is extrapolated from both.",
    )
    if not torch.cuda.is_available():
        section.goals.append(Goal(f"Food-101-size route under {GOAL_MINUTES:.0f} min on one H100", None))
        section.notes.append(
            "No GPU on this machine, so nothing was measured. On a GPU machine: `make bench ONLY=gpu_route` "
            "(add `pip install -e '.[gpu]'` for faiss-gpu)."
        )
        return section
    device = torch.device("cuda")
    name = "sdr_resnet50"
    model = create_model(name).eval().to(device).to(memory_format=torch.channels_last)
    preprocessing = default_preprocessing(name)
    images, batch = (128, 64) if quick else (1024, 128)
    pixels = torch.randint(0, 256, (images, 3, 224, 224), dtype=torch.uint8)
    paths = [None, *all_paths()]
    rates = {}
    for grouped in (False, True):  # `batch_siblings` is off by default; on a GPU it may pay

        def walk(x: torch.Tensor, grouped: bool = grouped) -> None:
            prefix_tree_features(
                model,
                x,
                preprocessing,
                paths,
                batch_size=batch,
                device=device,
                channels_last=True,
                batch_siblings=grouped,
            )
            torch.cuda.synchronize()

        walk(pixels[:batch])  # warm-up: cuDNN picks its algorithms
        start = time.perf_counter()
        walk(pixels)
        rates[grouped] = images * len(paths) / (time.perf_counter() - start)
    rate = max(rates.values())

    # One path's kNN at Food-101's size; without faiss-gpu at a tenth of it, scaled by the N^2 the
    # leave-one-out search costs (a full-size search on the CPU would take most of the time budget).
    on_gpu = faiss.get_num_gpus() > 0
    shrink = 1 if on_gpu else 10
    rng = np.random.default_rng(0)
    dim = model.subnet_num_features
    train = l2_normalize(rng.standard_normal((FOOD101_TRAIN // shrink, dim)).astype(np.float32))
    test = l2_normalize(rng.standard_normal((FOOD101_TEST // shrink, dim)).astype(np.float32))
    start = time.perf_counter()
    nearest(train, train, K, exclude_self=True)
    nearest(train, test, K)
    scoring = (time.perf_counter() - start) * shrink**2

    food_walk = (FOOD101_TRAIN + FOOD101_TEST) * len(paths) / rate
    food_route = food_walk + len(paths) * scoring
    table = Table(
        ["card", "image-paths / s (siblings one by one / grouped)", "walk, 101k images", "kNN per path", "route, 101k"]
    )
    table.add(
        torch.cuda.get_device_name(0),
        f"{rates[False]:,.0f} / {rates[True]:,.0f}",
        f"{food_walk / 60:.1f} min",
        f"{scoring:.2f} s ({'GPU' if on_gpu else 'CPU, measured at 1/10 of the size and scaled by 100'})",
        f"{food_route / 60:.1f} min",
    )
    section.tables.append(table)
    section.goals.append(Goal(f"Food-101-size route under {GOAL_MINUTES:.0f} min", food_route / 60 < GOAL_MINUTES))
    return section
