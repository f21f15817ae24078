"""`route()`: score every path of a supernet checkpoint on a labelled dataset and pick the best.

Built from the same two pieces the service distributes: `score_paths` per shard and
`merge_scores` over all shards, so a local route and a route spread over N workers agree exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sdr_model.checkpoint import CheckpointMetadata, load_checkpoint
from sdr_model.datasets.archive import ArchiveLimits
from sdr_model.datasets.labelled import LabelledImages, open_dataset
from sdr_model.routing.data import RouteData, prepare_route_data
from sdr_model.routing.features import CancelCheck
from sdr_model.routing.merge import merge_scores
from sdr_model.routing.options import RouteOptions, ScorerName
from sdr_model.routing.result import RouteResult
from sdr_model.routing.shard import ProgressCallback, ShardResult, plan_shards, progress_steps, score_paths
from sdr_model.supernet import SDRResNet

__all__ = ["FEATURE_MEMORY_BUDGET", "auto_num_shards", "route", "run_shards"]

FEATURE_MEMORY_BUDGET = 1 << 30  # bytes of pooled features a local route holds at once
Checkpoint = str | os.PathLike[str] | tuple[SDRResNet, CheckpointMetadata]


def route(
    checkpoint: Checkpoint,
    dataset: str | os.PathLike[str] | LabelledImages,
    scorer: ScorerName = "knn",
    *,
    screen: bool = False,
    verify_screen: bool = False,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    num_shards: int | None = None,
    archive_limits: ArchiveLimits | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    **options: Any,
) -> RouteResult:
    """Route a labelled dataset to its best sub-net.

    Args:
        checkpoint: a supernet checkpoint file, or `(model, metadata)` from `load_checkpoint`.
        dataset: ImageFolder folder, JSONL manifest, zip / tar archive of either, or a read dataset.
        scorer: "knn" (default), "logme", "sfda" or "gbc": what ranks the paths.
        screen: score all paths on a subset of train, re-score the top few on everything.
        verify_screen: with `screen`, also run the full route and report whether the picks agree.
        device: "cpu", "cuda", ...
        channels_last: NHWC activations (helps on GPUs and some CPUs).
        num_shards: shards run one after the other; default: as few as keep the features of one
            shard under `FEATURE_MEMORY_BUDGET`.
        archive_limits: caps for extracting an archive dataset.
        progress: called with (done, total) steps over the whole route.
        should_cancel: polled between mini-batches and paths; True raises `RouteCancelled`.
        **options: any `RouteOptions` field (selection, k, ks, seed, batch_size, n_boot, ...).

    Raises:
        DatasetError: unreadable or unusable dataset; CheckpointError: bad checkpoint;
        RouteCancelled: `should_cancel()` said so.
    """
    route_options = RouteOptions(scorer=scorer, **options)
    model, metadata = load_checkpoint(checkpoint, device) if not isinstance(checkpoint, tuple) else checkpoint
    model = model.to(device).eval()
    with open_dataset(dataset, archive_limits) as labelled:
        data = prepare_route_data(labelled, metadata.preprocessing, route_options)
    if screen:
        from sdr_model.routing.screening import screened_route  # screening builds on this module

        return screened_route(
            model,
            data,
            route_options,
            device=device,
            channels_last=channels_last,
            num_shards=num_shards,
            progress=progress,
            should_cancel=should_cancel,
            verify=verify_screen,
        )
    shards = plan_shards(num_shards or auto_num_shards(model, len(data.pixels)))
    return merge_scores(run_shards(model, data, shards, route_options, device, channels_last, progress, should_cancel))


def auto_num_shards(model: SDRResNet, num_images: int, budget: int = FEATURE_MEMORY_BUDGET) -> int:
    """Fewest shards (a power of G, so each is a prefix subtree) whose features fit in `budget` bytes."""
    config = model.config
    per_path = num_images * model.subnet_num_features * 4
    needed = math.ceil(config.num_paths * per_path / budget)
    shards = 1
    while shards < min(needed, config.num_paths):
        shards *= config.num_groups
    return shards


def run_shards(
    model: SDRResNet,
    data: RouteData,
    shards: Sequence[Sequence[str | None]],
    options: RouteOptions,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> list[ShardResult]:
    """Score the shards one after the other in this process, reporting progress over all of them."""
    sizes = [progress_steps(len(shard), len(data.pixels), options.batch_size) for shard in shards]
    total, results = sum(sizes), []
    for i, shard in enumerate(shards):
        offset = sum(sizes[:i])
        shard_progress: Callable[[int, int], None] | None = None
        if progress is not None:

            def shard_progress(done: int, _: int, offset: int = offset, report: ProgressCallback = progress) -> None:
                report(offset + done, total)

        results.append(
            score_paths(
                model,
                data,
                shard,
                options,
                device=device,
                channels_last=channels_last,
                progress=shard_progress,
                should_cancel=should_cancel,
            )
        )
    return results
