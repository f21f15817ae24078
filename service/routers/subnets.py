"""Sub-nets: list them, describe one, download its weights, embed images with it.

Weights and features need torch, which the API never imports: they are Celery tasks on the
`sdr.interactive` queue (`service.tasks`) that the request waits for (`service.replies`). Both
exchange files through the data dir, which API and workers share: the extracted weights are
cached there once per checkpoint digest and path. Concurrent features requests for one sub-net
share a task (`service.feature_batcher`); a task passes its images and embeddings through a
temporary folder that is removed when it ends: the images as one file (their bytes back to back,
the sizes in the task message): creating and removing one file per image cost the API 14 ms of CPU
for 64 images, against 0.3 ms for one file, more than the rest of its work for the request (its
CPU per image is in `docs/BENCHMARKS.md`, serving).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
from pathlib import Path as FsPath
from typing import Annotated, Any

import numpy as np
import redis
from celery import Celery
from fastapi import APIRouter, Depends, File, Header, HTTPException, Path, Request, Response, UploadFile, status
from fastapi.responses import FileResponse

from sdr_model.paths import PathError, parse_path, path_to_id
from service.celery_app import TASK_EXTRACT_SUBNET, TASK_FEATURES
from service.checkpoint_info import CheckpointInfo
from service.datasets_store import staging_dir
from service.deps import CheckpointDep, StateDep, require_api_key
from service.feature_batcher import BatchKey, UnreadableImages
from service.replies import WorkerBusy, call_worker
from service.schemas import BUSY, NOT_READY, UNAUTHORIZED, ErrorBody, FeaturesResponse, SubnetInfo, SubnetList
from service.settings import Settings

__all__ = ["build_router", "embed_batch", "weights_file"]

NPY_MEDIA_TYPE = "application/x-npy"
SubnetPath = Annotated[str, Path(description="4 digits 0-3, stage 1 first, or an id 0-255.", examples=["0312"])]


def weights_file(data_dir: FsPath, ckpt: CheckpointInfo, path: str) -> FsPath:
    """Cache location of an extracted sub-net: one folder per checkpoint digest."""
    return data_dir / "subnets" / ckpt.sha256[:16] / f"{path}.safetensors"


def _canonical_path(path: str, ckpt: CheckpointInfo) -> str:
    # "54" is an id, "0312" a digit string; "00000" is neither (ids are written without leading zeros).
    is_id = path.isdigit() and len(path) != ckpt.config.num_stages and str(int(path)) == path
    raw: str | int = int(path) if is_id else path
    try:
        return parse_path(raw, ckpt.config.num_stages, ckpt.config.num_groups)
    except PathError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such sub-net: {exc}") from exc


def _info(path: str, ckpt: CheckpointInfo) -> SubnetInfo:
    return SubnetInfo(
        path=path,
        id=path_to_id(path, ckpt.config.num_groups),
        cluster_size=ckpt.cluster_sizes.get(path),
        params=ckpt.subnet_params,
        feature_dim=ckpt.config.subnet_num_features,
        weights_url=f"/subnets/{path}/weights",
    )


def _ask_worker(
    celery: Celery, client: redis.Redis, timeout: float, task: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """`call_worker`; no answer within `timeout` seconds is a 503 with `Retry-After`."""
    try:
        return call_worker(celery, client, task, kwargs, timeout)
    except WorkerBusy as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "10"}
        ) from exc


def _worker_error(reply: dict[str, Any]) -> HTTPException:
    code = int(reply.get("status", 500))
    return HTTPException(code, detail=str(reply.get("detail", "worker error")))


class _DigestCache:
    """sha256 of each cached weights file (the ETag), computed once per file version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], str] = {}

    def get(self, file: FsPath) -> str:
        st = file.stat()
        key = (str(file), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._digests:
                return self._digests[key]
        h = hashlib.sha256()
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        with self._lock:
            self._digests[key] = h.hexdigest()
        return self._digests[key]


def build_router(settings: Settings) -> APIRouter:
    """The sub-nets router; the features body cap comes from `settings`."""
    # Every endpoint here needs the checkpoint's header: 503 with Retry-After while it is unreadable.
    router = APIRouter(
        prefix="/subnets",
        tags=["subnets"],
        dependencies=[Depends(require_api_key)],
        responses={**UNAUTHORIZED, **NOT_READY},
    )
    digests = _DigestCache()

    @router.get("", response_model=SubnetList, summary="Every sub-net of the served checkpoint")
    def list_subnets(ckpt: CheckpointDep) -> SubnetList:
        from sdr_model.paths import all_paths

        return SubnetList(
            checkpoint=ckpt.file.name,
            checkpoint_sha256=ckpt.sha256,
            trained=bool(ckpt.provenance.get("trained", True)),
            supernet_params=ckpt.supernet_params,
            supernet_feature_dim=ckpt.config.num_features,
            preprocessing=ckpt.preprocessing.to_dict(),
            subnets=[_info(p, ckpt) for p in all_paths(ckpt.config.num_stages, ckpt.config.num_groups)],
        )

    @router.get("/{path}", response_model=SubnetInfo, summary="One sub-net", responses={404: {"model": ErrorBody}})
    def get_subnet(path: SubnetPath, ckpt: CheckpointDep) -> SubnetInfo:
        """Cluster size, parameter count and feature dimension of one path."""
        return _info(_canonical_path(path, ckpt), ckpt)

    @router.head(
        "/{path}/weights",
        summary="Headers (ETag, size) of a sub-net's weights file",
        operation_id="head_subnet_weights",
        response_class=FileResponse,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "The GET's headers, no body."},
            304: {"description": "Unchanged (If-None-Match matched the ETag)."},
            404: {"model": ErrorBody},
            **BUSY,
            503: {"model": ErrorBody, "description": "No worker extracted it in time; retry."},
        },
    )
    @router.get(
        "/{path}/weights",
        operation_id="get_subnet_weights",
        summary="Download a sub-net as timm-loadable safetensors",
        response_class=FileResponse,
        responses={
            200: {
                "content": {"application/octet-stream": {}},
                "description": "timm ResNet weights with this path's BN statistics; header holds timm kwargs.",
            },
            304: {"description": "Unchanged (If-None-Match matched the ETag)."},
            404: {"model": ErrorBody},
            **BUSY,
            503: {"model": ErrorBody, "description": "No worker extracted it in time; retry."},
        },
    )
    def get_weights(
        path: SubnetPath,
        state: StateDep,
        ckpt: CheckpointDep,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Extracted once by a worker (`sdr_model.save_subnet`), then served from the disk cache."""
        path = _canonical_path(path, ckpt)
        file = weights_file(state.settings.data_dir, ckpt, path)
        if not file.is_file():
            with state.inflight.slot():
                reply = _ask_worker(
                    state.celery,
                    state.redis,
                    state.settings.wait_timeout,
                    TASK_EXTRACT_SUBNET,
                    {"path": path, "checkpoint_sha256": ckpt.sha256, "output": str(file)},
                )
            if not reply.get("ok"):
                raise _worker_error(reply)
        etag = f'"{digests.get(file)}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=0, must-revalidate"}
        if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return FileResponse(
            file,
            media_type="application/octet-stream",
            filename=f"{ckpt.name}-{path}.safetensors",
            headers=headers,
        )

    max_files = settings.max_feature_files
    max_file_bytes = settings.max_feature_file_bytes

    @router.post(
        "/{path}/features",
        response_model=FeaturesResponse,
        summary="Embed images with a sub-net",
        form_limits={"max_files": max_files, "max_fields": 0},
        responses={
            200: {
                "content": {NPY_MEDIA_TYPE: {}},
                "description": "JSON embeddings, or a float32 [N, D] .npy with `Accept: application/x-npy`.",
            },
            400: {"model": ErrorBody, "description": "An unreadable image (named) or no image at all."},
            404: {"model": ErrorBody},
            413: {"model": ErrorBody, "description": "Too many images or one too large."},
            **BUSY,
            503: {"model": ErrorBody, "description": "No worker answered in time; retry."},
        },
    )
    async def features(
        path: SubnetPath,
        request: Request,
        state: StateDep,
        ckpt: CheckpointDep,
        files: Annotated[
            list[UploadFile], File(min_length=1, description="One or more images (field `files`, repeated).")
        ],
    ) -> Response:
        """Preprocessing from the checkpoint header, then the sub-net's pooled features, batched."""
        path = _canonical_path(path, ckpt)
        if len(files) > max_files:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, detail=f"{len(files)} images sent; at most {max_files} per request"
            )
        names = [f.filename or f"file{i}" for i, f in enumerate(files)]
        for name, f in zip(names, files, strict=True):
            if f.size is not None and f.size > max_file_bytes:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    detail=f"image {name!r} is {f.size} bytes; the limit is {max_file_bytes}",
                )
        with state.inflight.slot():
            embeddings = await state.features.embed((path, ckpt.sha256), files, names)
        if NPY_MEDIA_TYPE in request.headers.get("accept", ""):
            npy = io.BytesIO()
            np.save(npy, embeddings)
            return Response(
                npy.getvalue(),
                media_type=NPY_MEDIA_TYPE,
                headers={"X-SDR-Path": path, "X-SDR-Files": str(len(names))},
            )
        body = FeaturesResponse(path=path, dim=int(embeddings.shape[1]), files=names, embeddings=embeddings.tolist())
        # pydantic's own JSON encoder: 1.9 ms for 64 x 256 floats on the API's event loop, where
        # `JSONResponse(model_dump())` took 12 ms. The same values; small ones print without exponent.
        return Response(body.model_dump_json(), media_type="application/json")

    return router


def embed_batch(
    settings: Settings, celery: Celery, client: redis.Redis, key: BatchKey, files: list[UploadFile]
) -> np.ndarray:
    """One features task for a batch of uploads (`FeatureBatcher`'s `EmbedBatch`): their `[N, D]` embeddings.

    The uploads are staged in a request-scoped folder of the shared data dir, removed afterwards.
    """
    path, checkpoint_sha256 = key
    with staging_dir(settings.data_dir / "tmp", "features-") as work:
        inputs, output = work / "images.bin", work / "embeddings.npy"
        sizes = _save_uploads(inputs, files)
        kwargs = {
            "path": path,
            "checkpoint_sha256": checkpoint_sha256,
            "images": str(inputs),
            "sizes": sizes,
            "output": str(output),
        }
        reply = _ask_worker(celery, client, settings.wait_timeout, TASK_FEATURES, kwargs)
        if not reply.get("ok"):
            if reply.get("unreadable"):
                raise UnreadableImages(reply["unreadable"])
            raise _worker_error(reply)
        return np.load(output, allow_pickle=False)


def _save_uploads(target: FsPath, files: list[UploadFile]) -> list[int]:
    """Copy the uploads back to back into one file of the shared data dir; returns their sizes in bytes."""
    sizes = []
    with target.open("wb") as dst:
        for f in files:
            f.file.seek(0)
            start = dst.tell()
            shutil.copyfileobj(f.file, dst, 1 << 20)
            sizes.append(dst.tell() - start)
    return sizes
