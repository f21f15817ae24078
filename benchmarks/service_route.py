"""A route through the service against the same route in this process, by the number of shards.

`sdr serve` as `make run` deploys it (embedded Redis, one worker with one prefork child of one
torch thread per core) routes the first N Fashion-MNIST test images, uploaded as a zip: `POST
/route`, then `GET /route/{job}` until it has finished; timed from the `POST` to the first answer
that says "succeeded". The baseline is the library's `route()` on the same ImageFolder in this
process, on all cores (the walk one batch per core, two paths scored at a time).

Shards (`SDR_ROUTE_SHARDS`) are what spreads a route over worker processes, and each one walks
the stem and the stages above its subtree again: with one child per core, one shard leaves all
but one core idle, and many shards pay the stem many times (for sdr_tiny the stem is most of a
path's cost, `benchmarks.route_throughput`). Each shard count gets a fresh server, and a route of
a few images first, so that every worker child has loaded the checkpoint before the timed route.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import torch

from benchmarks.report import Section, Table
from benchmarks.route_scaling import FASHION_MNIST, fashion_mnist_folder
from benchmarks.server import CHECKPOINT, Server
from sdr_model import load_checkpoint
from sdr_model.routing import route

SHARD_COUNTS = (4, 16)  # the default, and the next tree level (one shard, one busy child, was 1.7x slower)
WARM_UP_IMAGES = 40


def _route_through(server: Server, archive: Path, timeout_s: float = 600) -> tuple[float, str]:
    """Upload, route, poll: seconds from `POST /route` to "succeeded", and the pick."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        upload = client.post("/datasets", files={"file": (archive.name, archive.read_bytes(), "application/zip")})
        upload.raise_for_status()
        start = time.perf_counter()
        job = client.post("/route", json={"dataset_id": upload.json()["id"]})
        job.raise_for_status()
        while time.perf_counter() - start < timeout_s:
            status = client.get(f"/route/{job.json()['job_id']}").json()
            if status["status"] == "succeeded":
                return time.perf_counter() - start, str(status["result"]["best"]["path"])
            if status["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"route {status['status']}: {status.get('error')}")
            time.sleep(0.2)
    raise TimeoutError(f"route not finished in {timeout_s:.0f} s")


def bench(quick: bool) -> Section:
    section = Section(
        "Service: a route through the API vs route() in-process, by shard count",
        __name__,
        "`sdr serve` (embedded Redis, one prefork child of one torch thread per core) routes the same "
        'Fashion-MNIST ImageFolder as a zip, timed from `POST /route` to "succeeded"; the baseline is '
        "`route()` in this process on all cores.",
    )
    if not FASHION_MNIST.is_dir():
        section.notes.append(f"Skipped: {FASHION_MNIST} is missing (`apt-get install dataset-fashion-mnist`).")
        return section
    images = 250 if quick else 1000
    cores = torch.get_num_threads()
    table = Table(["route", "shards", "wall", "vs route() in-process", "pick"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = fashion_mnist_folder(Path(tmp) / "fmnist", images)
        archive = Path(shutil.make_archive(str(Path(tmp) / "fmnist"), "zip", folder))
        small = fashion_mnist_folder(Path(tmp) / "warm-up", WARM_UP_IMAGES)
        warm_up = Path(shutil.make_archive(str(Path(tmp) / "warm-up"), "zip", small))
        start = time.perf_counter()
        local = route(load_checkpoint(CHECKPOINT), folder)
        local_s = time.perf_counter() - start
        table.add("`route()` in this process", 1, f"{local_s:.1f} s", "1.00x", local.best.path)
        for shards in SHARD_COUNTS:
            server = Server(Path(tmp) / f"data-{shards}", cores, route_shards=str(shards))
            try:
                _route_through(server, warm_up)
                seconds, pick = _route_through(server, archive)
            finally:
                server.stop()
            table.add("through the API", shards, f"{seconds:.1f} s", f"{local_s / seconds:.2f}x", pick)
    section.tables.append(table)
    section.notes.append(
        f"{images} images (4/5 train, 1/5 test), {cores} worker children. `SDR_ROUTE_SHARDS` defaults to 4, "
        "the smallest tree level that gives every child of a 2-core `make run` work; a deployment with more "
        "worker processes sets it to the smallest level at or above their number (`docker-compose.yml`: 16)."
    )
    return section
