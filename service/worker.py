"""The Celery worker application: `celery -A service.worker worker` (what `sdr worker` runs).

The worker's main process stays torch-free: it only consumes the queues and supervises its
prefork children, which import the library (and torch) lazily in `service.tasks`. Forking a
process that has already started torch's thread pools is a known source of deadlocks; forking
before torch is imported is not. Prefork (not `solo`) also makes the soft and hard time limits
real: the parent kills a child that overruns.

The main process announces itself with a heartbeat key that `/readyz` looks for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from service.celery_app import create_celery
from service.redis_store import WORKER_KEY_PREFIX, connect
from service.settings import get_settings

__all__ = ["HEARTBEAT_INTERVAL_S", "app"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
_HEARTBEAT_TTL_S = 15

settings = get_settings()
app = create_celery(settings, worker=True)

_stop = threading.Event()


def _heartbeat(hostname: str) -> None:
    client = connect(settings)
    key = f"{WORKER_KEY_PREFIX}{hostname}"
    value = json.dumps(
        {
            "hostname": hostname,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "checkpoint": str(settings.checkpoint_path),
        }
    )
    while not _stop.is_set():
        try:
            if settings.checkpoint_path.is_file():  # a worker without its checkpoint is not ready
                client.set(key, value, ex=_HEARTBEAT_TTL_S)
        except redis.RedisError as exc:
            log.warning("heartbeat: broker unavailable (%s)", exc)
        _stop.wait(HEARTBEAT_INTERVAL_S)
    with contextlib.suppress(redis.RedisError):
        client.delete(key)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}:{os.getpid()}"
    threading.Thread(target=_heartbeat, args=(hostname,), name="sdr-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _stop.set()


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """Each prefork child: bound torch's threads so N children share the CPUs instead of fighting,
    then load and validate the checkpoint (`service.tasks.warm_up`)."""
    import torch

    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)
    torch.set_num_threads(threads)
    from service.tasks import warm_up

    try:
        warm_up()
    except Exception:  # never kill the child over a broker hiccup: tasks retry the load themselves
        log.exception("warm-up failed")
