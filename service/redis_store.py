"""Redis connections and the key layout every service process agrees on.

Celery's URLs for a unix-socket Redis (`redis+socket:///path`) are not redis-py's (`unix:///path`);
this module turns the one broker URL of `Settings` into a redis-py client, so the API, the
workers and `sdr serve` always talk to the same server.
"""

from __future__ import annotations

import redis

from service.settings import Settings

__all__ = ["KEY_PREFIX", "WORKER_KEY_PREFIX", "checkpoint_verdict_key", "connect", "redis_py_url"]

KEY_PREFIX = "sdr:"
# Workers refresh `sdr:worker:<hostname>` with a short TTL (service.worker); a live key is a live worker.
WORKER_KEY_PREFIX = f"{KEY_PREFIX}worker:"


def checkpoint_verdict_key(sha256: str, *, valid: bool) -> str:
    """Where workers record that a checkpoint digest loaded (or why it was refused)."""
    return f"{KEY_PREFIX}checkpoint:{'valid' if valid else 'refused'}:{sha256}"


def redis_py_url(broker_url: str) -> str:
    """Translate a Celery/kombu Redis URL into one redis-py understands."""
    for scheme in ("redis+socket://", "socket://"):
        if broker_url.startswith(scheme):
            return "unix://" + broker_url[len(scheme) :]
    return broker_url


def connect(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """A client on the service's Redis; responses decoded to `str`, thread-safe connection pool.

    Timeouts are short: a readiness probe must answer "not ready" rather than hang on a dead server.
    """
    return redis.Redis.from_url(
        redis_py_url(settings.effective_broker_url),
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )
