"""Helpers of the service tests: synthetic image datasets, worker subprocesses, job polling."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.embedded import EmbeddedRedis
from service.jobs import JobStore
from service.redis_store import WORKER_KEY_PREFIX, connect
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("stripes", "checks", "blobs")
T = TypeVar("T")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess build the same `Settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    env.update(
        SDR_DATA_DIR=str(settings.data_dir),
        SDR_CHECKPOINT=str(settings.checkpoint_path),
        SDR_ROUTE_SHARDS=str(settings.route_shards),
        SDR_WORKER_CONCURRENCY=str(settings.worker_concurrency),
        SDR_DATA_ROOTS=",".join(str(r) for r in settings.data_roots),
        SDR_LOG_LEVEL="INFO",
        PYTHONPATH=str(REPO),
    )
    if settings.broker_url:
        env["SDR_BROKER_URL"] = settings.broker_url
    return env


def make_image(label: int, seed: int, size: int = 28) -> Image.Image:
    """A grayscale image whose pattern depends on the class: easy for any feature extractor."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    if label == 0:
        base = (yy // 3) % 2 * 200
    elif label == 1:
        base = ((yy // 4 + xx // 4) % 2) * 200
    else:
        base = 200 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 5) ** 2))
    pixels = np.clip(base + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_image_tree(root: Path, per_class: tuple[int, int] = (8, 3), seed: int = 0) -> Path:
    """`root/train/<class>/*.png` and `root/test/<class>/*.png`."""
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(c, seed * 100_000 + c * 1000 + i + (500 if split == "test" else 0)).save(
                    folder / f"{i:03d}.png"
                )
    return root


def zip_tree(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zi = zipfile.ZipInfo(str(p.relative_to(root)), date_time=(2020, 1, 1, 0, 0, 0))
                zf.writestr(zi, p.read_bytes())
    return buf.getvalue()


def tar_gz_tree(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(root, arcname=".")
    return buf.getvalue()


def tree_manifest(root: Path) -> list[dict[str, str]]:
    """An inline route manifest of `write_image_tree(root)` (the server's SDR_DATA_ROOTS must hold `root`)."""
    return [
        {"path": str(p), "label": p.parent.name, "split": split}
        for split in ("train", "test")
        for p in sorted((root / split).rglob("*.png"))
    ]


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 120.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy, and return that; `TimeoutError` naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid`: a worker main process's prefork children (this kernel has no
    /proc/<pid>/task/<tid>/children, so scan /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead: its memory is already released)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def rss_mib(pid: int) -> float:
    """Resident memory of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


class WorkerProc:
    """A `sdr worker` subprocess with its own node name; stopped with a warm shutdown.

    `env` adds worker-only settings (time limits, delivery cap, the fault-injection hook) on top of
    the ones `settings_env` derives from `settings`.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        log_dir: Path,
        queues: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.hostname = f"{name}@test"
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "sdr_model.cli", "worker", "--concurrency", "1", "--hostname", self.hostname]
        if queues:
            cmd += ["--queues", queues]
        self.proc = subprocess.Popen(
            cmd, env={**settings_env(settings), **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO
        )
        self.client = connect(settings)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; see {self.log.name}")
            if self.client.exists(f"{WORKER_KEY_PREFIX}{self.name}@test"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} sent no heartbeat within {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for_job(
    client: TestClient, job_id: str, timeout: float = 240.0, headers: dict[str, str] | None = None
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/route/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return dict(body)
        time.sleep(0.25)
    raise TimeoutError(f"route job {job_id} did not finish in {timeout} s")


@dataclass
class PrivateService:
    """A deployment of its own beside the session's: see `private_service`."""

    settings: Settings
    redis: EmbeddedRedis
    client: TestClient
    store: JobStore
    root: Path

    def worker(self, name: str, queues: str | None = None, env: dict[str, str] | None = None) -> WorkerProc:
        """Start a `sdr worker` on this deployment's Redis and wait for its heartbeat."""
        w = WorkerProc(self.settings, name, self.root, queues=queues, env=env)
        try:
            w.wait_ready()
        except BaseException:
            w.stop()
            raise
        return w

    def route(self, data_root: Path, **options: Any) -> str:
        """POST /route on an inline manifest of `data_root`; the job id."""
        r = self.client.post("/route", json={"manifest": tree_manifest(data_root), "scorer": "knn", **options})
        assert r.status_code == 202, r.text
        return str(r.json()["job_id"])

    def running_pid(self, job_id: str, shard: int, timeout: float = 120.0) -> int:
        """The pid of the prefork child once `shard` of `job_id` runs (recorded by `start_shard`)."""

        def pid() -> int | None:
            h = self.store.r.hgetall(self.store.shard_key(job_id, shard))
            return int(h["pid"]) if h.get("status") == "running" and h.get("pid") else None

        return wait_until(pid, f"shard {shard} of {job_id} running", timeout, interval=0.02)


@contextlib.contextmanager
def private_service(base: Settings, root: Path, **updates: Any) -> Iterator[PrivateService]:
    """Its own data dir and embedded Redis, the session's checkpoint and data roots, the API in-process.

    Fault tests stop Redis, restart workers or start workers with tiny time limits; on a private
    Redis no session worker takes their shards and nothing they break reaches other tests.
    `root` must be short: the Redis socket path lives under it.
    """
    settings = base.model_copy(update={"data_dir": root, **updates})
    settings.ensure_dirs()
    server = EmbeddedRedis(settings)
    server.start()
    try:
        from service.app import create_app

        with TestClient(create_app(settings)) as client:
            yield PrivateService(settings, server, client, JobStore(connect(settings), settings.data_dir), root)
    finally:
        server.stop()
