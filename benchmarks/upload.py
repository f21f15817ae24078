"""Uploading a dataset: the service's checked, durable store against a plain `zipfile.extractall`.

`DatasetStore.add` is what `POST /datasets` runs once the body has arrived: the archive is
extracted with every refusal rule and cap (`safe_extract`), each image is decoded once to find the
unreadable ones, every file and folder is fsynced (`sync_tree`), and the folder is renamed into
place. The baseline extracts the same zip with the stdlib and none of that. The flush is also
timed on its own, with `sync_tree`'s threads and one file at a time, each right after one of the
two extractions (a flushed file costs nothing to flush again), the two swapping every round. Every
timed step starts after an `os.sync()`, so that none pays for the writeback of the one before.

The trees are written under the repository, not `/tmp`, which may be a RAM disk where fsync is
free; the page names the filesystem they were on.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, Section, Table
from benchmarks.route_scaling import FASHION_MNIST, fashion_mnist_folder
from sdr_model.atomic_write import SYNC_THREADS, sync_tree
from sdr_model.datasets.archive import ArchiveLimits, safe_extract
from service.datasets_store import DatasetStore


def _filesystem(path: Path) -> str:
    """The type of the filesystem `path` is on (the longest mount point above it), from /proc/mounts."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        mount, fstype = line.split()[1:3]
        if (str(path) + "/").startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def _timed(action: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    action(*args, **kwargs)
    return time.perf_counter() - start


_FLUSH = {SYNC_THREADS: "threads", 1: "one"}


def _settle() -> None:
    """Write out everything dirty (earlier steps' files, the freeing of removed trees) before the next timed step.

    Without it, a step paid for the writeback of the one before: the first extraction of a round
    came out 40% slower than the checked one after it, which does more.
    """
    os.sync()


def _extractall(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)


def bench(quick: bool) -> Section:
    section = Section(
        "Upload: the checked, durable dataset store vs a plain extractall",
        __name__,
        "`DatasetStore.add` (what `POST /datasets` runs on the received archive: safe extraction, a decode "
        "check of every image, fsync of every file and folder, the commit rename) against `zipfile.extractall` "
        "of the same zip of Fashion-MNIST PNGs; the flush alone with threads and one file at a time.",
    )
    if not FASHION_MNIST.is_dir():
        section.notes.append(f"Skipped: {FASHION_MNIST} is missing (`apt-get install dataset-fashion-mnist`).")
        return section
    images, rounds = (300, 1) if quick else (3000, 3)
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory(dir=REPO, prefix=".bench-upload-") as tmp:
        work = Path(tmp)
        folder = fashion_mnist_folder(work / "source", images)
        archive = Path(shutil.make_archive(str(work / "dataset"), "zip", folder))  # as benchmarks.service_route
        zipped_mib = archive.stat().st_size / 2**20
        folders = 1 + sum(1 for p in folder.rglob("*") if p.is_dir())
        for i in range(rounds):
            plain, checked, data_dir = work / f"plain-{i}", work / f"checked-{i}", work / f"store-{i}"
            store = DatasetStore(data_dir, ArchiveLimits())
            # Each flush right after its own extraction, the two kinds swapping trees every round.
            plain_flush, checked_flush = (SYNC_THREADS, 1) if i % 2 == 0 else (1, SYNC_THREADS)
            _settle()
            record("plain", _timed(_extractall, archive, plain))
            record(_FLUSH[plain_flush], _timed(sync_tree, plain, threads=plain_flush))
            _settle()
            record("safe", _timed(safe_extract, archive, checked))
            record(_FLUSH[checked_flush], _timed(sync_tree, checked, threads=checked_flush))
            _settle()
            with archive.open("rb") as body:
                record("add", _timed(store.add, body, archive.name))
            for tree in (plain, checked, data_dir):
                shutil.rmtree(tree)
        filesystem = _filesystem(work)
    median = {name: statistics.median(values) for name, values in times.items()}
    table = Table(["step", "median", "per 1,000 images", "vs plain extractall"])
    rows = (
        ("`zipfile.extractall`: no checks, no flush (the baseline)", "plain"),
        ("`safe_extract`: refusal rules and caps", "safe"),
        (f"flush, `sync_tree` ({SYNC_THREADS} threads)", "threads"),
        ("flush, one file at a time (`threads=1`)", "one"),
        ("the whole upload, `DatasetStore.add`", "add"),
    )
    for label, name in rows:
        seconds = median[name]
        table.add(label, f"{seconds:.2f} s", f"{seconds / images * 1000:.2f} s", f"{seconds / median['plain']:.2f}x")
    section.tables.append(table)
    section.notes.append(
        f"{images} 28-px PNGs in {folders} folders, {zipped_mib:.1f} MiB zipped; {rounds} rounds, "
        f"medians. {SYNC_THREADS} threads flushed a tree {median['one'] / median['threads']:.1f}x faster than one "
        f"file at a time. The trees were on {filesystem}."
    )
    return section
