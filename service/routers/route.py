"""Route jobs: `POST /route`, `GET /route/{job_id}`, `DELETE /route/{job_id}`.

A route is cut into shards, one prefix subtree of the path tree each, and every shard is its own
Celery task (sent by name), so several workers on several machines share one route. The job's
state lives in Redis (`service.jobs`); its result is a JSON file in the data dir.
"""

from __future__ import annotations

import json
import math
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, HTTPException, Path, Response, status

from sdr_model.atomic_write import write_text_atomic
from sdr_model.datasets.labelled import DatasetError, read_manifest
from sdr_model.paths import PathError, all_paths, parse_path
from service.celery_app import ROUTE_QUEUE, TASK_ROUTE_SHARD
from service.checkpoint_info import CheckpointInfo
from service.datasets_store import staging_dir
from service.deps import CeleryDep, CheckpointDep, DatasetsDep, JobsDep, SettingsDep, require_api_key
from service.jobs import JobRecord, JobStatus
from service.metrics import queued_tasks
from service.schemas import (
    NOT_READY,
    UNAUTHORIZED,
    ErrorBody,
    Progress,
    RouteAccepted,
    RouteJob,
    RouteRequest,
    ShardState,
)
from service.settings import Settings

__all__ = ["router", "shard_paths"]

JobId = Annotated[str, Path(description="Id from POST /route.", examples=["9b2f3c4d5e6f40718293a4b5c6d7e8f9"])]

# Every route endpoint reads Redis: a broker outage is a 503 with Retry-After (the app's handler).
router = APIRouter(
    prefix="/route",
    tags=["route"],
    dependencies=[Depends(require_api_key)],
    responses={**UNAUTHORIZED, **NOT_READY},
)


def shard_paths(
    paths: list[str], num_shards: int, num_groups: int, screen: bool = False
) -> tuple[list[list[str | None]], list[str]]:
    """Group paths by prefix subtree: `num_shards` = G**L shards on prefixes of length L.

    W0 (`None`) rides in the first shard, as in the library's `plan_shards`; shards with no
    requested path are dropped, so a subset route runs only the shards it needs. A screened route
    is one shard: its second phase depends on the first phase's ranking over all paths.
    (The library's `plan_shards` imports torch, which this process must not.)
    """
    depth = 0 if screen else round(math.log(num_shards, num_groups))
    groups: dict[str, list[str | None]] = {}
    for p in sorted(paths):
        groups.setdefault(p[:depth], []).append(p)
    prefixes = sorted(groups)
    shards = [groups[p] for p in prefixes]
    shards[0].insert(0, None)
    return shards, prefixes


def _validate_paths(requested: list[str] | None, ckpt: CheckpointInfo) -> list[str]:
    stages, groups = ckpt.config.num_stages, ckpt.config.num_groups
    if requested is None:
        return all_paths(stages, groups)
    valid = set()
    for p in requested:
        try:
            valid.add(parse_path(p, stages, groups))
        except PathError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=f"paths: {exc}") from exc
    return sorted(valid)


def _validate_manifest(body: RouteRequest, settings: Settings) -> str:
    """Check an inline manifest the way workers will read it; 400 naming the first bad entry.

    Returns the manifest as the JSONL text that was checked, for the job to store as is.
    """
    assert body.manifest is not None
    if not settings.data_roots:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="inline manifests are disabled on this server (SDR_DATA_ROOTS is empty); upload an archive "
            "with POST /datasets instead",
        )
    if len(body.manifest) > settings.max_manifest_entries:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"manifest has {len(body.manifest)} entries; the limit is {settings.max_manifest_entries}",
        )
    entries = [e.model_dump() for e in body.manifest]
    for i, e in enumerate(entries):
        if "://" in e["path"]:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail=f"manifest[{i}].path {e['path']!r} is a URL; only files under SDR_DATA_ROOTS are read",
            )
        if not e["path"].startswith("/"):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                detail=f"manifest[{i}].path {e['path']!r} must be absolute (a file under SDR_DATA_ROOTS)",
            )
    # The library's reader is the one workers use: same rules (roots, symlinks, files, splits).
    # A staging folder, so a probe left by a killed API is swept at the next start.
    with staging_dir(settings.data_dir / "tmp", "manifest-") as work:
        probe = work / "manifest.jsonl"
        text = "".join(json.dumps(e) + "\n" for e in entries)
        probe.write_text(text)
        try:
            read_manifest(probe, allowed_roots=settings.data_roots)
        except DatasetError as exc:
            message = str(exc).replace(f"{probe.name} line ", "manifest entry ")
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=message) from exc
    return text


def _to_response(record: JobRecord, result: dict[str, object] | None) -> RouteJob:
    return RouteJob(
        job_id=record.job_id,
        status=record.status.value,
        progress=Progress(done=record.done, total=record.total),
        result=result,
        error=record.error,
        options={k: v for k, v in record.options.items() if k != "manifest_file"},
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        shards=[ShardState(**s) for s in record.shards],
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RouteAccepted,
    summary="Start routing a dataset",
    responses={
        400: {"model": ErrorBody, "description": "Bad manifest entry or path; the message names it."},
        404: {"model": ErrorBody, "description": "Unknown dataset id."},
        413: {"model": ErrorBody, "description": "Body over SDR_MAX_JSON_BYTES."},
        429: {"model": ErrorBody, "description": "Too many route tasks waiting; see Retry-After."},
        503: {"model": ErrorBody, "description": "Broker unavailable; nothing was queued."},
    },
)
def start_route(
    body: RouteRequest,
    response: Response,
    settings: SettingsDep,
    datasets: DatasetsDep,
    jobs: JobsDep,
    celery: CeleryDep,
    ckpt: CheckpointDep,
) -> RouteAccepted:
    """Queue a route job: one Celery task per prefix-subtree shard. Poll the `Location`.

    A plain `def`, so FastAPI runs it in its threadpool: it waits on Redis and fsyncs an inline
    manifest, which on the event loop would stall every other request of this API process.
    """
    waiting = queued_tasks(jobs.r, ROUTE_QUEUE)
    if waiting + settings.route_shards > settings.max_queued_tasks:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{waiting} route tasks are waiting (limit SDR_MAX_QUEUED_TASKS={settings.max_queued_tasks}); "
            "retry later",
            headers={"Retry-After": "30"},
        )
    paths = _validate_paths(body.paths, ckpt)
    options = body.model_dump(exclude={"manifest"})
    manifest: str | None = None  # an inline manifest as checked, JSONL
    if body.dataset_id is not None:
        if datasets.get(body.dataset_id) is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"dataset {body.dataset_id!r} not found; upload it with POST /datasets",
            )
    else:
        manifest = _validate_manifest(body, settings)
        options["manifest_entries"] = len(body.manifest or ())
    options["paths"] = paths
    options["checkpoint_sha256"] = ckpt.sha256
    shards, prefixes = shard_paths(paths, settings.route_shards, ckpt.config.num_groups, body.screen)

    job_id = jobs.new_id()
    if manifest is not None:
        manifest_file = jobs.job_dir(job_id) / "manifest.jsonl"
        write_text_atomic(manifest_file, manifest)
        options["manifest_file"] = str(manifest_file)
    try:
        jobs.create(job_id, options, shards, prefixes)
        for i in range(len(shards)):
            celery.send_task(TASK_ROUTE_SHARD, args=[job_id, i])
    except (redis.RedisError, OSError) as exc:
        jobs.finish(job_id, JobStatus.FAILED, f"could not queue the job: {exc}")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"broker unavailable: {exc}", headers={"Retry-After": "5"}
        ) from exc
    location = f"/route/{job_id}"
    response.headers["Location"] = location
    return RouteAccepted(job_id=job_id, status="queued", location=location)


def _get_or_404(jobs: JobsDep, job_id: str) -> JobRecord:
    record = jobs.get(job_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"route job {job_id!r} not found")
    return record


@router.get(
    "/{job_id}",
    response_model=RouteJob,
    summary="Status, progress and result of a route job",
    responses={404: {"model": ErrorBody}},
)
def get_route(job_id: JobId, jobs: JobsDep) -> RouteJob:
    """`result` (the `sdr route --json` shape) is present once `status` is succeeded."""
    record = _get_or_404(jobs, job_id)
    result = jobs.load_result(job_id) if record.status is JobStatus.SUCCEEDED else None
    return _to_response(record, result)


@router.delete(
    "/{job_id}",
    response_model=RouteJob,
    summary="Cancel a route job",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "Already succeeded or failed."}},
)
def cancel_route(job_id: JobId, jobs: JobsDep) -> RouteJob:
    """Sets the cancel flag; running shards stop at their next batch. Cancelling twice is fine;
    a job that already succeeded or failed is left as it is (409)."""
    record = _get_or_404(jobs, job_id)
    if record.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"route job {job_id!r} already {record.status.value}")
    jobs.cancel(job_id)
    return _to_response(_get_or_404(jobs, job_id), None)
