"""Four routes at once from four clients all finish, each with the correct result (issue 8, item 11).

Real Redis and a real `celery worker` subprocess (session fixtures); the four jobs' shards
interleave in one queue, so a job that picked up another job's shard state, or double-counted a
shard, would end with a wrong ranking or wrong progress.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from tests.service.support import wait_for_job

pytestmark = pytest.mark.slow


def _route_once(app: object, dataset_id: str) -> dict[str, object]:
    with TestClient(app) as own_client:  # type: ignore[arg-type]  # one client per caller
        r = own_client.post("/route", json={"dataset_id": dataset_id, "scorer": "knn"})
        assert r.status_code == 202, r.text
        return wait_for_job(own_client, r.json()["job_id"], timeout=600)


def test_four_routes_at_once_all_finish_correctly(
    client: TestClient, dataset_id: str, one_worker_route: dict[str, object]
) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = list(pool.map(lambda _: _route_once(client.app, dataset_id), range(4)))
    expected = one_worker_route["result"]
    assert len({job["job_id"] for job in jobs}) == 4
    for job in jobs:
        assert job["status"] == "succeeded", job
        progress = job["progress"]
        assert progress["done"] == progress["total"] == len(expected["paths"]), progress  # type: ignore[index]
        result = job["result"]
        assert [(p["path"], p["accuracy"]) for p in result["paths"]] == [  # type: ignore[index]
            (p["path"], p["accuracy"])
            for p in expected["paths"]  # type: ignore[index]
        ]
        assert result["best"] == expected["best"]  # type: ignore[index]
