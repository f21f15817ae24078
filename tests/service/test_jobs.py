"""Job and shard state in Redis: redelivery, cancel and delivery caps cannot corrupt a job."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.embedded import EmbeddedRedis
from service.jobs import JobStatus, JobStore, ShardStart
from service.redis_store import connect
from service.settings import Settings


@pytest.fixture
def store(settings: Settings, redis_server: EmbeddedRedis) -> JobStore:
    return JobStore(connect(settings), settings.data_dir)


def _job(store: JobStore, shards: int = 2) -> str:
    job_id = store.new_id()
    paths: list[list[str | None]] = [[None, "0000", "0001"], ["1000", "1001"]][:shards]
    store.create(job_id, {"dataset_id": "x"}, paths, ["0", "1"][:shards])
    return job_id


def test_a_redelivered_shard_counts_once(store: JobStore) -> None:
    job_id = _job(store)
    assert store.start_shard(job_id, 0, 3, "w1") is ShardStart.RUN
    store.report_progress(job_id, 0, 1)
    # The worker died; the broker redelivers shard 0 to another worker, which starts over.
    assert store.start_shard(job_id, 0, 3, "w2") is ShardStart.RUN
    store.report_progress(job_id, 0, 1)  # absolute, not added: still 1
    assert store.get(job_id).done == 1  # type: ignore[union-attr]
    assert store.finish_shard(job_id, 0, "w2") == 1
    assert store.finish_shard(job_id, 0, "w1") == -1  # the first delivery finishing late changes nothing
    assert store.start_shard(job_id, 0, 3, "w3") is ShardStart.ALREADY_DONE  # ack lost after finishing
    record = store.get(job_id)
    assert record is not None and record.done == 2 and record.total == 4
    assert record.shards[0]["deliveries"] == 2 and record.status is JobStatus.RUNNING
    assert not store.all_shards_succeeded(job_id)
    store.start_shard(job_id, 1, 3, "w1")
    store.finish_shard(job_id, 1, "w1")
    assert store.all_shards_succeeded(job_id)


def test_cancelled_stays_cancelled(store: JobStore) -> None:
    job_id = _job(store)
    store.start_shard(job_id, 0, 3, "w1")
    before = store.outcome_counts().get("cancelled", 0)
    assert store.cancel(job_id) is True
    assert store.cancel(job_id) is False
    assert store.should_stop(job_id)
    store.finish_shard(job_id, 0, "w1")
    assert store.finish(job_id, JobStatus.SUCCEEDED) == 0
    assert store.start_shard(job_id, 1, 3, "w1") is ShardStart.JOB_OVER
    assert store.get(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert store.outcome_counts()["cancelled"] == before + 1
    assert store.record_path(job_id).is_file()  # snapshot for after Redis forgets


def test_delivery_cap_fails_the_job(store: JobStore) -> None:
    job_id = _job(store)
    for _ in range(2):
        assert store.start_shard(job_id, 1, 2, "w1") is ShardStart.RUN
    assert store.start_shard(job_id, 1, 2, "w1") is ShardStart.EXHAUSTED
    record = store.get(job_id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and "delivered 2 times" in record.error


def test_body_limits_answer_413_while_streaming(settings: Settings, redis_server: EmbeddedRedis) -> None:
    from service.app import create_app

    small = settings.model_copy(update={"max_upload_bytes": 1000, "max_json_bytes": 500})
    with TestClient(create_app(small)) as c:
        r = c.post("/datasets", files={"file": ("big.zip", b"x" * 200_000)})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        r = c.post("/route", content=b"{" + b" " * 2000 + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for _ in range(100):
                yield b" " * 100

        r = c.post("/route", content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and "limit of 500 bytes" in r.json()["detail"]


def test_overload_is_429_with_retry_after(settings: Settings, redis_server: EmbeddedRedis, dataset_id: str) -> None:
    from service.app import create_app
    from tests.service.support import make_image, png_bytes

    app = create_app(settings.model_copy(update={"max_queued_tasks": 1}))
    with TestClient(app) as c:
        r = c.post("/route", json={"dataset_id": dataset_id})
        assert r.status_code == 429 and r.headers["retry-after"] and "SDR_MAX_QUEUED_TASKS" in r.json()["detail"]
        slots = app.state.service.inflight
        with contextlib.ExitStack() as held:
            for _ in range(settings.max_inflight_requests):
                held.enter_context(slots.slot())
            r = c.post("/subnets/0000/features", files=[("files", ("a.png", png_bytes(make_image(0, 1))))])
            assert r.status_code == 429 and r.headers["retry-after"]
            assert c.get("/subnets/3333/weights").status_code == 429


def test_broker_down_is_503_json_not_500(settings: Settings, dataset_id: str) -> None:
    from service.app import create_app

    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
        assert c.get("/livez").status_code == 200
        r = c.post("/route", json={"dataset_id": dataset_id})
        assert r.status_code == 503 and r.headers["retry-after"] and "broker" in r.json()["detail"]
        assert c.get("/route/" + "0" * 32).status_code == 503
        assert c.get("/metrics").status_code == 200
