"""Screening (`--screen`): rank all paths cheaply on a subset, then score the top few on everything.

Phase 1 decodes nothing new: it walks all 256 paths over a stratified subset of the train split
(`screen_fraction`, fixed seed) and ranks them with the route's own selection rule restricted to
that subset. Phase 2 re-scores the `screen_top` best of them, and W0, on the whole dataset and
merges them as a normal route. Feature cost is linear in images, so phase 1 costs about
`screen_fraction` of a full route and phase 2 `screen_top / 256` of one.

The time saved is reported against an estimate of the full route (phase 1's cost scaled to all
images); `verify=True` runs the full route as well and reports whether the picks agree.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from sdr_model.datasets.labelled import stratified_split
from sdr_model.routing.data import RouteData
from sdr_model.routing.engine import auto_num_shards, run_shards
from sdr_model.routing.features import CancelCheck
from sdr_model.routing.merge import merge_scores
from sdr_model.routing.options import RouteOptions
from sdr_model.routing.result import RouteResult, ScreeningReport
from sdr_model.routing.selection import RoutePlan
from sdr_model.routing.shard import ProgressCallback, plan_shards, progress_steps
from sdr_model.supernet import SDRResNet

__all__ = ["screened_route", "screening_subset"]


def screening_subset(data: RouteData, options: RouteOptions) -> RouteData:
    """The stratified train subset phase 1 scores, as data of its own (no test split)."""
    plan = data.plan
    _, held = stratified_split(plan.labels[plan.train], options.screen_fraction, options.seed + 2)
    subset = plan.train[held]
    labels = plan.labels[subset]
    everything = np.arange(len(subset))
    if plan.selection == "loo":
        bank, queries = everything, everything
    else:
        bank, queries = stratified_split(labels, options.selection_fraction, options.seed + 1)
    if len(queries) == 0 or len(bank) < 2:
        raise ValueError(
            f"screening subset of {len(subset)} images is too small to rank paths; raise screen_fraction "
            "or route without screening"
        )
    sub_plan = RoutePlan(
        labels=labels,
        num_classes=plan.num_classes,
        train=everything,
        test=np.zeros(0, dtype=np.int64),
        selection=plan.selection,
        selection_bank=bank,
        selection_queries=queries,
    )
    return dataclasses.replace(data, pixels=data.pixels[torch.from_numpy(subset)], plan=sub_plan)


def screened_route(
    model: SDRResNet,
    data: RouteData,
    options: RouteOptions,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    num_shards: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    verify: bool = False,
) -> RouteResult:
    """Screen, re-score the candidates, and report what screening saved (and, with `verify`, lost)."""
    subset = screening_subset(data, options)
    candidates_count = min(options.screen_top, model.config.num_paths)
    # Steps of each phase, as score_paths counts them, so one progress bar runs over all phases.
    steps = [
        progress_steps(model.config.num_paths, len(subset.pixels), options.batch_size),
        progress_steps(candidates_count + 1, len(data.pixels), options.batch_size),
    ]
    if verify:
        steps.append(progress_steps(model.config.num_paths + 1, len(data.pixels), options.batch_size))

    def phase_progress(phase: int) -> ProgressCallback | None:
        if progress is None:
            return None
        report, offset, total = progress, sum(steps[:phase]), sum(steps)
        return lambda done, _: report(offset + done, total)

    start = time.perf_counter()
    shards = plan_shards(num_shards or auto_num_shards(model, len(subset.pixels)), include_supernet=False)
    screen_results = run_shards(model, subset, shards, options, device, channels_last, phase_progress(0), should_cancel)
    screened = [score for shard in screen_results for score in shard.scores]
    screen_seconds = time.perf_counter() - start

    ranked = sorted(screened, key=lambda s: (-s.selection_score, str(s.path)))
    candidates = tuple(str(s.path) for s in ranked[:candidates_count])
    start = time.perf_counter()
    result = merge_scores(
        run_shards(model, data, [[None, *candidates]], options, device, channels_last, phase_progress(1), should_cancel)
    )
    rescore_seconds = time.perf_counter() - start

    full_best, full_seconds = None, None
    if verify:
        start = time.perf_counter()
        full_shards = plan_shards(num_shards or auto_num_shards(model, len(data.pixels)))
        full = merge_scores(
            run_shards(model, data, full_shards, options, device, channels_last, phase_progress(2), should_cancel)
        )
        full_best, full_seconds = full.best.path, time.perf_counter() - start

    report = ScreeningReport(
        subset_images=len(subset.pixels),
        candidates=candidates,
        best=str(result.best.path),
        screen_scores={str(s.path): s.selection_score for s in screened},
        screen_seconds=screen_seconds,
        rescore_seconds=rescore_seconds,
        estimated_full_seconds=screen_seconds * len(data.pixels) / len(subset.pixels),
        full_route_best=full_best,
        full_route_seconds=full_seconds,
    )
    return dataclasses.replace(result, screening=report)
