"""A labelled dataset made ready for routing: decoded once, labelled, split, with a plan.

`prepare_route_data` is deterministic (sorted files, seeded splits), so every worker of a
distributed route that prepares the same dataset with the same options gets the same images,
labels and splits, and its shard's scores line up with everyone else's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdr_model.config import Preprocessing
from sdr_model.datasets.images import SkippedFile, decode_images
from sdr_model.datasets.labelled import DatasetError, LabelledImages, stratified_split
from sdr_model.routing.options import RouteOptions
from sdr_model.routing.selection import RoutePlan, make_plan

__all__ = ["RouteContext", "RouteData", "prepare_route_data"]


@dataclass(frozen=True)
class RouteContext:
    """What a route report says about its data; identical on every worker of one route (JSON-able)."""

    dataset: str
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> images actually used
    test_source: str  # "given" (a test split in the dataset) or "stratified" (held out by us)
    selection_queries: int  # images whose kNN outcome ranks the paths
    skipped: tuple[SkippedFile, ...]
    decode_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "counts": self.counts,
            "test_source": self.test_source,
            "selection_queries": self.selection_queries,
            "skipped": [{"file": s.file, "reason": s.reason} for s in self.skipped],
            "decode_seconds": self.decode_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouteContext:
        return cls(
            dataset=d["dataset"],
            classes=tuple(d["classes"]),
            counts=d["counts"],
            test_source=d["test_source"],
            selection_queries=int(d["selection_queries"]),
            skipped=tuple(SkippedFile(**s) for s in d["skipped"]),
            decode_seconds=float(d["decode_seconds"]),
        )

    def same_data(self, other: RouteContext) -> bool:
        """Whether two contexts describe the same images and splits (timings aside)."""
        return {**self.to_dict(), "decode_seconds": 0} == {**other.to_dict(), "decode_seconds": 0}


@dataclass(frozen=True)
class RouteData:
    """Decoded pixels, their plan and context: everything a shard needs besides the model."""

    pixels: torch.Tensor  # uint8 [N, C, S, S]
    preprocessing: Preprocessing
    plan: RoutePlan
    context: RouteContext


def prepare_route_data(dataset: LabelledImages, preprocessing: Preprocessing, options: RouteOptions) -> RouteData:
    """Decode every image once, label it, fix the train / test split and the selection plan.

    Raises:
        DatasetError: no readable image, or a dataset the plan cannot be built on (the message from
            `make_plan` says what is missing).
    """
    start = time.perf_counter()
    records = dataset.records
    decoded = decode_images([r.path for r in records], preprocessing)
    if len(decoded.source_index) == 0:
        raise DatasetError(
            f"{dataset.name}: none of the {len(records)} images could be read "
            f"(first failure: {decoded.skipped[0].file}: {decoded.skipped[0].reason})"
            if decoded.skipped
            else f"{dataset.name}: the dataset holds no images"
        )
    kept = [records[i] for i in decoded.source_index]
    classes = tuple(sorted({r.label for r in kept}))
    class_ids = {name: i for i, name in enumerate(classes)}
    labels = np.array([class_ids[r.label] for r in kept], dtype=np.int64)
    if dataset.has_test_split:
        is_test = np.array([r.split == "test" for r in kept])
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        test_source = "given"
    else:
        train, test = stratified_split(labels, options.test_fraction, options.seed)
        test_source = "stratified"
    try:
        plan = make_plan(labels, len(classes), train, test, options.selection, options.selection_fraction, options.seed)
    except ValueError as exc:
        raise DatasetError(f"{dataset.name}: {exc}") from exc
    counts = {
        split: {classes[c]: int(n) for c, n in enumerate(np.bincount(labels[idx], minlength=len(classes))) if n}
        for split, idx in (("train", train), ("test", test))
    }
    context = RouteContext(
        dataset=dataset.name,
        classes=classes,
        counts=counts,
        test_source=test_source,
        selection_queries=len(plan.selection_queries),
        # Named relative to the dataset root: an archive's temporary folder means nothing to the user.
        skipped=tuple(SkippedFile(dataset.display_name(Path(s.file)), s.reason) for s in decoded.skipped),
        decode_seconds=time.perf_counter() - start,
    )
    return RouteData(pixels=decoded.pixels, preprocessing=preprocessing, plan=plan, context=context)
