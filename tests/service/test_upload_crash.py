"""Nothing lost, nothing half-stored (issue 8, row 15): the API process killed mid-upload.

A real `uvicorn --factory service.app:create_app` process (the API as deployed) on 127.0.0.1 with a
data dir and embedded Redis of its own. An upload is cut short by `SIGKILL` of that process at
two moments: while the multipart body is still arriving (sent by hand over a raw socket, half of
it, then nothing), and after the body arrived, while `DatasetStore.add` extracts and checks the
archive in its staging folder. After each, the API is started again on the same `SDR_DATA_DIR`:
no dataset is visible (neither by id nor as a folder under `datasets/`), no staging folder is left
behind in `tmp/`, the spooled part of the body did not outlive the process, and the same upload
now succeeds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.datasets_store import staging_dir, sweep_staging
from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.service.support import REPO, settings_env, wait_until, write_image_tree, zip_tree

IMAGES_PER_CLASS = (700, 100)  # 2400 PNGs: extraction and the decode check take seconds, not milliseconds


class Api:
    """One `uvicorn` process of the API; `TMPDIR` points at a folder of ours, so that whatever it
    spools (Starlette keeps uploads over 1 MiB in a temporary file) can be looked for afterwards."""

    def __init__(self, settings: Settings, spool: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, env={**settings_env(settings), "TMPDIR": str(spool)}, cwd=REPO, stdout=out, stderr=out
            )

        def up() -> bool:
            assert self.proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{self.url}/livez", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, "uvicorn up", timeout=120, interval=0.2)

    def kill(self) -> None:
        """SIGKILL: no handler, no `finally`, no cleanup runs in the API process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def open_files_under(self, folder: Path) -> list[str]:
        """Files the process has open under `folder` (an `O_TMPFILE` reads `folder/#123 (deleted)`)."""
        found = []
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(folder) + "/"):
                found.append(target)
        return found


@pytest.fixture(scope="module")
def archive(service_dir: Path) -> bytes:
    return zip_tree(write_image_tree(service_dir / "crash-src", per_class=IMAGES_PER_CLASS, seed=5))


@pytest.fixture
def deployment(settings: Settings, service_dir: Path) -> Iterator[tuple[Settings, Path]]:
    """A data dir and embedded Redis of its own (short path: the Redis socket lives under it), and
    an empty folder for the API's TMPDIR."""
    root = service_dir / f"up-{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={"data_dir": root / "data"})
    own.ensure_dirs()
    spool = root / "spool"
    spool.mkdir()
    server = EmbeddedRedis(own)
    server.start()
    try:
        yield own, spool
    finally:
        server.stop()


def _multipart(archive: bytes) -> tuple[bytes, bytes]:
    """Request head and body of `POST /datasets` with `archive` as the field `file`."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    body += archive + f"\r\n--{boundary}--\r\n".encode()
    head = (
        "POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _assert_nothing_visible(api: Api, settings: Settings, spool: Path, dataset_id: str) -> None:
    r = httpx.get(f"{api.url}/datasets/{dataset_id}", timeout=30)
    assert r.status_code == 404, r.text
    assert list((settings.data_dir / "datasets").iterdir()) == []
    assert list((settings.data_dir / "tmp").iterdir()) == []
    assert list(spool.iterdir()) == []


def _upload_works(api: Api, archive: bytes, dataset_id: str) -> None:
    r = httpx.post(f"{api.url}/datasets", files={"file": ("big.zip", archive, "application/zip")}, timeout=300)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == dataset_id and r.json()["existing"] is False
    assert r.json()["num_images"] == 3 * sum(IMAGES_PER_CLASS)
    assert httpx.get(f"{api.url}/datasets/{dataset_id}", timeout=30).status_code == 200


def test_api_killed_while_the_upload_body_arrives(deployment: tuple[Settings, Path], archive: bytes) -> None:
    """Half the body sent, the server seen spooling it to a file, then SIGKILL."""
    settings, spool = deployment
    dataset_id = "ds_" + hashlib.sha256(archive).hexdigest()[:24]
    log = settings.data_dir.parent / "uvicorn.log"
    head, body = _multipart(archive)
    api = Api(settings, spool, log)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
            sock.sendall(head + body[: len(body) // 2])
            # The part already received is being written: Starlette rolled it over to a file.
            spooled = wait_until(lambda: api.open_files_under(spool), "the API spooling the upload", timeout=60)
            api.kill()
        assert all(name.endswith("(deleted)") for name in spooled), spooled  # never had a visible name
    finally:
        api.stop()

    _restart_and_check(settings, spool, log, archive, dataset_id)


def _restart_and_check(settings: Settings, spool: Path, log: Path, archive: bytes, dataset_id: str) -> None:
    """After a kill: a fresh API on the same data dir shows nothing of the lost upload, and takes it anew."""
    api = Api(settings, spool, log)
    try:
        _assert_nothing_visible(api, settings, spool, dataset_id)
        _upload_works(api, archive, dataset_id)
    finally:
        api.stop()


def test_api_killed_while_it_extracts_the_upload(deployment: tuple[Settings, Path], archive: bytes) -> None:
    """The whole body sent; SIGKILL once `DatasetStore.add` is extracting into its staging folder,
    before the rename that commits the dataset. The staging folder is left behind by the dead
    process; the next start of the API sweeps it."""
    settings, spool = deployment
    dataset_id = "ds_" + hashlib.sha256(archive).hexdigest()[:24]
    log = settings.data_dir.parent / "uvicorn.log"
    tmp = settings.data_dir / "tmp"
    head, body = _multipart(archive)
    api = Api(settings, spool, log)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
            sock.sendall(head + body)
            staging = wait_until(
                lambda: [p for p in tmp.glob("upload-*/dataset/data") if any(p.iterdir())],
                "extraction into a staging folder",
                timeout=120,
                interval=0.002,
            )
            api.kill()
        assert staging[0].parent.parent.is_dir(), "killed too late: the staging folder was already gone"
        assert list((settings.data_dir / "datasets").iterdir()) == [], "killed too late: the dataset was committed"
        print(f"killed with {sum(1 for _ in staging[0].rglob('*.png'))} images in the staging folder")
    finally:
        api.stop()

    _restart_and_check(settings, spool, log, archive, dataset_id)


def test_the_sweep_takes_only_the_folders_of_dead_processes(tmp_path: Path) -> None:
    """What makes the start-up sweep safe where several API processes share a data dir: a folder
    whose owner holds its lock stays, so does a fresh one whose lock is not taken yet, and so does
    anything that is not a staging folder; an unlocked one goes."""
    (tmp_path / "manifest-0.jsonl").write_text("{}\n")  # a file, even with a staging prefix
    (tmp_path / "other").mkdir()
    fresh = tmp_path / "upload-fresh"
    fresh.mkdir()
    with staging_dir(tmp_path, "upload-") as live:
        dead = tmp_path / "features-dead"
        dead.mkdir()
        (dead / ".owner.lock").touch()  # as a killed process leaves it: the file, no lock
        assert sweep_staging(tmp_path) == [dead]
        assert live.is_dir() and fresh.is_dir()
    assert not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest-0.jsonl", "other", "upload-fresh"]
    os.utime(fresh, (time.time() - 3600, time.time() - 3600))
    assert sweep_staging(tmp_path) == [fresh]
