"""Routing engine: score every sub-net of a supernet on a labelled dataset and pick the best (DESIGN §5).

Local use is one call, `route(checkpoint, dataset)`. The service distributes the same work:
`prepare_route_data` on each worker, `score_paths` per shard from `plan_shards`, then
`merge_scores` over the `ShardResult`s (JSON-able via `to_dict` / `from_dict`).

Names are resolved lazily (PEP 562) so that `sdr_model.routing.cli`, which the `sdr` parser imports
in every process, including the torch-free API process, does not drag in torch and faiss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdr_model.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from sdr_model.routing.data import RouteContext, RouteData, prepare_route_data
    from sdr_model.routing.engine import route
    from sdr_model.routing.features import RouteCancelled, prefix_tree_features
    from sdr_model.routing.knn import KNNAccuracy, knn_accuracy
    from sdr_model.routing.merge import MergeError, merge_scores
    from sdr_model.routing.options import SCORERS, RouteOptions
    from sdr_model.routing.plot import plot_gain_histogram
    from sdr_model.routing.result import PathReport, RouteResult, ScreeningReport
    from sdr_model.routing.scoring import PathScore
    from sdr_model.routing.shard import ShardResult, plan_shards, score_paths

_EXPORTS = {
    "RouteContext": "data",
    "RouteData": "data",
    "prepare_route_data": "data",
    "RouteCancelled": "features",
    "prefix_tree_features": "features",
    "KNNAccuracy": "knn",
    "knn_accuracy": "knn",
    "MergeError": "merge",
    "merge_scores": "merge",
    "SCORERS": "options",
    "RouteOptions": "options",
    "plot_gain_histogram": "plot",
    "PathReport": "result",
    "RouteResult": "result",
    "ScreeningReport": "result",
    "route": "engine",
    "PathScore": "scoring",
    "ShardResult": "shard",
    "plan_shards": "shard",
    "score_paths": "shard",
}

__all__ = [
    "SCORERS",
    "KNNAccuracy",
    "MergeError",
    "PathReport",
    "PathScore",
    "RouteCancelled",
    "RouteContext",
    "RouteData",
    "RouteOptions",
    "RouteResult",
    "ScreeningReport",
    "ShardResult",
    "knn_accuracy",
    "merge_scores",
    "plan_shards",
    "plot_gain_histogram",
    "prefix_tree_features",
    "prepare_route_data",
    "route",
    "score_paths",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
