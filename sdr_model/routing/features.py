"""Shared-prefix evaluation: features of many paths from one depth-first walk of the prefix tree.

Paths that share their first s digits share the computation of their first s stages (a stage-s
activation depends only on `path[:s]`; BN statistics are kept per prefix for exactly this reason,
see docs/ARCHITECTURE.md). So per mini-batch: the stem once, stage 1 for each of the 4 prefixes,
stage 2 for 16, stage 3 for 64, stage 4 for 256, and W0 from the same stem output. Against 256
separate forward passes this saves the repeated stem and early stages, which is where a ResNet at
high resolution spends much of its compute (benchmarks/route_throughput.py measures it).

The walk is depth-first, so at most one activation per stage is alive at a time: memory is bounded
per mini-batch, whatever the number of paths. Only the pooled `[N, D]` features are kept.

On CPU, mini-batches are walked side by side, one per core, each on one torch thread (`workers`):
sdr_tiny's convolutions are too small for torch's intra-op threads to keep two cores busy (a
walk on two threads used 1.3 cores), and one batch per thread made the walk 1.7-2.6x faster with
the same features, bit for bit (the batches, and so every convolution's shapes, are the same).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from sdr_model.config import Preprocessing
from sdr_model.datasets.images import normalize
from sdr_model.paths import parse_path
from sdr_model.supernet import SDRResNet
from sdr_model.torch_threads import torch_threads

__all__ = ["BatchCallback", "CancelCheck", "RouteCancelled", "prefix_tree_features"]

BatchCallback = Callable[[int, int], None]  # (batches done, batches in all)
CancelCheck = Callable[[], bool]


class RouteCancelled(RuntimeError):
    """Raised between mini-batches (or paths) when the caller's `should_cancel()` says so."""


def prefix_tree_features(
    model: SDRResNet,
    pixels: torch.Tensor,
    preprocessing: Preprocessing,
    paths: Sequence[str | None],
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    bf16: bool | None = None,
    batch_siblings: bool = False,
    workers: int | None = None,
    on_batch: BatchCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str | None, np.ndarray]:
    """Pooled features of every requested path (None: W0) for every image.

    Args:
        model: the supernet, in eval mode (per-prefix BN statistics), on `device`.
        pixels: uint8 `[N, C, S, S]` decoded images (`decode_images`); normalised per batch here.
        preprocessing: the checkpoint's; gives the normalisation.
        paths: any subset of paths, plus None for W0; walked in prefix-tree order.
        batch_size: images per mini-batch.
        device: where the forward passes run.
        channels_last: NHWC activations (faster convolutions on some CPUs and on tensor cores).
        bf16: bfloat16 autocast of the forward passes; None (default) turns it on for CUDA only, where
            tensor cores make it several times faster. Features come back as float32 either way.
        batch_siblings: evaluate the G children of a prefix together, as grouped convolutions over
            their stacked activations (equal to one by one, to float rounding). Off by default:
            on 2 CPU cores it made sdr_tiny's walk 1.4-1.5x faster (per-op overhead dominates its
            small late stages) but sdr_resnet50's 1.8x slower (oneDNN's grouped convolutions over
            wide layers), docs/BENCHMARKS.md; on a GPU it is unmeasured (`benchmarks.gpu_route`
            times both). Holds G activations per stage instead of one.
        workers: mini-batches walked at once, each in its own thread on one torch thread (torch's
            thread count is set to 1 for the walk and restored after; it is process-wide). None
            (default): `torch.get_num_threads()` on CPU, 1 on CUDA (one stream of batches feeds the GPU).
        on_batch: called after each mini-batch with (done, total), from the calling thread, in order.
        should_cancel: checked before each mini-batch is started; True raises `RouteCancelled` once
            the batches already started (at most `workers`) have finished.

    Returns:
        float32 `[N, D]` per path (D = `model.num_features` for W0, else `subnet_num_features`).
    """
    if model.training:
        raise ValueError("the model must be in eval mode: train-mode BatchNorm would use batch statistics")
    config = model.config
    canonical = [None if p is None else parse_path(p, config.num_stages, config.num_groups) for p in paths]
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"duplicate paths in {list(paths)}")
    leaves = sorted(p for p in canonical if p is not None)
    # children[prefix]: the next-stage prefixes the requested leaves pass through, in tree order.
    children: dict[str, list[str]] = {}
    for leaf in leaves:
        for depth in range(config.num_stages):
            siblings = children.setdefault(leaf[:depth], [])
            if leaf[: depth + 1] not in siblings:
                siblings.append(leaf[: depth + 1])

    num_images = len(pixels)
    features = {
        p: np.empty((num_images, model.num_features if p is None else model.subnet_num_features), np.float32)
        for p in canonical
    }
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    total_batches = -(-num_images // batch_size)
    device = torch.device(device)
    use_bf16 = device.type == "cuda" if bf16 is None else bf16
    if workers is None:
        workers = 1 if device.type == "cuda" else torch.get_num_threads()
    workers = max(1, min(workers, total_batches))
    if device.type == "cuda":  # page-locked host memory lets each batch's copy overlap the previous compute
        pixels = pixels.pin_memory()

    def descend(h: torch.Tensor, prefix: str, rows: slice) -> None:
        stage, kids = len(prefix), children.get(prefix, [])
        if batch_siblings and len(kids) > 1:
            outs: Iterable[torch.Tensor] = model.forward_stage(h, stage, tuple(kids)).chunk(len(kids), dim=1)
        else:  # a generator: one child's activation alive at a time
            outs = (model.forward_stage(h, stage, child) for child in kids)
        for child, out in zip(kids, outs, strict=True):  # out: [B, C_s, H_s, W_s]
            if stage + 1 == config.num_stages:
                features[child][rows] = model.pool(out).float().cpu().numpy()  # [B, D]
            else:
                descend(out, child, rows)

    def walk(rows: slice) -> None:
        """One mini-batch through the whole tree (inference mode and autocast are per thread)."""
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            x = normalize(pixels[rows].to(device, non_blocking=True), preprocessing)
            # `.to`, not `.contiguous`: a 1-channel [B, 1, S, S] batch already counts as channels_last
            # contiguous, so `.contiguous` would keep its NCHW strides and every activation after it NCHW.
            stem = model.forward_stem(x.to(memory_format=memory_format))  # [B, 64, S/4, S/4]
            if None in features:
                h = stem
                for stage in range(config.num_stages):
                    h = model.forward_stage(h, stage, None)
                features[None][rows] = model.pool(h).float().cpu().numpy()
            descend(stem, "", rows)

    done = 0
    window: deque[Future[None]] = deque()  # `workers` batches in flight: a cancel leaves at most that many to finish

    def finish_oldest() -> None:
        nonlocal done
        window.popleft().result()
        done += 1
        if on_batch is not None:
            on_batch(done, total_batches)

    with torch_threads(1 if workers > 1 else None), ThreadPoolExecutor(workers, thread_name_prefix="walk") as pool:
        for batch_index, start in enumerate(range(0, num_images, batch_size)):
            if should_cancel is not None and should_cancel():
                raise RouteCancelled(f"cancelled after {batch_index} of {total_batches} mini-batches")
            window.append(pool.submit(walk, slice(start, start + batch_size)))
            if len(window) == workers:
                finish_oldest()
        while window:
            finish_oldest()
    return features
