"""`sdr serve` and `sdr worker`. Registration imports nothing heavy (no torch, no FastAPI)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP API (with no SDR_BROKER_URL: also a private Redis and a local worker)",
        description="Serve the routing API. Settings come from SDR_* environment variables (docs/SERVICE.md).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--no-worker", action="store_true", help="embedded mode without the local worker process")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser(
        "worker",
        help="run a Celery worker for route shards, weights and features against SDR_BROKER_URL",
        description="Run a worker. Without SDR_BROKER_URL it joins the embedded Redis of a `sdr serve` "
        "that uses the same SDR_DATA_DIR.",
    )
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: SDR_WORKER_CONCURRENCY)")
    p.add_argument("--queues", default=None, help="comma-separated queues (default: sdr.route,sdr.interactive)")
    p.add_argument("--hostname", default=None, help="Celery node name (default: sdr@<host>)")
    p.add_argument("--loglevel", default=None, help="log level (default: SDR_LOG_LEVEL)")
    p.set_defaults(func=_worker)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve(args: argparse.Namespace) -> int:
    from service.embedded import serve
    from service.settings import get_settings

    settings = get_settings()
    _configure_logging(settings.log_level)
    return serve(settings, args.host, args.port, start_worker=not args.no_worker)


def _worker(args: argparse.Namespace) -> int:
    from service.celery_app import INTERACTIVE_QUEUE, ROUTE_QUEUE
    from service.embedded import ensure_checkpoint
    from service.settings import get_settings

    settings = get_settings()
    _configure_logging(args.loglevel or settings.log_level)
    settings.ensure_dirs()
    ensure_checkpoint(settings)
    from service.worker import app  # after the checkpoint exists: the heartbeat reports readiness

    argv = [
        "worker",
        "--loglevel",
        (args.loglevel or settings.log_level).upper(),
        "--concurrency",
        str(args.concurrency or settings.worker_concurrency),
        "--queues",
        args.queues or f"{ROUTE_QUEUE},{INTERACTIVE_QUEUE}",
        "--hostname",
        args.hostname or "sdr@%h",
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0
