"""`sdr serve` in a child process on a loopback port, for the benchmarks that go through the API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.report import REPO
from service.settings import SHIPPED_CHECKPOINT

CHECKPOINT = SHIPPED_CHECKPOINT  # what `make run` serves
FEATURE_BATCH = 64  # the service default SDR_FEATURE_BATCH_SIZE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`sdr serve` in a child process on a free port, with its own data directory."""

    def __init__(self, data_dir: Path, cores: int, **settings: str) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
        env.update(
            SDR_DATA_DIR=str(data_dir),
            SDR_CHECKPOINT=str(CHECKPOINT),
            SDR_WORKER_CONCURRENCY=str(cores),
            SDR_TORCH_THREADS="1",
            SDR_FEATURE_BATCH_SIZE=str(FEATURE_BATCH),
        )
        env.update({f"SDR_{name.upper()}": value for name, value in settings.items()})
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "serve.log"
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdr_model.cli", "serve", "--host", "127.0.0.1", "--port", port],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sdr serve exited:\n" + self.log.read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("sdr serve not ready in 180 s:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
