"""Uploaded datasets, stored content-addressed under `<data_dir>/datasets/<id>/`.

The id is a digest of the uploaded bytes, so the same archive uploaded twice is the same dataset
and routes on it are comparable. An upload is streamed to a temporary file (hashed on the way),
extracted with the library's `safe_extract` into a temporary folder, read with the library's
dataset reader, its images decoded once to name the unreadable ones, and only then renamed into
place: a refused or interrupted upload leaves nothing under `datasets/`. The rename is the commit
point; `dataset.json` inside the folder is what the API reports. Every staged file is fsynced
before it (`sync_tree`) and `datasets/` after it, so an upload the API has answered 201 survives a
power cut whole: the id is the archive's digest, and a dataset committed with empty files would
otherwise be served for every later upload of the same bytes.

A process killed mid-upload cannot remove its staging folder, so each one is held with an
exclusive `flock` by the process that works in it (`staging_dir`), and `sweep_staging` (run when
the API starts) removes the folders whose lock nobody holds any more: the kernel drops a lock when
its process dies, however it dies, while a live upload of another API process sharing the data
dir keeps its folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

from sdr_model.atomic_write import sync_folder, sync_tree
from sdr_model.datasets.archive import ArchiveError, ArchiveLimits, safe_extract
from sdr_model.datasets.decode_policy import DECODE_THREADS, check_pixel_limit
from sdr_model.datasets.labelled import DatasetError, LabelledImages, read_dataset

__all__ = ["STAGING_PREFIXES", "DatasetRejected", "DatasetStore", "StoredDataset", "staging_dir", "sweep_staging"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_ID_HEX = 24  # 96 bits of sha256: collisions are not a practical concern, ids stay short
_OWNER_LOCK = ".owner.lock"
STAGING_PREFIXES = ("upload-", "features-", "manifest-")  # the request-scoped folders the API makes in `<data_dir>/tmp`


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder `parent/<prefix><uuid>`, locked by this process and removed when the block ends."""
    parent.mkdir(parents=True, exist_ok=True)
    work = parent / f"{prefix}{uuid.uuid4().hex}"
    work.mkdir()
    fd = os.open(work / _OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)


def sweep_staging(parent: Path, grace_s: float = 600.0) -> list[Path]:
    """Remove the staging folders under `parent` whose owner died; returns them.

    A folder without its lock file is only taken when older than `grace_s` (it may have been made
    a moment ago, its owner about to lock it).
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in sorted(parent.iterdir()):
        if not folder.name.startswith(STAGING_PREFIXES) or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            fd = os.open(folder / _OWNER_LOCK, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - folder.stat().st_mtime > grace_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner is alive and working in it
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        log.warning("removed %d staging folder(s) left by a process that died mid-request", len(removed))
    return removed


class DatasetRejected(ValueError):
    """An upload that is not a usable dataset; the message names the member or rule."""


@dataclass(frozen=True)
class StoredDataset:
    """A dataset as stored: its folder and the summary reported to clients."""

    id: str
    root: Path  # the extracted tree (train/<class>/..., or a manifest.jsonl with its files)
    info: dict[str, Any]


def _unreadable_images(dataset: LabelledImages, base: Path) -> list[str]:
    """Names (relative to `base`) of files that Pillow cannot decode, decoded `DECODE_THREADS` at a time.

    The rules of the workers' decoder (`sdr_model.datasets.images`, which imports torch and so
    cannot run here), from `decode_policy`: truncated data is an error, and so is an image over the
    pixel limit. Threads, as in the workers' decoder: Pillow decodes without holding the GIL, and
    photos cost milliseconds each to decode.
    """

    def readable(path: Path) -> bool:
        try:
            with Image.open(path) as img:
                check_pixel_limit(img)
                img.load()
        except Exception:  # any decoder error means "not an image we can use"
            return False
        return True

    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode-check") as pool:
        outcomes = list(pool.map(readable, [record.path for record in dataset.records]))
    return [str(record.path.relative_to(base)) for record, ok in zip(dataset.records, outcomes, strict=True) if not ok]


class DatasetStore:
    """Content-addressed dataset storage in the data dir, shared by the API and the workers."""

    def __init__(self, data_dir: Path, limits: ArchiveLimits) -> None:
        self.root = data_dir / "datasets"
        self.tmp = data_dir / "tmp"
        self.limits = limits

    @staticmethod
    def valid_id(dataset_id: str) -> bool:
        return (
            dataset_id.startswith("ds_")
            and len(dataset_id) == 3 + _ID_HEX
            and all(c in "0123456789abcdef" for c in dataset_id[3:])
        )

    def path(self, dataset_id: str) -> Path:
        return self.root / dataset_id

    def get(self, dataset_id: str) -> StoredDataset | None:
        if not self.valid_id(dataset_id):
            return None
        folder = self.path(dataset_id)
        info_file = folder / "dataset.json"
        if not info_file.is_file():
            return None
        return StoredDataset(dataset_id, folder / "data", json.loads(info_file.read_text()))

    def add(self, upload: IO[bytes], filename: str) -> tuple[StoredDataset, bool]:
        """Validate and store an uploaded archive; returns the dataset and whether it already existed.

        Raises:
            DatasetRejected: the archive is unsafe, unreadable, or holds no usable dataset.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with staging_dir(self.tmp, "upload-") as work:
            archive = work / "archive"
            digest = hashlib.sha256()
            size = 0
            with archive.open("wb") as out:
                for chunk in iter(lambda: upload.read(_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            dataset_id = "ds_" + digest.hexdigest()[:_ID_HEX]
            existing = self.get(dataset_id)
            if existing is not None:
                return existing, True
            if size == 0:
                raise DatasetRejected(f"{filename}: the uploaded file is empty")
            stage = work / "dataset"
            stage.mkdir()
            data = stage / "data"
            try:
                safe_extract(archive, data, self.limits)
                dataset = read_dataset(data, allowed_roots=[data])
            except (ArchiveError, DatasetError) as exc:
                raise DatasetRejected(f"{filename}: {exc}") from exc
            unreadable = _unreadable_images(dataset, data)
            if len(unreadable) == len(dataset.records):
                raise DatasetRejected(
                    f"{filename}: none of its {len(unreadable)} image files can be decoded (first: {unreadable[0]!r})"
                )
            info = _summary(dataset_id, dataset, unreadable, size, data)
            (stage / "dataset.json").write_text(json.dumps(info, indent=1, sort_keys=True))
            sync_tree(stage)  # on disk before it is visible: a power cut never leaves a committed, empty dataset
            try:
                stage.rename(self.path(dataset_id))  # the commit point
            except OSError:
                stored = self.get(dataset_id)  # a concurrent upload of the same bytes won the race
                if stored is None:
                    raise
                return stored, True
            sync_folder(self.root)  # the rename itself, before the client hears 201
            return StoredDataset(dataset_id, self.path(dataset_id) / "data", info), False


def _summary(
    dataset_id: str, dataset: LabelledImages, unreadable: Iterable[str], size: int, data: Path
) -> dict[str, Any]:
    bad = set(unreadable)
    counts: dict[str, dict[str, int]] = {}
    for record in dataset.records:
        if str(record.path.relative_to(data)) in bad:
            continue
        split = counts.setdefault(record.split or "all", {})
        split[record.label] = split.get(record.label, 0) + 1
    manifest = any(p.name == "manifest.jsonl" for p in data.rglob("manifest.jsonl"))
    return {
        "id": dataset_id,
        "classes": list(dataset.classes),
        "counts": {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
        "num_images": len(dataset.records) - len(bad),
        "unreadable": sorted(bad),
        "layout": "manifest" if manifest else "folders",
        "size_bytes": size,
    }
