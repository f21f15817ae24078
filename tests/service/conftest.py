"""Fixtures for the service's integration tests: a real Redis, real `celery worker` subprocesses.

Started once per session (workers take seconds to import torch): the embedded Redis exactly as
`sdr serve` runs it, a tiny random-init `sdr_tiny` checkpoint, one worker subprocess (`sdr worker`,
the production entry point), and the API in-process through `TestClient`. Never eager mode.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.service.support import WorkerProc, wait_for_job, write_image_tree, zip_tree


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    # Short, under /tmp: the embedded Redis socket path must stay under ~100 characters.
    path = Path(tempfile.mkdtemp(prefix="sdrsvc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def checkpoint(service_dir: Path) -> Path:
    import torch

    from sdr_model import create_model, default_preprocessing, save_checkpoint

    torch.manual_seed(0)
    file = service_dir / "sdr_tiny_test.safetensors"
    save_checkpoint(
        file,
        create_model("sdr_tiny"),
        preprocessing=default_preprocessing("sdr_tiny"),
        provenance={"trained": False, "init": "random (seed 0)"},
    )
    return file


@pytest.fixture(scope="session")
def data_root(service_dir: Path) -> Path:
    """An allow-listed folder (SDR_DATA_ROOTS) holding an image tree for inline manifests."""
    return write_image_tree(service_dir / "shared", seed=7)


@pytest.fixture(scope="session")
def settings(service_dir: Path, checkpoint: Path, data_root: Path) -> Settings:
    return Settings(
        data_dir=service_dir / "data",
        checkpoint=checkpoint,
        route_shards=4,
        worker_concurrency=1,
        wait_timeout=90,
        data_roots=[data_root],
    )


@pytest.fixture(scope="session")
def redis_server(settings: Settings) -> Iterator[EmbeddedRedis]:
    settings.ensure_dirs()
    server = EmbeddedRedis(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(settings: Settings, redis_server: EmbeddedRedis, service_dir: Path) -> Iterator[WorkerProc]:
    w = WorkerProc(settings, "w1", service_dir)
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def client(settings: Settings, worker: WorkerProc) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def dataset_archive(service_dir: Path) -> bytes:
    return zip_tree(write_image_tree(service_dir / "upload-src", seed=1))


@pytest.fixture(scope="session")
def dataset_id(client: TestClient, dataset_archive: bytes) -> str:
    r = client.post("/datasets", files={"file": ("tiny.zip", dataset_archive, "application/zip")})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="session")
def one_worker_route(client: TestClient, dataset_id: str) -> dict[str, object]:
    """A full 256-path route on the uploaded dataset, while only worker w1 runs."""
    r = client.post("/route", json={"dataset_id": dataset_id, "scorer": "knn", "screen": False})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/route/{r.json()['job_id']}"
    job = wait_for_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job
