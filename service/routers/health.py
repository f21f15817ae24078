"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import cast

import redis
from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.checkpoint_info import CheckpointUnavailable
from service.deps import ServiceState, StateDep, require_api_key
from service.redis_store import WORKER_KEY_PREFIX, checkpoint_verdict_key
from service.schemas import UNAUTHORIZED, HealthReport

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=HealthReport, summary="The API process answers")
def livez() -> HealthReport:
    """Liveness: the process serves requests. Never touches the broker, so a Redis outage does
    not make an orchestrator restart healthy API processes."""
    return HealthReport(status="ok", checks={"process": True})


@router.get(
    "/readyz",
    response_model=HealthReport,
    summary="Broker, a worker and the checkpoint are ready",
    responses={503: {"model": HealthReport, "description": "Not ready; `detail` says which check fails."}},
)
def readyz(state: StateDep) -> JSONResponse:
    """Readiness: 200 only when Redis answers, at least one worker heartbeat is live and a
    worker has loaded the served checkpoint; 503 (with the failing checks) until then."""
    checks: dict[str, bool] = {}
    detail: dict[str, str] = {}
    try:
        state.redis.ping()
        checks["broker"] = True
        workers = next(iter(state.redis.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100)), None)
        checks["worker"] = workers is not None
        if workers is None:
            detail["worker"] = "no worker heartbeat; start one with `sdr worker`"
    except redis.RedisError as exc:
        checks["broker"] = checks["worker"] = False
        detail["broker"] = f"broker unreachable: {exc}"
    try:
        sha = state.checkpoint.get().sha256
        checks["checkpoint"] = _verdict(state, sha, detail)
    except CheckpointUnavailable as exc:
        checks["checkpoint"] = False
        detail["checkpoint"] = str(exc)
    ready = all(checks.values())
    report = HealthReport(status="ok" if ready else "unavailable", checks=checks, detail=detail)
    return JSONResponse(
        report.model_dump(),
        status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=None if ready else {"Retry-After": "5"},
    )


def _verdict(state: ServiceState, sha: str, detail: dict[str, str]) -> bool:
    """Whether a worker has loaded this checkpoint digest (its tensors match its header)."""
    try:
        valid, refused = cast(
            list[str | None],
            state.redis.mget([checkpoint_verdict_key(sha, valid=True), checkpoint_verdict_key(sha, valid=False)]),
        )
    except redis.RedisError:
        detail["checkpoint"] = "cannot tell: broker unreachable"
        return False
    if valid:
        return True
    detail["checkpoint"] = f"refused by a worker: {refused}" if refused else "no worker has loaded this checkpoint yet"
    return False


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(require_api_key)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}, **UNAUTHORIZED},
)
def metrics(state: StateDep) -> Response:
    """Request counts and latencies by route and status, route job outcomes, queue depths."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
