"""Every setting of the service, in one place, read from the environment (prefix `SDR_`).

The API process, the Celery workers and `sdr serve` all build their behaviour from one
`Settings` object, so a variable set in `docker-compose.yml` means the same thing everywhere.
Inconsistent combinations (a visibility timeout below the hard time limit, a shard count that is
not a prefix-tree level) fail at start-up with a message naming the variables, not at 3 a.m.
when Redis redelivers a shard that is still running.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["SHIPPED_CHECKPOINT", "Settings", "get_settings"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# The small checkpoint the project trains with its own code and ships (DESIGN §6 "embedded default").
SHIPPED_CHECKPOINT = REPO_ROOT / "checkpoints" / "sdr_tiny_fmnist.safetensors"
# Tree levels of a 4-stage, 4-group supernet: one shard per prefix of length 0..4.
_SHARD_COUNTS = (1, 4, 16, 64, 256)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sdr-router"


def _split_list(value: Any) -> Any:
    """Accept `a,b` or `a:b` (os.pathsep) from the environment as well as a real list."""
    if isinstance(value, str):
        parts = value.replace(os.pathsep, ",").split(",")
        return [p.strip() for p in parts if p.strip()]
    return value


class Settings(BaseSettings):
    """Service configuration; every field is the environment variable `SDR_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="SDR_", extra="ignore", frozen=True)

    # --- storage and model -------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Datasets, job results, extracted weights, the embedded Redis. Shared by API and workers.",
    )
    checkpoint: Path | None = Field(
        default=None,
        description=(
            "Supernet checkpoint (.safetensors). Unset: the shipped checkpoints/sdr_tiny_fmnist.safetensors, "
            "or, until that exists, a random-init sdr_tiny created in the data dir (logged as a warning)."
        ),
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Allow-list of directories an inline route manifest may reference (comma or ':' separated).",
    )

    # --- broker and workers --------------------------------------------------------------------
    broker_url: str | None = Field(
        default=None,
        description="redis://host:port/db of a shared Redis. Unset: `sdr serve` starts a private one.",
    )
    worker_concurrency: int = Field(default=2, ge=1, description="Worker processes per `sdr worker`.")
    torch_threads: int | None = Field(
        default=None, ge=1, description="Torch threads per worker process (default: CPUs / concurrency)."
    )
    # Each shard walks the stem (and the stages above its subtree) again, so more shards than worker
    # processes cost time: 2,000 images through `make run` on 2 cores took 33 s with 4 shards, 54 s
    # with 16 and 56 s with 1 (one child idle). 4 is the smallest level that keeps 2-4 children busy;
    # a deployment with more worker processes sets the smallest level at or above their number.
    route_shards: int = Field(default=4, description="Shards per route: one prefix subtree each (1/4/16/64/256).")
    max_deliveries: int = Field(default=3, ge=1, description="A shard delivered more often than this fails its job.")
    task_soft_time_limit: int = Field(default=3600, ge=1, description="Seconds before a task is asked to stop.")
    task_time_limit: int = Field(default=3900, ge=1, description="Seconds before a task's process is killed.")
    visibility_timeout: int = Field(
        default=7200, ge=1, description="Seconds before Redis redelivers an unacknowledged task (> time limit)."
    )
    result_expires: int = Field(default=86400, ge=60, description="Seconds Celery keeps task results.")
    wait_timeout: float = Field(
        default=120.0, gt=0, description="Seconds the API waits for a weights/features task before a 503."
    )
    device: str = Field(
        default="auto", description="Where workers run the model: auto (cuda if available), cpu, cuda, cuda:1, ..."
    )
    feature_batch_size: int = Field(default=64, ge=1, description="Images per forward pass in the features task.")
    # Request batching (`service.feature_batcher`): one task in flight per sub-net gathered 7.2 single-image
    # requests per task with 16 in flight on 2 cores, 2.4x the images/s of one task per request.
    feature_tasks_in_flight: int = Field(
        default=1,
        ge=0,
        description=(
            "Features tasks one API process runs at once per sub-net; requests that arrive meanwhile go to a "
            "worker together, as one task of up to SDR_MAX_FEATURE_FILES images (request batching). 0: one "
            "task per request."
        ),
    )

    # --- limits ------------------------------------------------------------------------------
    max_upload_bytes: int = Field(default=512 * 2**20, ge=1, description="Largest dataset archive accepted.")
    max_json_bytes: int = Field(default=16 * 2**20, ge=1, description="Largest JSON request body (inline manifests).")
    max_feature_files: int = Field(default=64, ge=1, description="Most images in one features request.")
    max_feature_file_bytes: int = Field(default=10 * 2**20, ge=1, description="Largest image in a features request.")
    max_archive_members: int = Field(default=200_000, ge=1, description="Most entries in a dataset archive.")
    max_archive_unpacked_bytes: int = Field(
        default=4 * 2**30, ge=1, description="Largest total uncompressed size of a dataset archive."
    )
    max_archive_ratio: float = Field(default=200.0, gt=1, description="Largest compression ratio of an archive.")
    max_queued_tasks: int = Field(
        default=10_000, ge=1, description="POST /route answers 429 while more route tasks than this wait."
    )
    max_inflight_requests: int = Field(
        default=16, ge=1, description="Weights/features requests one API process waits on at once (else 429)."
    )
    max_manifest_entries: int = Field(default=200_000, ge=1, description="Most entries in an inline manifest.")

    # --- security and ops --------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Bearer keys (comma separated). Set: every endpoint but /livez and /readyz needs one.",
    )
    log_level: str = Field(default="INFO", description="Log level of the API and the workers.")

    @field_validator("data_roots", "api_keys", mode="before")
    @classmethod
    def _lists_from_env(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("route_shards")
    @classmethod
    def _shards_are_tree_levels(cls, value: int) -> int:
        if value not in _SHARD_COUNTS:
            raise ValueError(
                f"SDR_ROUTE_SHARDS={value}: a shard is one prefix subtree, so the count must be one of {_SHARD_COUNTS}"
            )
        return value

    @model_validator(mode="after")
    def _timeouts_are_ordered(self) -> Settings:
        # Redis redelivers any unacknowledged task after the visibility timeout; with acks_late a
        # shard still running past it would run twice at once. The hard limit kills it first.
        if not self.task_soft_time_limit < self.task_time_limit < self.visibility_timeout:
            raise ValueError(
                "need SDR_TASK_SOFT_TIME_LIMIT < SDR_TASK_TIME_LIMIT < SDR_VISIBILITY_TIMEOUT, got "
                f"{self.task_soft_time_limit}, {self.task_time_limit}, {self.visibility_timeout}: a task "
                "still running after the visibility timeout would be delivered to a second worker"
            )
        return self

    # --- derived locations ---------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """No broker configured: `sdr serve` runs a private Redis in the data dir."""
        return self.broker_url is None

    @property
    def redis_socket(self) -> Path:
        """Unix socket of the embedded Redis (inside the data dir, so it is private to this user)."""
        return self.data_dir / "redis" / "redis.sock"

    @property
    def effective_broker_url(self) -> str:
        """The Redis every process talks to: the configured one, or the embedded server's socket."""
        if self.broker_url is not None:
            return self.broker_url
        return f"redis+socket://{self.redis_socket}"

    @property
    def random_checkpoint(self) -> Path:
        """Where the random-init stand-in checkpoint lives until a trained one is shipped."""
        return self.data_dir / "checkpoints" / "sdr_tiny_random_init.safetensors"

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint this deployment serves (see the `checkpoint` field for the fallbacks)."""
        if self.checkpoint is not None:
            return self.checkpoint
        if SHIPPED_CHECKPOINT.is_file():
            return SHIPPED_CHECKPOINT
        return self.random_checkpoint

    @property
    def uses_random_checkpoint(self) -> bool:
        return self.checkpoint is None and not SHIPPED_CHECKPOINT.is_file()

    def ensure_dirs(self) -> None:
        """Create the data dir layout (idempotent)."""
        for sub in ("datasets", "jobs", "subnets", "tmp", "checkpoints", "redis"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
