"""Helpers of the service tests: synthetic image datasets, worker subprocesses, job polling."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.redis_store import WORKER_KEY_PREFIX, connect
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("stripes", "checks", "blobs")


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


class WorkerProc:
    """A `sdr worker` subprocess with its own node name; stopped with a warm shutdown."""

    def __init__(self, settings: Settings, name: str, log_dir: Path, queues: str | None = None) -> None:
        self.name = name
        self.log = (log_dir / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "sdr_model.cli", "worker", "--concurrency", "1", "--hostname", f"{name}@test"]
        if queues:
            cmd += ["--queues", queues]
        self.proc = subprocess.Popen(
            cmd, env=settings_env(settings), stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO
        )
        self.client = connect(settings)

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
