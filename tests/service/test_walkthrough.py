"""The docs/SERVICE.md walkthrough, run as written against `sdr serve` (embedded Redis + worker).

Also checks the embedded mode's life cycle: SIGTERM stops uvicorn, the worker and Redis, and
exits 0, leaving no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from service.settings import Settings
from tests.service.support import REPO

pytestmark = pytest.mark.slow


def _walkthrough() -> str:
    text = (REPO / "docs" / "SERVICE.md").read_text()
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
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_walkthrough_against_sdr_serve(service_dir: Path, checkpoint: Path) -> None:
    data_dir = service_dir / "serve"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    env.update(SDR_DATA_DIR=str(data_dir), SDR_CHECKPOINT=str(checkpoint),
               PYTHONPATH=str(REPO))
    log_file = service_dir / "serve.log"
    with log_file.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "sdr_model.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert serve.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, "sdr serve not ready in 120 s:\n" + log_file.read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.5)
            out = subprocess.run(["bash", "-euo", "pipefail", "-c", _walkthrough()], cwd=REPO, env={
                **env, "API": f"http://127.0.0.1:{port}"}, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr + log_file.read_text()[-3000:]
            assert "max |timm - api| =" in out.stdout
            assert re.search(r"succeeded 256/256", out.stdout), out.stdout
        finally:
            serve.send_signal(signal.SIGTERM)
            rc = serve.wait(90)
    assert rc == 0, log_file.read_text()[-3000:]
    worker_pids = [int(p) for p in re.findall(r"worker started \(pid (\d+)\)", log_file.read_text())]
    assert worker_pids
    assert not any(_alive(pid) for pid in worker_pids)
    settings = Settings(data_dir=data_dir)
    assert not settings.redis_socket.exists() or subprocess.run(
        [sys.executable, "-c", f"import redis; redis.Redis(unix_socket_path={str(settings.redis_socket)!r}).ping()"],
        capture_output=True).returncode != 0
    assert (data_dir / "redis" / "appendonly.aof").exists() or (data_dir / "redis" / "appendonlydir").exists()
