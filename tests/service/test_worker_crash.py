"""A worker process killed in the middle of a route shard: the shard is redelivered, counted once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from fastapi.testclient import TestClient

from service.jobs import JobStore
from service.redis_store import connect
from service.settings import Settings
from tests.service.support import WorkerProc, wait_for_job

pytestmark = pytest.mark.slow


def test_kill_9_mid_shard_is_redelivered_and_counted_once(
    client: TestClient,
    settings: Settings,
    dataset_id: str,
    one_worker_route: dict[str, object],
    worker: WorkerProc,
) -> None:
    store = JobStore(connect(settings), settings.data_dir)
    job_id = client.post("/route", json={"dataset_id": dataset_id, "scorer": "knn"}).json()["job_id"]
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for i in range(settings.route_shards):
            shard = store.r.hgetall(store.shard_key(job_id, i))
            if shard.get("status") == "running" and shard.get("pid"):
                os.kill(int(shard["pid"]), signal.SIGKILL)  # the prefork child running the shard
                killed = i
                break
        time.sleep(0.02)
    assert killed is not None, "never saw a running shard"
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    shards = job["shards"]
    assert shards[killed]["deliveries"] == 2  # type: ignore[index]
    assert all(s["done"] == s["total"] for s in shards)  # type: ignore[union-attr]
    assert job["progress"] == {"done": 256, "total": 256}
    assert job["result"]["paths"] == one_worker_route["result"]["paths"]  # type: ignore[index]
    assert worker.proc.poll() is None  # the worker's main process survived and forked a new child
