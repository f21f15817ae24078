"""Route job and shard state: Redis hashes keyed by job and shard, written idempotently.

A route is split into shards (one prefix subtree each) that run as separate Celery tasks, maybe
on different machines, maybe more than once: with `acks_late` a task whose worker dies is
delivered again. So every state change is a Lua script that checks the current state first:

- a shard counts towards its job at most once (`finish_shard` is a no-op for a finished shard),
  and progress is the sum of absolute per-shard counters, never increments;
- a terminal job (succeeded, failed, cancelled) never changes again: a cancelled job stays
  cancelled even if a shard finishes afterwards;
- deliveries are counted per shard, so a shard that keeps killing its worker fails the job after
  `max_deliveries` instead of looping forever;
- job outcomes are counted (for /metrics) in the same script as the terminal transition, so
  exactly once.

Nothing here imports torch: the API and the workers share it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import redis

from sdr_model.atomic_write import write_text_atomic
from service.redis_store import KEY_PREFIX

__all__ = ["JobRecord", "JobStatus", "JobStore", "ShardStart", "write_json_atomic"]


class JobStatus(StrEnum):
    """Life cycle of a route job (and of each of its shards)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class ShardStart(StrEnum):
    """What `JobStore.start_shard` tells a delivered shard task to do."""

    RUN = "run"  # do the work
    ALREADY_DONE = "done"  # finished on an earlier delivery (ack lost): only make sure the merge runs
    JOB_OVER = "job_over"  # the job is cancelled or failed: do nothing
    EXHAUSTED = "exhausted"  # delivered too often: the job was failed by this call


_TERMINAL = "{'succeeded', 'failed', 'cancelled'}"

# KEYS[1] job hash, KEYS[2] outcome counter hash; ARGV: status, error, now.
_FINISH_JOB = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -1 end
for _, t in ipairs({_TERMINAL}) do if st == t then return 0 end end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[2]) end
if ARGV[1] == 'cancelled' then redis.call('HSET', KEYS[1], 'cancel', '1') end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

# KEYS[1] job, KEYS[2] shard, KEYS[3] outcomes; ARGV: max_deliveries, worker, now, pid.
_START_SHARD = f"""
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'job_over' end
for _, t in ipairs({_TERMINAL}) do if st == t then return 'job_over' end end
if redis.call('HGET', KEYS[2], 'status') == 'succeeded' then return 'done' end
local n = redis.call('HINCRBY', KEYS[2], 'deliveries', 1)
if n > tonumber(ARGV[1]) then
  local err = 'shard ' .. redis.call('HGET', KEYS[2], 'prefix') .. ' was delivered ' .. (n - 1) ..
    ' times without finishing (its worker died or was killed each time); giving up'
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error', err)
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'finished_at', ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'failed', 1)
  return 'exhausted'
end
redis.call('HSET', KEYS[2], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3], 'pid', ARGV[4])
if st == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3]) end
return 'run'
"""

# KEYS[1] job, KEYS[2] shard; ARGV: done. Monotone, and only while the shard runs.
_SHARD_PROGRESS = """
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[2], 'done') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[2], 'done', ARGV[1]) end
return 1
"""

# KEYS[1] job, KEYS[2] shard; ARGV: worker, now. Returns shards succeeded so far, or -1 if this
# call changed nothing (the shard had already been counted).
_FINISH_SHARD = """
if redis.call('HGET', KEYS[2], 'status') == 'succeeded' then return -1 end
local total = redis.call('HGET', KEYS[2], 'total')
redis.call('HSET', KEYS[2], 'status', 'succeeded', 'done', total, 'worker', ARGV[1], 'finished_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'shards_succeeded', 1)
"""


@dataclass
class JobRecord:
    """A route job as the API reports it."""

    job_id: str
    status: JobStatus
    done: int
    total: int
    error: str | None
    options: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    shards: list[dict[str, Any]] = field(default_factory=list)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True))


def _count_paths(paths: list[str | None]) -> int:
    return sum(p is not None for p in paths)


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


class JobStore:
    """Route jobs in Redis plus their result files under `<data_dir>/jobs/<job_id>/`."""

    def __init__(self, client: redis.Redis, data_dir: Path) -> None:
        self.r = client
        self.jobs_dir = data_dir / "jobs"
        self._finish_job = client.register_script(_FINISH_JOB)
        self._start_shard = client.register_script(_START_SHARD)
        self._shard_progress = client.register_script(_SHARD_PROGRESS)
        self._finish_shard = client.register_script(_FINISH_SHARD)

    # --- keys and files ------------------------------------------------------------------------
    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{KEY_PREFIX}job:{job_id}"

    @staticmethod
    def shard_key(job_id: str, shard: int) -> str:
        return f"{KEY_PREFIX}job:{job_id}:shard:{shard}"

    OUTCOMES_KEY = f"{KEY_PREFIX}metrics:job_outcomes"
    INDEX_KEY = f"{KEY_PREFIX}jobs"  # sorted set of job ids by creation time

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def result_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.json"

    def shard_result_path(self, job_id: str, shard: int) -> Path:
        return self.job_dir(job_id) / f"shard-{shard:03d}.json"

    def record_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "job.json"

    # --- API side ------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)

    def create(self, job_id: str, options: dict[str, Any], shards: list[list[str | None]], prefixes: list[str]) -> None:
        """Record a queued job with one hash per shard (`None` in a shard's paths is W0).

        Progress counts sub-net paths; W0 rides along in a shard without counting. Written in one
        MULTI so a reader never sees a job without its shards.
        """
        now = str(time.time())
        total = sum(_count_paths(s) for s in shards)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.job_key(job_id),
            mapping={
                "status": JobStatus.QUEUED.value,
                "total": total,
                "num_shards": len(shards),
                "shards_succeeded": 0,
                "options": json.dumps(options),
                "created_at": now,
                "cancel": 0,
            },
        )
        for i, (paths, prefix) in enumerate(zip(shards, prefixes, strict=True)):
            pipe.hset(
                self.shard_key(job_id, i),
                mapping={
                    "status": JobStatus.QUEUED.value,
                    "prefix": prefix,
                    "paths": json.dumps(paths),
                    "total": _count_paths(paths),
                    "done": 0,
                    "deliveries": 0,
                },
            )
        pipe.zadd(self.INDEX_KEY, {job_id: float(now)})
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        """The job's state from Redis, or from its `job.json` once Redis has forgotten it."""
        if not self.valid_id(job_id):
            return None
        h = self._hgetall(self.job_key(job_id))
        if not h:
            return self._from_disk(job_id)
        n = int(h["num_shards"])
        pipe = self.r.pipeline(transaction=False)
        for i in range(n):
            pipe.hgetall(self.shard_key(job_id, i))
        shard_hashes: list[dict[str, str]] = pipe.execute()
        shards: list[dict[str, Any]] = [
            {
                "index": i,
                "prefix": s.get("prefix", ""),
                "status": s.get("status", ""),
                "done": int(s.get("done", 0)),
                "total": int(s.get("total", 0)),
                "deliveries": int(s.get("deliveries", 0)),
                "worker": s.get("worker"),
            }
            for i, s in enumerate(shard_hashes)
        ]
        return JobRecord(
            job_id=job_id,
            status=JobStatus(h["status"]),
            done=sum(s["done"] for s in shards),
            total=int(h["total"]),
            error=h.get("error") or None,
            options=json.loads(h["options"]),
            created_at=float(h["created_at"]),
            started_at=_opt_float(h.get("started_at")),
            finished_at=_opt_float(h.get("finished_at")),
            shards=shards,
        )

    def _from_disk(self, job_id: str) -> JobRecord | None:
        path = self.record_path(job_id)
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        return JobRecord(
            job_id=job_id,
            status=JobStatus(d["status"]),
            done=d["done"],
            total=d["total"],
            error=d.get("error"),
            options=d["options"],
            created_at=d["created_at"],
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            shards=d.get("shards", []),
        )

    def _hgetall(self, key: str) -> dict[str, str]:
        # The client decodes responses (`decode_responses=True`); redis-py's stubs cannot know that.
        return cast(dict[str, str], self.r.hgetall(key))

    def load_result(self, job_id: str) -> dict[str, Any] | None:
        path = self.result_path(job_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop; returns whether this call moved it to cancelled.

        Shards see the flag between batches and stop; a finished job is left as it is.
        """
        return self.finish(job_id, JobStatus.CANCELLED) == 1

    def outcome_counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._hgetall(self.OUTCOMES_KEY).items()}

    # --- worker side ---------------------------------------------------------------------------
    def finish(self, job_id: str, status: JobStatus, error: str = "") -> int:
        """Move a job to a terminal status unless it already is in one (1: moved, 0: was, -1: no job)."""
        moved = int(
            self._finish_job(keys=[self.job_key(job_id), self.OUTCOMES_KEY], args=[status.value, error, time.time()])
        )
        if moved == 1:
            self.snapshot(job_id)
        return moved

    def start_shard(self, job_id: str, shard: int, max_deliveries: int, worker: str) -> ShardStart:
        outcome = ShardStart(
            self._start_shard(
                keys=[self.job_key(job_id), self.shard_key(job_id, shard), self.OUTCOMES_KEY],
                args=[max_deliveries, worker, time.time(), os.getpid()],
            )
        )
        if outcome is ShardStart.EXHAUSTED:
            self.snapshot(job_id)
        return outcome

    def shard_paths(self, job_id: str, shard: int) -> list[str | None]:
        return list(json.loads(self.r.hget(self.shard_key(job_id, shard), "paths") or "[]"))

    def report_progress(self, job_id: str, shard: int, done: int) -> None:
        self._shard_progress(keys=[self.job_key(job_id), self.shard_key(job_id, shard)], args=[done])

    def should_stop(self, job_id: str) -> bool:
        """True once the job is cancelled or failed: shards check this between batches."""
        status = cast(str | None, self.r.hget(self.job_key(job_id), "status"))
        return status is None or JobStatus(status).terminal

    def finish_shard(self, job_id: str, shard: int, worker: str) -> int:
        """Count a shard as succeeded once; returns shards succeeded so far, or -1 if already counted."""
        return int(
            self._finish_shard(keys=[self.job_key(job_id), self.shard_key(job_id, shard)], args=[worker, time.time()])
        )

    def all_shards_succeeded(self, job_id: str) -> bool:
        h = self.r.hmget(self.job_key(job_id), ["shards_succeeded", "num_shards"])
        return h[0] is not None and h[0] == h[1]

    def fail_shard(self, job_id: str, shard: int, error: str) -> None:
        """Record a shard's failure and fail its job with the same message."""
        self.r.hset(self.shard_key(job_id, shard), mapping={"status": JobStatus.FAILED.value, "error": error})
        self.finish(job_id, JobStatus.FAILED, error)

    def snapshot(self, job_id: str) -> None:
        """Copy a terminal job's record to `job.json`, so it outlives Redis keys and Celery results."""
        record = self.get(job_id)
        if record is None:
            return
        write_json_atomic(
            self.record_path(job_id),
            {
                "status": record.status.value,
                "done": record.done,
                "total": record.total,
                "error": record.error,
                "options": record.options,
                "created_at": record.created_at,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "shards": record.shards,
            },
        )
