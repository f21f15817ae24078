"""`service.replies`: the task message the API sends for a request-bound task, read back from the real broker."""

from __future__ import annotations

import base64
import json

import pytest

from service.celery_app import TASK_FEATURES, create_celery
from service.embedded import EmbeddedRedis
from service.redis_store import connect
from service.replies import WorkerBusy, call_worker
from service.settings import Settings

QUEUE = "sdr.test-replies"  # no worker consumes it: the message stays in Redis to be read


def test_the_task_message_names_lists_by_length_and_carries_them_whole(
    settings: Settings, redis_server: EmbeddedRedis
) -> None:
    """The kwargs repr (Celery's logs and events) is ours, so Celery never walks the 64 sizes; the body keeps them."""
    celery = create_celery(settings)
    celery.conf.task_routes = {TASK_FEATURES: {"queue": QUEUE}}
    client = connect(settings)
    client.delete(QUEUE)
    kwargs = {"path": "0123", "images": "/data/tmp/images.bin", "sizes": list(range(1000, 1064))}
    with pytest.raises(WorkerBusy):
        call_worker(celery, client, TASK_FEATURES, kwargs, timeout=1)
    raw = client.lpop(QUEUE)
    assert raw is not None and client.llen(QUEUE) == 0
    message = json.loads(raw)
    shown = message["headers"]["kwargsrepr"]
    assert "'path': '0123'" in shown and "'sizes': <64 items>" in shown and "1063" not in shown
    assert "'reply_key': 'sdr:reply:" in shown
    _, sent, _ = json.loads(base64.b64decode(message["body"]))
    assert sent["sizes"] == kwargs["sizes"] and sent["path"] == "0123" and sent["reply_key"].startswith("sdr:reply:")
