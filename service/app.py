"""The FastAPI application factory (`create_app`); the API process never imports torch.

Run it with `sdr serve` (embedded Redis + worker) or any ASGI server:
`uvicorn --factory service.app:create_app`.
"""

from __future__ import annotations

import logging
from functools import partial

import redis
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from sdr_model.datasets.archive import ArchiveLimits
from service.celery_app import create_celery
from service.checkpoint_info import CheckpointWatcher
from service.datasets_store import DatasetStore, sweep_staging
from service.deps import InflightLimiter, ServiceState
from service.feature_batcher import FeatureBatcher
from service.jobs import JobStore
from service.limits import BodyLimitMiddleware, endpoint_limits
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.redis_store import connect
from service.routers import datasets, health, route, subnets, ui
from service.settings import Settings, get_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Route a labelled dataset to the best of the 256 sub-nets of an SDR supernet, download that
sub-net's weights (timm-loadable safetensors) and embed images with it.

Typical flow: `POST /datasets` (archive) -> `POST /route` -> poll `GET /route/{job_id}` ->
`GET /subnets/{best}/weights` or `POST /subnets/{best}/features`.

When `SDR_API_KEYS` is set, every endpoint except `/livez` and `/readyz` needs
`Authorization: Bearer <key>`. Errors are JSON: `{"detail": "..."}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API: clients, stores and routers for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    # Staging folders of a process that was killed mid-upload: never visible as datasets, but disk.
    sweep_staging(settings.data_dir / "tmp")
    client = connect(settings)
    jobs = JobStore(client, settings.data_dir)
    celery = create_celery(settings)
    metrics = ServiceMetrics(client, jobs)
    state = ServiceState(
        settings=settings,
        redis=client,
        celery=celery,
        jobs=jobs,
        datasets=DatasetStore(
            settings.data_dir,
            ArchiveLimits(
                max_entries=settings.max_archive_members,
                max_total_bytes=settings.max_archive_unpacked_bytes,
                max_ratio=settings.max_archive_ratio,
            ),
        ),
        checkpoint=CheckpointWatcher(settings.checkpoint_path),
        metrics=metrics,
        inflight=InflightLimiter(settings.max_inflight_requests),
        features=FeatureBatcher(
            partial(subnets.embed_batch, settings, celery, client),
            tasks_in_flight=settings.feature_tasks_in_flight,
            max_images=settings.max_feature_files,
            wait_timeout=settings.wait_timeout,
            on_task=lambda requests, _: metrics.feature_tasks.observe(requests),
        ),
    )
    app = FastAPI(
        title="SDR Router",
        version="0.1.0",
        summary="Scalable Dynamic Routing as a service: route a dataset, get the best sub-net.",
        description=_DESCRIPTION,
    )
    app.state.service = state
    app.include_router(health.router)
    app.include_router(datasets.build_router(settings))
    app.include_router(route.router)
    app.include_router(subnets.build_router(settings))
    app.include_router(ui.router)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=endpoint_limits(
            max_upload=settings.max_upload_bytes + 64 * 1024,  # + multipart framing
            max_features=settings.max_feature_files * (settings.max_feature_file_bytes + 4096),
            max_json=settings.max_json_bytes,
        ),
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: it also counts 413s

    @app.exception_handler(redis.RedisError)
    async def _broker_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("broker unavailable during %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"broker unavailable, retry shortly ({type(exc).__name__})"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    if settings.uses_random_checkpoint:
        log.warning(
            "serving a RANDOM-INIT sdr_tiny checkpoint (%s): rankings and features are meaningless until a "
            "trained checkpoint is shipped or SDR_CHECKPOINT is set",
            settings.random_checkpoint,
        )
    return app
