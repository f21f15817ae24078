"""The shard: features and scores for a subset of paths, the unit the service fans out to workers.

A route is `merge_scores([score_paths(model, data, shard) for shard in plan_shards(n)])`, whether
the shards run in one process (`route`) or on N Celery workers: the same code computes the same
numbers either way. A path's features depend only on its own prefix chain and on the mini-batch
composition, which is fixed by the data, not by the shard, so a path scores identically in any shard.

Shards are contiguous runs of path ids, i.e. unions of prefix subtrees, so shared-prefix
evaluation still shares everything inside a shard; splitting costs only the stem (and stages above
the shard's common prefix) once more per shard. W0 travels with the first shard.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdr_model.paths import all_paths, parse_path
from sdr_model.routing.data import RouteContext, RouteData
from sdr_model.routing.features import CancelCheck, RouteCancelled, prefix_tree_features
from sdr_model.routing.options import RouteOptions
from sdr_model.routing.scoring import PathScore, score_many
from sdr_model.supernet import SDRResNet

__all__ = ["ProgressCallback", "ShardResult", "plan_shards", "progress_steps", "score_paths"]

ProgressCallback = Callable[[int, int], None]  # (steps done, steps in all) of one shard


def progress_steps(num_paths: int, num_images: int, batch_size: int) -> int:
    """Progress steps of scoring `num_paths` paths: one per path per mini-batch, one per scored path."""
    return num_paths * (-(-num_images // batch_size) + 1)


@dataclass(frozen=True)
class ShardResult:
    """Scores of one shard's paths, with the context and options that produced them (JSON-able)."""

    scores: tuple[PathScore, ...]
    context: RouteContext
    options: RouteOptions
    features_seconds: float
    scoring_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": [s.to_dict() for s in self.scores],
            "context": self.context.to_dict(),
            "options": self.options.to_dict(),
            "features_seconds": self.features_seconds,
            "scoring_seconds": self.scoring_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardResult:
        return cls(
            scores=tuple(PathScore.from_dict(s) for s in d["scores"]),
            context=RouteContext.from_dict(d["context"]),
            options=RouteOptions.from_dict(d["options"]),
            features_seconds=float(d["features_seconds"]),
            scoring_seconds=float(d["scoring_seconds"]),
        )


def plan_shards(
    num_shards: int, paths: Sequence[str] | None = None, include_supernet: bool = True
) -> list[list[str | None]]:
    """Split paths (default: all 256) into `num_shards` contiguous prefix-ordered runs, W0 in the first.

    With a power of G shards (4, 16, 64) every shard is exactly one prefix subtree.
    """
    ordered = sorted(paths) if paths is not None else all_paths()
    if not 1 <= num_shards <= max(len(ordered), 1):
        raise ValueError(f"num_shards must be between 1 and {len(ordered)}, got {num_shards}")
    bounds = [round(i * len(ordered) / num_shards) for i in range(num_shards + 1)]
    shards: list[list[str | None]] = [list(ordered[a:b]) for a, b in itertools.pairwise(bounds)]
    if include_supernet:
        shards[0].insert(0, None)
    return shards


def score_paths(
    model: SDRResNet,
    data: RouteData,
    paths: Sequence[str | None],
    options: RouteOptions,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> ShardResult:
    """Compute features for `paths` (None: W0) by the shared-prefix walk, then score each path.

    Args:
        model: the supernet in eval mode, on `device`.
        data: from `prepare_route_data` with the same `options`.
        paths: this shard's paths.
        options: scorer, k and the rest; must be those `data` was prepared with.
        device: where the forward passes run.
        channels_last: NHWC activations for the forward passes.
        progress: called with (done, total) steps: one step per path per mini-batch, then one per
            scored path; `done / total` is the shard's fraction complete, and
            `len(paths) * done / total` its progress in paths.
        should_cancel: polled before every mini-batch and every path's scoring; True raises
            `RouteCancelled` and nothing is returned.
    """
    config = model.config
    paths = [None if p is None else parse_path(p, config.num_stages, config.num_groups) for p in paths]
    num_paths = len(paths)
    num_batches = -(-len(data.pixels) // options.batch_size)
    total = progress_steps(num_paths, len(data.pixels), options.batch_size)

    def on_batch(done: int, _: int) -> None:
        if progress is not None:
            progress(done * num_paths, total)

    start = time.perf_counter()
    features = prefix_tree_features(
        model,
        data.pixels,
        data.preprocessing,
        paths,
        batch_size=options.batch_size,
        device=device,
        channels_last=channels_last,
        on_batch=on_batch,
        should_cancel=should_cancel,
    )
    features_seconds = time.perf_counter() - start
    scores = score_many(
        features,
        paths,
        data.plan,
        options,
        workers=torch.get_num_threads(),
        on_scored=None if progress is None else lambda i: progress(num_paths * num_batches + i + 1, total),
        should_stop=should_cancel,
    )
    if scores is None:
        raise RouteCancelled(f"cancelled while scoring {num_paths} paths")
    return ShardResult(
        scores=tuple(scores),
        context=data.context,
        options=options,
        features_seconds=features_seconds,
        scoring_seconds=time.perf_counter() - start - features_seconds,
    )
