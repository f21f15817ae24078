"""Compression bombs cost bounded memory and disk on the real upload path (issue 8, row 4).

`DatasetStore.add` (what `POST /datasets` runs, with `ArchiveLimits` built from the `SDR_MAX_ARCHIVE_*`
settings) is run in a fresh interpreter on each bomb, so pytest's own memory cannot hide or fake a
peak: the child resets its peak-RSS mark (`/proc/self/clear_refs`), then reports how far the mark
rose (`VmHWM`) and how many bytes it passed to `write()` (`wchar` in `/proc/self/io`) while the
archive was stored, refused and cleaned up.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.service.support import REPO

MIB = 2**20
MEMBER_BYTES = 32 * MIB  # holding a member in memory would add at least this much
# 1 MiB write chunks, and tarfile's stream reader, which inflates one 16 KiB block at a time without an
# output limit: deflate's maximum ratio (1032:1) makes that up to ~16.5 MiB, held about twice.
RSS_BOUND_MIB = 64

_MEASURE = r"""
import bz2, gzip, json, lzma, sys, tarfile, zipfile, zlib  # imported before the measurement starts
from pathlib import Path
from sdr_model.datasets.archive import ArchiveLimits
from service.datasets_store import DatasetRejected, DatasetStore
from service.settings import Settings

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

def wchar():
    return next(int(l.split()[1]) for l in open("/proc/self/io") if l.startswith("wchar:"))

settings = Settings()
limits = ArchiveLimits(settings.max_archive_members, settings.max_archive_unpacked_bytes, settings.max_archive_ratio)
store = DatasetStore(settings.data_dir, limits)
archive = Path(sys.argv[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
rss0, written0 = status("VmHWM"), wchar()
try:
    with archive.open("rb") as upload:
        store.add(upload, archive.name)
    refused = None
except DatasetRejected as exc:
    refused = str(exc)
peak_kib, written = status("VmHWM") - rss0, wchar() - written0
left = [str(p) for p in settings.data_dir.rglob("*") if p.is_file()]
print(json.dumps({"peak_kib": peak_kib, "written": written, "refused": refused, "left": left,
                  "max_total": limits.max_total_bytes, "max_ratio": limits.max_ratio}))
"""


def _zeros_zip(path: Path, size: int) -> Path:
    chunk = bytes(MIB)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("train/a/zeros.png", "w", force_zip64=True) as out,
    ):
        for _ in range(size // MIB):
            out.write(chunk)
    return path


def _zeros_tar(path: Path, mode: Literal["w:gz", "w:bz2"], members: int, size: int) -> Path:
    data = bytes(size)
    with tarfile.open(path, mode) as tf:
        for i in range(members):
            info = tarfile.TarInfo(f"train/{'ab'[i % 2]}/zeros-{i}.png")
            info.size = size
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "zip": _zeros_zip(folder / "bomb.zip", 256 * MIB),
        "tar.gz": _zeros_tar(folder / "bomb.tar.gz", "w:gz", 8, MEMBER_BYTES),
        # bzip2 packs 128 MiB of zeros into ~200 bytes
        "tar.bz2": _zeros_tar(folder / "bomb.tar.bz2", "w:bz2", 1, 128 * MIB),
    }


def _store_in_a_fresh_process(archive: Path, data_dir: Path, **settings: str) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "SDR_DATA_DIR": str(data_dir), **settings}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(archive)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("kind", "settings", "reason"),
    [
        ("zip", {}, "compression ratio"),  # refused from the central directory: nothing extracted
        ("tar.gz", {}, "likely compression bomb"),  # the ratio cap, counted while streaming members
        (
            "tar.gz",
            {"SDR_MAX_ARCHIVE_UNPACKED_BYTES": str(100 * MIB), "SDR_MAX_ARCHIVE_RATIO": "1000000"},
            "max_total_bytes",
        ),
        ("tar.bz2", {}, "likely compression bomb"),  # inflated with an output limit per read
    ],
    ids=["zip-bomb-default-caps", "tar-gz-ratio-default-caps", "tar-gz-total-100MiB", "tar-bz2-default-caps"],
)
def test_bombs_are_refused_with_bounded_memory_and_disk(
    bombs: dict[str, Path], tmp_path: Path, kind: str, settings: dict[str, str], reason: str
) -> None:
    archive = bombs[kind]
    m = _store_in_a_fresh_process(archive, tmp_path / "data", **settings)
    size = archive.stat().st_size
    extracted = m["written"] - size  # the upload itself is first copied into the data dir
    cap = min(m["max_total"], m["max_ratio"] * size)
    print(
        f"\n{archive.name} ({size / MIB:.2f} MiB, {kind}, caps {settings or 'default'}): refused; "
        f"peak RSS +{m['peak_kib'] / 1024:.1f} MiB, extracted {extracted / MIB:.1f} MiB "
        f"(cap {cap / MIB:.1f} MiB) + the {size / MIB:.2f} MiB upload copy"
    )
    assert m["refused"] is not None and reason in m["refused"] and "zeros" in m["refused"], m["refused"]
    assert m["left"] == []  # staging folder removed: no disk kept
    assert m["peak_kib"] < RSS_BOUND_MIB * 1024
    assert 0 <= extracted <= cap
