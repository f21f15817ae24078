"""`POST /datasets` (upload an archive) and `GET /datasets/{id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Path, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from service.datasets_store import DatasetRejected
from service.deps import DatasetsDep, require_api_key
from service.schemas import UNAUTHORIZED, DatasetInfo, ErrorBody
from service.settings import Settings

__all__ = ["build_router"]

DatasetId = Annotated[str, Path(description="Id from POST /datasets.", examples=["ds_5f2c0a9d31e4b7c8a6f01d2e"])]


def build_router(settings: Settings) -> APIRouter:
    """The datasets router (its upload body cap is enforced by `service.limits`)."""
    router = APIRouter(
        prefix="/datasets", tags=["datasets"], dependencies=[Depends(require_api_key)], responses=UNAUTHORIZED
    )

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        response_model=DatasetInfo,
        summary="Upload a labelled dataset archive",
        form_limits={"max_files": 1, "max_fields": 0},
        responses={
            400: {"model": ErrorBody, "description": "Not a usable dataset; the message names the member."},
            413: {"model": ErrorBody, "description": "Archive over SDR_MAX_UPLOAD_BYTES."},
        },
    )
    async def upload_dataset(
        datasets: DatasetsDep,
        file: Annotated[
            UploadFile,
            File(description="zip / tar / tar.gz with train/<class>/* (optional test/<class>/*) or manifest.jsonl"),
        ],
    ) -> DatasetInfo:
        """Validate the archive (safe extraction, classes, counts, unreadable images named) and
        store it content-addressed: the same bytes always get the same id (`existing: true`)."""
        try:
            stored, existing = await run_in_threadpool(datasets.add, file.file, file.filename or "upload")
        except DatasetRejected as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
        return DatasetInfo(**stored.info, existing=existing)

    @router.get(
        "/{dataset_id}",
        response_model=DatasetInfo,
        summary="A stored dataset's classes and counts",
        responses={404: {"model": ErrorBody}},
    )
    def get_dataset(dataset_id: DatasetId, datasets: DatasetsDep) -> DatasetInfo:
        stored = datasets.get(dataset_id)
        if stored is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"dataset {dataset_id!r} not found; upload it with POST /datasets"
            )
        return DatasetInfo(**stored.info, existing=True)

    return router
