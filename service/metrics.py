"""Prometheus metrics: request counts and latencies by route and status, job outcomes, queue depth.

Request metrics are measured by an ASGI middleware in the API process and labelled with the
route *template* (`/route/{job_id}`), never the raw URL, so label cardinality stays bounded.
Job outcomes happen in workers, possibly on other machines; they are counted in Redis by the same
Lua script that makes the terminal transition (exactly once) and read at scrape time, as is the
depth of each Celery queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.celery_app import INTERACTIVE_QUEUE, ROUTE_QUEUE
from service.jobs import JobStore

__all__ = ["MetricsMiddleware", "ServiceMetrics", "queued_tasks"]

log = logging.getLogger(__name__)

# kombu's Redis transport keeps one list per queue and priority step: "q", "q\x06\x163", ...
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def queued_tasks(client: redis.Redis, queue: str) -> int:
    """Tasks waiting in one Celery queue (all priority steps of kombu's Redis transport)."""
    names = [queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return int(sum(pipe.execute()))


class _RedisCollector(Collector):
    """Reads job outcomes and queue depths from Redis at scrape time."""

    def __init__(self, client: redis.Redis, store: JobStore) -> None:
        self.client = client
        self.store = store

    def collect(self) -> Iterator[Metric]:
        outcomes = GaugeMetricFamily(
            "sdr_route_jobs_finished",
            "Route jobs that reached a terminal status, by status (all time).",
            labels=["status"],
        )
        depth = GaugeMetricFamily("sdr_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
        try:
            counts = self.store.outcome_counts()
            for status in ("succeeded", "failed", "cancelled"):
                outcomes.add_metric([status], counts.get(status, 0))
            for queue in (ROUTE_QUEUE, INTERACTIVE_QUEUE):
                depth.add_metric([queue], queued_tasks(self.client, queue))
        except redis.RedisError as exc:  # a scrape must not fail because the broker is down
            log.warning("metrics: broker unavailable (%s)", exc)
            return
        yield outcomes
        yield depth


class ServiceMetrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self, client: redis.Redis, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sdr_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sdr_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.feature_tasks = Histogram(
            "sdr_feature_task_requests",
            "Features requests answered by one worker task (request batching: above 1 under load).",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.registry.register(_RedisCollector(client, store))


class MetricsMiddleware:
    """Pure ASGI middleware (no response buffering): counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app raises before responding

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            labels = (template, scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
