"""A bounded loopback load test of `POST /subnets/{path}/features` (issue 8, row 12).

A real `uvicorn` process (the API as deployed: `uvicorn --factory service.app:create_app`) on
127.0.0.1, in front of the session's Redis and `celery worker`. Closed-loop clients, more than the
API's `SDR_MAX_INFLIGHT_REQUESTS`, post one image each for a fixed time: overload must come back as
429 or 503 with `Retry-After`, never as another 5xx, and every 200 must carry the embedding.
Throughput, p50 and p99 are printed (`pytest -s`); docs/RELIABILITY.md records a run.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.service.support import REPO, WorkerProc, make_image, png_bytes, settings_env, wait_until

pytestmark = pytest.mark.slow

DURATION_S = 12.0
CLIENTS = 12
INFLIGHT = 8  # the server's SDR_MAX_INFLIGHT_REQUESTS: fewer than CLIENTS, so overload is exercised
PATH = "0312"


@dataclass
class Outcome:
    status: int
    seconds: float
    retry_after: bool
    rows: int  # embeddings in a 200 body


@pytest.fixture(scope="module")
def api_server(settings: Settings, worker: WorkerProc, service_dir: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**settings_env(settings), "SDR_MAX_INFLIGHT_REQUESTS": str(INFLIGHT), "SDR_WAIT_TIMEOUT": "60"}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    log = (service_dir / "load-uvicorn.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (service_dir / "load-uvicorn.log").read_text()
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, "uvicorn ready", timeout=120, interval=0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _client_loop(url: str, image: bytes, deadline: float, out: list[Outcome]) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.monotonic() < deadline:
            start = time.monotonic()
            r = client.post(f"/subnets/{PATH}/features", files=[("files", ("x.png", image, "image/png"))])
            seconds = time.monotonic() - start
            rows = len(r.json()["embeddings"]) if r.status_code == 200 else 0
            out.append(Outcome(r.status_code, seconds, "retry-after" in r.headers, rows))
            if r.status_code in (429, 503):
                time.sleep(0.1)  # an impatient client: much sooner than Retry-After asks


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_features_endpoint_under_loopback_load(api_server: str, settings: Settings) -> None:
    image = png_bytes(make_image(1, 4242))
    warm = httpx.post(f"{api_server}/subnets/{PATH}/features", files=[("files", ("x.png", image))], timeout=120)
    assert warm.status_code == 200, warm.text  # sub-net extracted and cached before the clock starts

    outcomes: list[list[Outcome]] = [[] for _ in range(CLIENTS)]
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    deadline = start + DURATION_S
    threads = [
        threading.Thread(target=_client_loop, args=(api_server, image, deadline, outcomes[i])) for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.monotonic() - start
    results = [o for per_client in outcomes for o in per_client]
    statuses = Counter(o.status for o in results)
    ok = [o.seconds for o in results if o.status == 200]
    print(
        f"\nfeatures load: {CLIENTS} clients, SDR_MAX_INFLIGHT_REQUESTS={INFLIGHT}, 1 worker child, "
        f"{os.cpu_count()} CPUs (1-min load {load_before:.1f} at start), {elapsed:.1f} s: "
        f"{dict(sorted(statuses.items()))}; {len(ok) / elapsed:.1f} embeddings/s, "
        f"p50 {_percentile(ok, 0.5) * 1000:.0f} ms, p99 {_percentile(ok, 0.99) * 1000:.0f} ms (200s); "
        f"{len(results) / elapsed:.1f} answers/s in all"
    )
    assert not any(t.is_alive() for t in threads)
    assert ok, statuses
    assert all(o.rows == 1 for o in results if o.status == 200)
    assert set(statuses) <= {200, 429, 503}, statuses  # no other error, and never a 500
    assert all(o.retry_after for o in results if o.status in (429, 503))
    # Still healthy afterwards, and every request's staging folder is gone.
    assert httpx.get(f"{api_server}/readyz", timeout=10).status_code == 200
    assert not list((settings.data_dir / "tmp").glob("features-*"))
