"""Routing throughput: shared-prefix walk against a naive per-path loop, next to the FLOP-count bound.

Part 1, for each preset: the features of W0 and all 256 paths for the same decoded images, once
by the depth-first prefix-tree walk (`prefix_tree_features`: stem once, stage 1 x4, 2 x16, 3 x64,
4 x256) and once by 257 separate `forward_features` calls per batch (the naive loop), in the same
run, batch by batch and interleaved (the machine's noise then hits both alike). The bound is the
ratio of their FLOPs, counted per stage by `torch.utils.flop_counter`:

    naive  = 256 * (stem + s1 + s2 + s3 + s4) + W0
    shared = stem + 4 s1 + 16 s2 + 64 s3 + 256 s4 + (W0 - stem)

where s_i is one sub-net's stage-i FLOPs (every path's are equal). The measured speedup divided
by the bound says how much of the saving the implementation turns into time. The same formula on
per-stage CPU seconds (measured on one batch) gives the stage-time bound, which also counts what
FLOPs miss (memory-bound BN / ReLU / pooling, a stem that runs at a low FLOP rate).

Part 2: `route()` on 2,000 64-px Fashion-MNIST test images (1,600 train / 400 test, ImageFolder of
PNGs, so decoding is timed too) with a random-init sdr_tiny checkpoint over all 256 paths + W0.
Goal (issue 5): under a minute on 2 CPU cores.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.route_throughput      # both parts, defaults
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.route_throughput --resnet50-size 224 --resnet50-images 64

OMP_WAIT_POLICY=PASSIVE: on cores shared with other busy processes, torch's OpenMP threads spinning
at barriers made a 2-thread walk 20x slower than a 1-thread one (175 s vs 9 s, load average 9 on 2
cores); passive waiting gave 12 s. On an idle machine the policy makes little difference.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from sdr_model import all_paths, create_model, default_preprocessing, save_checkpoint
from sdr_model.config import Preprocessing
from sdr_model.datasets import normalize
from sdr_model.routing import prefix_tree_features, route
from sdr_model.supernet import SDRResNet

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _flops(fn: Callable[..., object], *args: object) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(*args)
    return float(counter.get_total_flops())


def _stage_costs(model: SDRResNet, x: torch.Tensor, cost: Callable[..., float]) -> tuple[float, list[float], float]:
    """(stem, [one sub-net's stage 1..4], whole W0) costs on `x`, measured by `cost(fn, *args)`."""
    with torch.inference_mode():
        stem_out = model.forward_stem(x)
    stem = cost(model.forward_stem, x)
    path, h, stages = "0" * model.config.num_stages, stem_out, []
    for s in range(model.config.num_stages):
        stages.append(cost(model.forward_stage, h, s, path[: s + 1]))
        with torch.inference_mode():
            h = model.forward_stage(h, s, path[: s + 1])
    return stem, stages, cost(model.forward_features, x, None)


def bound(model: SDRResNet, stem: float, stages: list[float], w0: float) -> tuple[float, float, float]:
    """(naive cost, shared cost, naive / shared) from per-stage costs (FLOPs or seconds)."""
    g = model.config.num_groups
    naive = model.config.num_paths * (stem + sum(stages)) + w0
    shared = stem + sum(g ** (s + 1) * c for s, c in enumerate(stages)) + (w0 - stem)
    return naive, shared, naive / shared


def _cpu_seconds(fn: Callable[..., object], *args: object, repeats: int = 3) -> float:
    with torch.inference_mode():
        fn(*args)
        start = time.process_time()
        for _ in range(repeats):
            fn(*args)
    return (time.process_time() - start) / repeats


def naive_features(model: SDRResNet, x: torch.Tensor) -> None:
    """Every path on its own: 257 full forward passes over the mini-batch."""
    with torch.inference_mode():
        for path in [None, *all_paths()]:
            model.forward_features(x, path)


def compare(name: str, images: int, size: int, batch: int, channels_last: bool) -> dict[str, float]:
    """Shared walk and naive loop on the same mini-batches, interleaved so machine noise hits both alike."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    preprocessing = default_preprocessing(name)
    preprocessing = Preprocessing(**{**preprocessing.to_dict(), "input_size": size, "resize": size})
    pixels = torch.randint(0, 256, (images, model.config.in_chans, size, size), dtype=torch.uint8)
    naive_flops, shared_flops, flop_ratio = bound(
        model, *_stage_costs(model, normalize(pixels[:1], preprocessing), _flops)
    )
    # The same formula on measured per-stage CPU time: FLOPs miss that the stem (7x7 conv, BN, ReLU
    # and max-pool on the largest activation) runs far below the stages' FLOP rate.
    time_ratio = bound(model, *_stage_costs(model, normalize(pixels[:batch], preprocessing), _cpu_seconds))[2]
    paths = [None, *all_paths()]
    prefix_tree_features(model, pixels[:2], preprocessing, paths, batch_size=2)  # warm-up (index caches)
    # Wall time, and the process's CPU time, which machine contention distorts much less.
    shared_s = naive_s = shared_cpu = naive_cpu = 0.0
    for start in range(0, images, batch):
        chunk = pixels[start : start + batch]
        t0, c0 = time.perf_counter(), time.process_time()
        prefix_tree_features(model, chunk, preprocessing, paths, batch_size=batch, channels_last=channels_last)
        t1, c1 = time.perf_counter(), time.process_time()
        naive_features(model, normalize(chunk, preprocessing))
        shared_s, naive_s = shared_s + t1 - t0, naive_s + time.perf_counter() - t1
        shared_cpu, naive_cpu = shared_cpu + c1 - c0, naive_cpu + time.process_time() - c1
    speedup, cpu_speedup = naive_s / shared_s, naive_cpu / shared_cpu
    print(
        f"{name} at {size} px, {images} images, batch {batch}: naive {naive_s:.1f} s wall / {naive_cpu:.1f} s CPU, "
        f"shared {shared_s:.1f} s wall / {shared_cpu:.1f} s CPU ({images * 257 / shared_s:.0f} image-paths/s)\n"
        f"    speedup {speedup:.2f}x wall, {cpu_speedup:.2f}x CPU; FLOP bound {flop_ratio:.2f}x "
        f"({naive_flops / 1e9:.1f} vs {shared_flops / 1e9:.1f} GFLOP per image) -> "
        f"{100 * speedup / flop_ratio:.0f}% (wall), {100 * cpu_speedup / flop_ratio:.0f}% (CPU) of it; "
        f"stage-time bound {time_ratio:.2f}x -> {100 * cpu_speedup / time_ratio:.0f}% (CPU) of it",
        flush=True,
    )
    return {"speedup": speedup, "cpu_speedup": cpu_speedup, "flop_bound": flop_ratio, "time_bound": time_ratio}


def fashion_mnist_folder(root: Path, count: int, test_every: int = 5) -> Path:
    """The first `count` Fashion-MNIST test images as an ImageFolder of PNGs (every 5th in test/)."""
    with gzip.open(FASHION_MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:count]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / ("test" if i % test_every == 0 else "train") / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


def route_2000(batch: int) -> None:
    if not FASHION_MNIST.is_dir():
        print(f"skipping the 2,000-image route: {FASHION_MNIST} is missing (apt install dataset-fashion-mnist)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        dataset = fashion_mnist_folder(Path(tmp) / "fmnist2000", 2000)
        torch.manual_seed(0)
        checkpoint = save_checkpoint(
            Path(tmp) / "tiny.safetensors", create_model("sdr_tiny"), preprocessing=default_preprocessing("sdr_tiny")
        )
        start, cpu = time.perf_counter(), time.process_time()
        result = route(checkpoint, dataset, batch_size=batch)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
    t = result.timings
    print(
        f"sdr_tiny route, 2,000 Fashion-MNIST images (1,600 train / 400 test), 256 paths + W0, kNN LOO: "
        f"{total:.1f} s wall, {cpu:.1f} s CPU (decode {t['decode_seconds']:.1f} s, "
        f"features {t['features_seconds']:.1f} s, "
        f"scoring {t['scoring_seconds']:.1f} s); best {result.best.path} {100 * result.best.accuracy:.1f}% vs "
        f"W0 {100 * result.supernet.accuracy:.1f}% (random init)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-images", type=int, default=300)
    parser.add_argument("--resnet50-images", type=int, default=256)
    parser.add_argument("--resnet50-size", type=int, default=64, help="input side for sdr_resnet50 (paper: 224)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations in the shared walk")
    parser.add_argument("--presets", nargs="+", default=["sdr_tiny", "sdr_resnet50"], help="presets to compare")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-route", action="store_true")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average {load} on {os.cpu_count()} CPUs"
    )
    if not args.skip_compare:
        if "sdr_tiny" in args.presets:
            compare("sdr_tiny", args.tiny_images, 64, args.batch_size, args.channels_last)
        if "sdr_resnet50" in args.presets:
            compare("sdr_resnet50", args.resnet50_images, args.resnet50_size, args.batch_size, args.channels_last)
    if not args.skip_route:
        route_2000(args.batch_size)


if __name__ == "__main__":
    main()
