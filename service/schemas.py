"""Request and response models of the HTTP API (the wire contract of DESIGN §6).

Field names are the contract clients and tests rely on: `POST /datasets` answers
`{"id", "classes", "counts", ...}`, `POST /route` takes `{"dataset_id" or "manifest", "scorer",
"screen", ...}`, `GET /route/{job_id}` answers `{"status", "progress", "result"}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BUSY",
    "NOT_READY",
    "UNAUTHORIZED",
    "DatasetInfo",
    "ErrorBody",
    "FeaturesResponse",
    "HealthReport",
    "ManifestEntry",
    "Progress",
    "RouteAccepted",
    "RouteJob",
    "RouteRequest",
    "ShardState",
    "SubnetInfo",
    "SubnetList",
]

Scorer = Literal["knn", "logme", "sfda", "gbc"]
Split = Literal["train", "test"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorBody(BaseModel):
    """Every 4xx/5xx the service raises itself: one sentence a user can act on."""

    detail: str = Field(examples=["dataset 'ds_0123' not found; upload it with POST /datasets"])


# Answers that several endpoints share, declared in their `responses=` so the OpenAPI spec lists every
# status a client can get (tests/service/test_openapi_fuzz.py checks each response against the spec).
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "SDR_API_KEYS is set and the request has no key or a wrong one."}
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Broker or checkpoint not ready; retry after `Retry-After` seconds."}
}
BUSY: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "Too many such requests in progress; retry after `Retry-After`."}
}


class DatasetInfo(BaseModel):
    """A validated, stored dataset."""

    id: str = Field(
        description="Content address: the same archive always gets the same id.",
        examples=["ds_5f2c0a9d31e4b7c8a6f01d2e"],
    )
    classes: list[str] = Field(examples=[["shirt", "sneaker", "trouser"]])
    counts: dict[str, dict[str, int]] = Field(
        description="Images per split and class.",
        examples=[
            {"train": {"shirt": 40, "sneaker": 40, "trouser": 40}, "test": {"shirt": 10, "sneaker": 10, "trouser": 10}}
        ],
    )
    num_images: int = Field(examples=[150])
    unreadable: list[str] = Field(default_factory=list, description="Members that are not decodable images.")
    layout: Literal["folders", "manifest"] = Field(examples=["folders"])
    size_bytes: int = Field(description="Size of the uploaded archive.", examples=[183_422])
    existing: bool = Field(default=False, description="True when this exact archive had been uploaded before.")


class ManifestEntry(BaseModel):
    """One image of an inline manifest: a file the workers can read under an allowed root."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(examples=["/srv/shared/tops/train/shirt/0001.png"])
    label: str = Field(min_length=1, examples=["shirt"])
    split: Split = Field(default="train", examples=["train"])


class RouteRequest(BaseModel):
    """Route a dataset: score every path (or `paths`) on it and rank them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # `_one_source` as JSON Schema, so a client (or a fuzzer) can tell a valid body from the
            # spec alone: exactly one of the two sources, the other absent or null.
            "oneOf": [
                {
                    "required": ["dataset_id"],
                    "properties": {"dataset_id": {"type": "string"}, "manifest": {"type": "null"}},
                },
                {
                    "required": ["manifest"],
                    "properties": {"manifest": {"type": "array"}, "dataset_id": {"type": "null"}},
                },
            ],
            "examples": [
                {"dataset_id": "ds_5f2c0a9d31e4b7c8a6f01d2e", "scorer": "knn", "screen": False},
                {
                    "manifest": [
                        {"path": "/srv/shared/tops/train/shirt/0001.png", "label": "shirt", "split": "train"},
                        {"path": "/srv/shared/tops/test/shirt/0101.png", "label": "shirt", "split": "test"},
                    ],
                    "scorer": "knn",
                    "k": 20,
                },
            ],
        },
    )

    dataset_id: str | None = Field(default=None, description="Id from POST /datasets.")
    manifest: list[ManifestEntry] | None = Field(
        default=None, min_length=1, description="Inline dataset: files under one of SDR_DATA_ROOTS."
    )
    scorer: Scorer = Field(default="knn", description="How a path's features are scored.")
    screen: bool = Field(default=False, description="Score all paths on a subset, re-score the best on all.")
    k: int | None = Field(default=None, ge=1, le=10_000, description="kNN neighbours (default: the library's).")
    selection: Literal["loo", "split"] | None = Field(
        default=None, description="How paths are ranked without touching the reported split (default: loo)."
    )
    paths: list[str] | None = Field(
        default=None, min_length=1, description="Score only these paths (default: all 256).", examples=[["0000"]]
    )
    seed: int = Field(default=0, description="Seed of every random choice (splits, bootstrap).")

    @model_validator(mode="after")
    def _one_source(self) -> RouteRequest:
        if (self.dataset_id is None) == (self.manifest is None):
            raise ValueError("give exactly one of 'dataset_id' (from POST /datasets) or 'manifest'")
        if self.manifest is not None and not self.manifest:
            raise ValueError("'manifest' is empty")
        return self


class RouteAccepted(BaseModel):
    job_id: str = Field(examples=["9b2f3c4d5e6f40718293a4b5c6d7e8f9"])
    status: JobStatusName = Field(examples=["queued"])
    location: str = Field(examples=["/route/9b2f3c4d5e6f40718293a4b5c6d7e8f9"])


class Progress(BaseModel):
    done: int = Field(description="Paths scored so far.", examples=[96])
    total: int = Field(description="Paths this job scores.", examples=[256])


class ShardState(BaseModel):
    index: int
    prefix: str = Field(description="Prefix subtree this shard scores ('' = all paths).", examples=["01"])
    status: str
    done: int
    total: int
    deliveries: int = Field(description="Times the broker handed this shard to a worker.")
    worker: str | None = None


class RouteJob(BaseModel):
    """A route job; `result` has the `sdr route --json` shape once `status` is succeeded."""

    job_id: str
    status: JobStatusName = Field(examples=["running"])
    progress: Progress
    result: dict[str, Any] | None = Field(
        default=None,
        examples=[
            {
                "best": {"path": "0312", "accuracy": 0.91},
                "supernet": {"accuracy": 0.89},
                "paths": [{"path": "0312", "accuracy": 0.91}],
            }
        ],
    )
    error: str | None = None
    options: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    shards: list[ShardState] = Field(default_factory=list)


class SubnetInfo(BaseModel):
    path: str = Field(examples=["0312"])
    id: int = Field(description="The path read in base 4.", examples=[54])
    cluster_size: int | None = Field(description="Pre-training images of its cluster (null: unknown).", examples=[231])
    params: int = Field(examples=[705_000])
    feature_dim: int = Field(examples=[160])
    weights_url: str = Field(examples=["/subnets/0312/weights"])


class SubnetList(BaseModel):
    checkpoint: str = Field(description="Checkpoint file name.", examples=["sdr_tiny_fmnist.safetensors"])
    checkpoint_sha256: str
    trained: bool = Field(description="False while serving the random-init stand-in checkpoint.")
    supernet_params: int
    supernet_feature_dim: int
    preprocessing: dict[str, Any]
    subnets: list[SubnetInfo]


class FeaturesResponse(BaseModel):
    path: str = Field(examples=["0312"])
    dim: int = Field(examples=[160])
    files: list[str] = Field(
        description="Upload file names, in the order of `embeddings`.", examples=[["a.png", "b.png"]]
    )
    embeddings: list[list[float]] = Field(
        description="One row per file; a non-finite value (only a broken checkpoint yields one) is `null`.",
        examples=[[[0.12, 0.0, 1.73], [0.4, 0.08, 0.0]]],
    )


class HealthReport(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(examples=[{"broker": True, "worker": True, "checkpoint": True}])
    detail: dict[str, str] = Field(default_factory=dict, description="Why each failing check fails.")
