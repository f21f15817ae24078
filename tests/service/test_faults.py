"""Faults with real processes: Redis restarted, a shard that always crashes, time limits, worker restarts.

Each test runs its own deployment (`private_service`: own data dir and embedded Redis, the API
in-process) with workers started for it, so stopping Redis or a worker, or a worker with a
two-second time limit, never touches the session's worker or other tests' jobs. Issue 8, rows 1,
8, 9 and 10 of docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from service.celery_app import INTERACTIVE_QUEUE, ROUTE_QUEUE, create_celery
from service.metrics import queued_tasks
from service.redis_store import WORKER_KEY_PREFIX
from service.settings import Settings
from service.tasks import FAULT_CRASH_PREFIX_ENV
from tests.service.support import (
    PrivateService,
    WorkerProc,
    alive,
    children_of,
    private_service,
    rss_mib,
    wait_for_job,
    wait_until,
)

pytestmark = pytest.mark.slow

# One path per prefix subtree: shards "0", "1" and "2" of a 4-shard route, each a second or two.
THREE_SHARDS = ["0000", "1000", "2000"]


def _shard(svc: PrivateService, job_id: str, index: int) -> dict[str, str]:
    return cast(dict[str, str], svc.store.r.hgetall(svc.store.shard_key(job_id, index)))


def _unacked(svc: PrivateService) -> int:
    """Messages a worker has taken but not acknowledged (kombu's Redis transport keeps them here)."""
    return int(svc.store.r.hlen("unacked"))


def test_a_shard_that_kills_its_worker_every_time_fails_the_job(
    settings: Settings, service_dir: Path, data_root: Path
) -> None:
    """Row 8: the shard on prefix "1" SIGKILLs its prefork child on every delivery (the test-only
    hook in `service.tasks`); the broker redelivers it (acks_late, reject_on_worker_lost), the
    worker forks a new child each time, and the delivery cap ends the job as failed."""
    with private_service(settings, service_dir / "crash", route_shards=4) as svc:
        worker = svc.worker("crashy", env={FAULT_CRASH_PREFIX_ENV: "1", "SDR_MAX_DELIVERIES": "2"})
        try:
            job_id = svc.route(data_root, paths=["1000"])  # one shard, on prefix "1"
            job = wait_for_job(svc.client, job_id, timeout=300)
            assert job["status"] == "failed", job
            assert "shard 1 was delivered 2 times without finishing" in str(job["error"]), job["error"]
            crashed = _shard(svc, job_id, 0)
            assert crashed["status"] == "failed" and int(crashed["deliveries"]) == 3  # 2 runs, then refused
            # Each run really died of SIGKILL in the child, and the worker itself survived both.
            log = worker.log_text()
            assert log.count("(prefix '1') kills its process") == 2, log[-3000:]
            assert log.count("signal 9 (SIGKILL)") >= 2, log[-3000:]
            assert worker.proc.poll() is None
            # The refused delivery was acknowledged: nothing left to loop on.
            wait_until(lambda: queued_tasks(svc.store.r, ROUTE_QUEUE) == 0 and _unacked(svc) == 0, "queue drained")
            time.sleep(2)
            assert int(_shard(svc, job_id, 0)["deliveries"]) == 3
        finally:
            worker.stop()


def test_a_shard_whose_result_cannot_be_written_fails_the_job(
    settings: Settings, service_dir: Path, data_root: Path
) -> None:
    """An error that escapes the shard's own handling (here its result file cannot be written, as
    on a full disk) fails the job with that error instead of leaving it "running" for ever."""
    with private_service(settings, service_dir / "unwritable", route_shards=4) as svc:
        job_id = svc.route(data_root, paths=["1000"])  # queued: no worker runs yet
        blocker = svc.store.shard_result_path(job_id, 0)
        blocker.mkdir(parents=True)  # a folder where the result file goes: the final rename fails
        worker = svc.worker("unwritable")
        try:
            job = wait_for_job(svc.client, job_id, timeout=300)
            assert job["status"] == "failed", job
            assert "shard 0 failed outside the routing engine" in str(job["error"]), job["error"]
            assert "Directory" in str(job["error"]), job["error"]
            assert _shard(svc, job_id, 0)["status"] == "failed"
            assert worker.proc.poll() is None
        finally:
            worker.stop()


# --- time limits (row 9) --------------------------------------------------------------------------

SOFT_S, HARD_S = 2, 8


@pytest.fixture(scope="module")
def timed(settings: Settings, service_dir: Path) -> Iterator[tuple[PrivateService, WorkerProc]]:
    """A worker with a 2 s soft and 8 s hard time limit; DEBUG logging, whose "Task accepted ...
    pid:N" line says which child runs a task from its first instruction on (the limits' clock starts
    at that acceptance, before `route_shard` records anything in Redis).

    Its tests route all 257 feature sets as one shard (`route_shards=1`), about two seconds of work,
    so the test stops the child while the shard still runs: a shard of two paths on these 33 images
    once finished between the log line and the SIGSTOP, on a busy machine, and its job succeeded."""
    with private_service(settings, service_dir / "timed", route_shards=1) as svc:
        env = {"SDR_TASK_SOFT_TIME_LIMIT": str(SOFT_S), "SDR_TASK_TIME_LIMIT": str(HARD_S), "SDR_LOG_LEVEL": "DEBUG"}
        worker = svc.worker("timed", env=env)
        try:
            yield svc, worker
        finally:
            worker.stop()


def _accepted_child(worker: WorkerProc, seen: int) -> int:
    """The pid in the first "Task accepted: sdr.route_shard" log line after the first `seen` ones."""

    def pid() -> int | None:
        found = re.findall(r"Task accepted: sdr\.route_shard\[[^\]]+\] pid:(\d+)", worker.log_text())
        return int(found[seen]) if len(found) > seen else None

    return wait_until(pid, "a route shard accepted by a child", timeout=120, interval=0.02)


def _tree_rss(worker: WorkerProc) -> float:
    """Resident MiB of a worker's main process and its live children."""
    return sum(rss_mib(pid) for pid in [worker.proc.pid, *children_of(worker.proc.pid)])


def _accepted_count(worker: WorkerProc) -> int:
    return worker.log_text().count("Task accepted: sdr.route_shard")


def test_a_shard_over_the_soft_time_limit_fails_its_job_as_a_timeout(
    timed: tuple[PrivateService, WorkerProc], data_root: Path
) -> None:
    """The child is stopped (a shard making no progress) until the worker logs the soft limit,
    then resumed: `SoftTimeLimitExceeded` lands wherever the shard was, and the job fails saying so.
    The child survives (the soft limit lets it clean up) and the shard is not redelivered."""
    svc, worker = timed
    seen, warned = _accepted_count(worker), worker.log_text().count(f"Soft time limit ({SOFT_S}s) exceeded")
    job_id = svc.route(data_root)  # all paths: see `timed`
    child = _accepted_child(worker, seen)
    os.kill(child, signal.SIGSTOP)
    try:
        wait_until(
            lambda: worker.log_text().count(f"Soft time limit ({SOFT_S}s) exceeded") > warned,
            "the worker's soft time limit warning",
            timeout=60,
        )
    finally:
        os.kill(child, signal.SIGCONT)
    job = wait_for_job(svc.client, job_id, timeout=120)
    assert job["status"] == "failed", job
    assert job["error"] == f"shard 0 exceeded the time limit of {SOFT_S} s (SDR_TASK_SOFT_TIME_LIMIT)"
    assert alive(child) and child in children_of(worker.proc.pid)
    wait_until(lambda: queued_tasks(svc.store.r, ROUTE_QUEUE) == 0 and _unacked(svc) == 0, "shard acknowledged")
    assert int(_shard(svc, job_id, 0).get("deliveries", 0)) <= 1


def test_a_shard_over_the_hard_time_limit_is_killed_and_its_child_replaced(
    timed: tuple[PrivateService, WorkerProc], data_root: Path
) -> None:
    """The child stays stopped (hung in native code, deaf to the soft limit's signal): the worker's
    main process kills it at the hard limit, fails the job from `on_failure`, and forks a fresh
    child; the killed child's memory goes back to the system with it."""
    svc, worker = timed
    seen = _accepted_count(worker)
    job_id = svc.route(data_root)  # all paths: see `timed`
    child = _accepted_child(worker, seen)
    os.kill(child, signal.SIGSTOP)
    held = rss_mib(child)
    before = _tree_rss(worker)
    warmed = worker.log_text().count("service.tasks: loaded ")
    started = time.monotonic()
    job = wait_for_job(svc.client, job_id, timeout=120)
    waited = time.monotonic() - started
    assert job["status"] == "failed", job
    assert job["error"] == f"shard 0 was killed at the hard time limit of {HARD_S} s (SDR_TASK_TIME_LIMIT)"
    wait_until(lambda: not alive(child), "the stopped child gone", timeout=30)
    fresh = wait_until(lambda: [c for c in children_of(worker.proc.pid) if c != child], "a new child", timeout=60)
    assert worker.proc.poll() is None
    wait_until(lambda: queued_tasks(svc.store.r, ROUTE_QUEUE) == 0 and _unacked(svc) == 0, "shard acknowledged")
    time.sleep(2)
    assert int(_shard(svc, job_id, 0).get("deliveries", 0)) <= 1  # acknowledged, never redelivered
    # The replacement loads the checkpoint again; the worker as a whole holds no more than before.
    wait_until(lambda: worker.log_text().count("service.tasks: loaded ") > warmed, "replacement warmed up", 120)
    after = _tree_rss(worker)
    print(
        f"\nhard time limit: child {child} ({held:.0f} MiB resident) killed, job failed {waited:.1f} s after "
        f"the stop; worker main + children {before:.0f} MiB before, {after:.0f} MiB once child {fresh[0]} warmed up"
    )
    assert after < before * 1.25, (before, after)


# --- cancel across a worker restart (row 10) -------------------------------------------------------


def test_a_cancelled_job_stays_cancelled_across_a_worker_restart(
    settings: Settings, service_dir: Path, data_root: Path
) -> None:
    """Stop the worker mid-job (warm shutdown: it finishes the shard it runs and takes no other),
    cancel while no worker runs, start a new worker: it receives the job's remaining shards from the
    broker and runs none of them."""
    with private_service(settings, service_dir / "cancel", route_shards=4) as svc:
        job_id = svc.route(data_root, paths=["0000", "1000", "2000", "3000"])  # four shards
        first = svc.worker("before")
        try:
            svc.running_pid(job_id, 0)
        finally:
            first.stop()
        left = queued_tasks(svc.store.r, ROUTE_QUEUE)
        assert left >= 1 and _unacked(svc) == 0, "the stopped worker took every shard; nothing to test"
        r = svc.client.delete(f"/route/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        shards_at_cancel = r.json()["shards"]
        assert sum(s["status"] == "queued" for s in shards_at_cancel) == left
        second = svc.worker("after")
        try:
            wait_until(lambda: second.log_text().count("'outcome': 'job_over'") == left, "the new worker's deliveries")
            wait_until(lambda: queued_tasks(svc.store.r, ROUTE_QUEUE) == 0 and _unacked(svc) == 0, "queue drained")
        finally:
            second.stop()
        job = svc.client.get(f"/route/{job_id}").json()
        assert job["status"] == "cancelled" and job["result"] is None and job["error"] is None
        assert job["shards"] == shards_at_cancel  # no shard started, finished or was counted since the cancel
        for shard in job["shards"]:
            if shard["status"] == "queued":
                assert shard["deliveries"] == 0 and not svc.store.shard_result_path(job_id, shard["index"]).exists()
        assert not svc.store.result_path(job_id).exists()


# --- Redis stopped and started again (row 1) -------------------------------------------------------


def test_redis_restart_readyz_and_a_queued_job_survive(settings: Settings, service_dir: Path, data_root: Path) -> None:
    """Stop the service's Redis: `/readyz` answers 503 (JSON, Retry-After) and job reads 503. Start
    it again on the same data dir: its AOF brings back the job and its queued shards, `/readyz` is
    200 once the worker's heartbeat is back, and the worker that lived through the outage finishes
    the job."""
    with private_service(settings, service_dir / "restart", route_shards=4) as svc:
        # Serves the interactive queue only, so the route job stays queued until we ask.
        worker = svc.worker("survivor", queues=INTERACTIVE_QUEUE)
        try:
            wait_until(lambda: svc.client.get("/readyz").status_code == 200, "ready before the outage", 180)
            job_id = svc.route(data_root, paths=THREE_SHARDS)
            assert queued_tasks(svc.store.r, ROUTE_QUEUE) == 3

            svc.redis.stop()
            down = svc.client.get("/readyz")
            assert down.status_code == 503 and down.headers["retry-after"], down.text
            assert down.json()["status"] == "unavailable" and down.json()["checks"]["broker"] is False
            assert "broker unreachable" in down.json()["detail"]["broker"]
            read = svc.client.get(f"/route/{job_id}")
            assert read.status_code == 503 and "broker unavailable" in read.json()["detail"]
            assert svc.client.get("/livez").status_code == 200

            svc.redis.start()
            assert svc.store.get(job_id).status.value == "queued"  # type: ignore[union-attr]
            assert queued_tasks(svc.store.r, ROUTE_QUEUE) == 3
            # Forget the heartbeat the AOF kept: 200 now needs the worker to have reconnected.
            svc.store.r.delete(f"{WORKER_KEY_PREFIX}{worker.hostname}")
            assert svc.client.get("/readyz").json()["checks"]["worker"] is False
            wait_until(lambda: svc.client.get("/readyz").status_code == 200, "ready after the restart", 60)

            control = create_celery(svc.settings).control
            wait_until(
                lambda: control.add_consumer(ROUTE_QUEUE, destination=[worker.hostname], reply=True, timeout=2),
                "the worker consuming the route queue",
                timeout=60,
            )
            job = wait_for_job(svc.client, job_id, timeout=240)
            assert job["status"] == "succeeded", job
            assert job["progress"] == {"done": 3, "total": 3}
            shards = cast(list[dict[str, object]], job["shards"])
            assert {s["worker"] for s in shards} == {worker.hostname}
            assert worker.proc.poll() is None
        finally:
            worker.stop()
