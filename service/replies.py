"""Request/response over the broker for tasks an HTTP request waits on (weights, features).

The API sends the task by name with a fresh reply key and waits on that Redis list with short
`BLPOP`s; the worker pushes one JSON reply and lets it expire. This avoids Celery's result
consumer (whose pub/sub drainer is not meant to be shared by many request threads) and keeps the
API's wait bounded: past `SDR_WAIT_TIMEOUT` the client gets a 503 with `Retry-After`, and the task
itself expires in the queue instead of running for nobody.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis
from celery import Celery

from service.redis_store import KEY_PREFIX

__all__ = ["REPLY_TTL_S", "WorkerBusy", "call_worker", "send_reply"]

REPLY_TTL_S = 600


class WorkerBusy(RuntimeError):
    """No worker answered in time (all busy or none running)."""


def call_worker(
    celery: Celery, client: redis.Redis, task: str, kwargs: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Send `task` and wait for its reply dict; raises `WorkerBusy` after `timeout` seconds."""
    reply_key = f"{KEY_PREFIX}reply:{uuid.uuid4().hex}"
    kwargs = {**kwargs, "reply_key": reply_key}
    celery.send_task(task, kwargs=kwargs, expires=timeout, argsrepr="()", kwargsrepr=_brief_repr(kwargs))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        # Short waits: the client's socket timeout stays small, so a dead broker fails fast.
        item = client.blpop([reply_key], timeout=max(1, min(2, int(left))))
        if item is not None:
            reply: dict[str, Any] = json.loads(item[1])
            return reply
    raise WorkerBusy(f"no worker answered {task} within {timeout:g} s")


def _brief_repr(kwargs: dict[str, Any]) -> str:
    """The task's kwargs as Celery's logs and events show them, each list as its length.

    Given no repr, Celery builds one with its `saferepr`, which walks every element: for a features
    task's 64 image sizes that was a third of `send_task` (0.2 of 0.6 ms), on the API's request path.
    """
    fields = (f"{k!r}: <{len(v)} items>" if isinstance(v, list) else f"{k!r}: {v!r}" for k, v in kwargs.items())
    return "{" + ", ".join(fields) + "}"


def send_reply(client: redis.Redis, reply_key: str, reply: dict[str, Any]) -> None:
    """Worker side: deliver the reply; it expires if the API has given up waiting."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(reply_key, json.dumps(reply))
    pipe.expire(reply_key, REPLY_TTL_S)
    pipe.execute()
