"""The README walkthrough, run as written against `sdr serve` (embedded Redis + worker).

Also checks the embedded mode's life cycle: SIGTERM stops uvicorn, the worker and Redis and exits
0, leaving no process behind; a restarted `sdr serve` still has the dataset and the finished job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.service.support import REPO

pytestmark = pytest.mark.slow


def _walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- walkthrough:begin -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return block.split("```bash\n", 1)[1].rsplit("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie is dead for our purposes
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Serve:
    """`sdr serve` as a user runs it, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        with log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdr_model.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "sdr serve not ready in 120 s:\n" + log_file.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM; asserts a clean exit and that the worker it started is gone."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(90)
        log = self.log_file.read_text()
        assert rc == 0, log[-3000:]
        worker_pids = [int(p) for p in re.findall(r"worker started \(pid (\d+)\)", log)]
        assert worker_pids and not any(_alive(pid) for pid in worker_pids), log[-3000:]


def test_walkthrough_against_sdr_serve(service_dir: Path, checkpoint: Path) -> None:
    data_dir = service_dir / "serve"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    env.update(SDR_DATA_DIR=str(data_dir), SDR_CHECKPOINT=str(checkpoint), PYTHONPATH=str(REPO))
    serve = Serve(env, service_dir / "serve-1.log")
    try:
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _walkthrough()],
            cwd=REPO,
            env={**env, "API": serve.url},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        serve.stop()
    assert out.returncode == 0, out.stdout + out.stderr + serve.log_file.read_text()[-3000:]
    assert "max |timm - api| =" in out.stdout
    assert "succeeded 256/256" in out.stdout, out.stdout
    dataset_id = re.search(r"^dataset (\S+)$", out.stdout, re.M).group(1)  # type: ignore[union-attr]
    job_id = re.search(r"^job (\S+)$", out.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert not (data_dir / "redis" / "redis.sock").exists()  # Redis shut down and removed its socket

    again = Serve(env, service_dir / "serve-2.log")  # the embedded Redis reloads its AOF
    try:
        job = _get(f"{again.url}/route/{job_id}")
        assert job["status"] == "succeeded" and job["result"]["best"]["path"]
        assert _get(f"{again.url}/datasets/{dataset_id}")["id"] == dataset_id
    finally:
        again.stop()
