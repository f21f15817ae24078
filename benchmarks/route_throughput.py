"""Routing throughput: shared-prefix walk against a naive per-path loop, next to the FLOP-count bound.

Part 1, for each preset: the features of W0 and all 256 paths for the same decoded images, once
by the depth-first prefix-tree walk (`prefix_tree_features`: stem once, stage 1 x4, 2 x16, 3 x64,
4 x256) and once by 257 separate `forward_features` calls per batch (the naive loop), in the same
run. The bound is the ratio of their FLOPs, counted per stage by `torch.utils.flop_counter`:

    naive  = 256 * (stem + s1 + s2 + s3 + s4) + W0
    shared = stem + 4 s1 + 16 s2 + 64 s3 + 256 s4 + (W0 - stem)

where s_i is one sub-net's stage-i FLOPs (every path's are equal). The measured speedup divided
by the bound says how much of the saving the implementation turns into time.

Part 2: `route()` on 2,000 64-px Fashion-MNIST test images (1,600 train / 400 test, ImageFolder of
PNGs, so decoding is timed too) with a random-init sdr_tiny checkpoint over all 256 paths + W0.
Goal (issue 5): under a minute on 2 CPU cores.

    .venv/bin/python -m benchmarks.route_throughput                      # both parts, defaults
    .venv/bin/python -m benchmarks.route_throughput --resnet50-size 224 --resnet50-images 64
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
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


def _flops(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(*args)
    return int(counter.get_total_flops())


def flop_bound(model: SDRResNet, x: torch.Tensor) -> tuple[float, float, float]:
    """(naive FLOPs, shared FLOPs, bound) for W0 + all paths on input `x`."""
    stem_out = model.forward_stem(x)
    stem = _flops(model.forward_stem, x)
    path, h, stages = "0" * model.config.num_stages, stem_out, []
    for s in range(model.config.num_stages):
        stages.append(_flops(model.forward_stage, h, s, path[: s + 1]))
        h = model.forward_stage(h, s, path[: s + 1])
    w0 = _flops(model.forward_features, x, None)
    g = model.config.num_groups
    naive = model.config.num_paths * (stem + sum(stages)) + w0
    shared = stem + sum(g ** (s + 1) * f for s, f in enumerate(stages)) + (w0 - stem)
    return naive, shared, naive / shared


def naive_features(model: SDRResNet, pixels: torch.Tensor, preprocessing: Preprocessing, batch: int) -> None:
    """Every path on its own: 257 full forward passes per mini-batch."""
    paths = [None, *all_paths()]
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            x = normalize(pixels[start : start + batch], preprocessing)
            for path in paths:
                model.forward_features(x, path)


def compare(name: str, images: int, size: int, batch: int, channels_last: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    preprocessing = default_preprocessing(name)
    preprocessing = Preprocessing(**{**preprocessing.to_dict(), "input_size": size, "resize": size})
    pixels = torch.randint(0, 256, (images, model.config.in_chans, size, size), dtype=torch.uint8)
    naive_flops, shared_flops, bound = flop_bound(model, normalize(pixels[:1], preprocessing))
    paths = [None, *all_paths()]
    prefix_tree_features(model, pixels[:batch], preprocessing, paths, batch_size=batch)  # warm-up
    start = time.perf_counter()
    prefix_tree_features(model, pixels, preprocessing, paths, batch_size=batch, channels_last=channels_last)
    shared_s = time.perf_counter() - start
    start = time.perf_counter()
    naive_features(model, pixels, preprocessing, batch)
    naive_s = time.perf_counter() - start
    speedup = naive_s / shared_s
    print(
        f"{name:>13} {size:>4}px {images:>5} img | naive {naive_s:8.1f} s  shared {shared_s:7.1f} s "
        f"({images * 257 / shared_s:7.0f} image-paths/s) | speedup {speedup:4.2f}x  bound {bound:4.2f}x  "
        f"= {100 * speedup / bound:3.0f}% of bound | GFLOP/img naive {naive_flops / 1e9:7.1f} shared "
        f"{shared_flops / 1e9:6.1f}",
        flush=True,
    )
    return {"naive_s": naive_s, "shared_s": shared_s, "speedup": speedup, "bound": bound}


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
        start = time.perf_counter()
        result = route(checkpoint, dataset, batch_size=batch)
        total = time.perf_counter() - start
    t = result.timings
    print(
        f"sdr_tiny route, 2,000 Fashion-MNIST images (1,600 train / 400 test), 256 paths + W0, kNN LOO: "
        f"{total:.1f} s total (decode {t['decode_seconds']:.1f} s, features {t['features_seconds']:.1f} s, "
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
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-route", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_compare:
        compare("sdr_tiny", args.tiny_images, 64, args.batch_size, args.channels_last)
        compare("sdr_resnet50", args.resnet50_images, args.resnet50_size, args.batch_size, args.channels_last)
    if not args.skip_route:
        route_2000(args.batch_size)


if __name__ == "__main__":
    main()
