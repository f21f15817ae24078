"""Safe extraction of uploaded archives: every refusal names the member, nothing escapes, bombs stop early."""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdr_model.datasets import ArchiveError, ArchiveLimits, DatasetError, open_dataset, safe_extract


def _png_bytes(value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _dataset_members() -> dict[str, bytes]:
    return {f"{split}/{c}/{i}.png": _png_bytes(40 * i) for split in ("train", "test") for c in "ab" for i in range(2)}


def _assert_refused(archive: Path, dest: Path, member: str, limits: ArchiveLimits | None = None) -> None:
    with pytest.raises(ArchiveError, match=re.escape(repr(member))):  # messages quote members with !r
        safe_extract(archive, dest, limits)
    assert not dest.exists(), "a refused archive must leave no extraction folder behind"


def test_zip_and_tar_gz_datasets_extract_and_read(tmp_path: Path) -> None:
    members = _dataset_members()
    for archive in (
        _zip(tmp_path / "data.zip", {f"data/{k}": v for k, v in members.items()}),
        _tar(tmp_path / "data.tar.gz", list(members.items())),
        _tar(tmp_path / "data.tar", list(members.items()), mode="w"),
    ):
        with open_dataset(archive) as dataset:
            assert dataset.classes == ("a", "b")
            assert dataset.counts() == {"train": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}}
            assert all(r.path.is_file() for r in dataset.records)
            extracted = dataset.records[0].path
        assert not extracted.exists(), "the temporary extraction folder is removed on exit"


@pytest.mark.parametrize(
    "name", ["../evil.png", "train/../../evil.png", "/tmp/evil.png", "C:/evil.png", "a\\..\\b.png"]
)
def test_traversal_and_absolute_names_are_refused(tmp_path: Path, name: str) -> None:
    for archive in (
        _zip(tmp_path / "t.zip", {name: _png_bytes()}),
        _tar(tmp_path / "t.tar.gz", [(name, _png_bytes())]),
    ):
        _assert_refused(archive, tmp_path / "out", name)
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("train/a/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    _assert_refused(archive, tmp_path / "out", "train/a/link.png")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "special file"),
        (tarfile.BLKTYPE, "special file"),
        (tarfile.FIFOTYPE, "special file"),
    ],
)
def test_tar_links_and_special_files_are_refused(tmp_path: Path, kind: bytes, expected: str) -> None:
    info = tarfile.TarInfo("train/a/x.png")
    info.type, info.linkname = kind, "train/a/0.png"
    archive = _tar(tmp_path / "t.tar", [("train/a/0.png", _png_bytes()), info], mode="w")
    with pytest.raises(ArchiveError, match=f"train/a/x.png.*{expected}"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nested_archives_are_refused_by_name_and_by_content(tmp_path: Path) -> None:
    inner = _zip(tmp_path / "inner.zip", {"x.png": _png_bytes()}).read_bytes()
    _assert_refused(_zip(tmp_path / "a.zip", {"train/a/inner.zip": inner}), tmp_path / "o1", "train/a/inner.zip")
    disguised = gzip.compress(b"not an image")
    _assert_refused(_zip(tmp_path / "b.zip", {"train/a/x.png": disguised}), tmp_path / "o2", "train/a/x.png")
    _assert_refused(_tar(tmp_path / "c.tar.gz", [("train/a/y.png", inner)]), tmp_path / "o3", "train/a/y.png")


def test_zip_bomb_is_refused_before_writing(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"train/a/zeros.png": b"\0" * (20 << 20)})
    assert archive.stat().st_size < 100_000  # about 1000:1
    _assert_refused(archive, tmp_path / "out", "train/a/zeros.png")


def test_tar_gz_bomb_is_refused_by_ratio_and_by_total_size(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "bomb.tar.gz", [("train/a/zeros.png", b"\0" * (20 << 20))])
    _assert_refused(archive, tmp_path / "out", "train/a/zeros.png")
    big_ratio_ok = ArchiveLimits(max_ratio=1e6, max_total_bytes=1 << 20)
    with pytest.raises(ArchiveError, match="max_total_bytes"):
        safe_extract(archive, tmp_path / "out", big_ratio_ok)


def test_bytes_written_are_counted_not_just_declared(tmp_path: Path) -> None:
    # Many small, individually harmless members whose sum breaks the total cap.
    archive = _zip(tmp_path / "many.zip", {f"train/a/{i}.png": os.urandom(4096) for i in range(20)})
    with pytest.raises(ArchiveError, match="max_total_bytes"):
        safe_extract(archive, tmp_path / "out", ArchiveLimits(max_total_bytes=40_000))
    assert not (tmp_path / "out").exists()


def test_entry_count_cap(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "n.tar", [(f"train/a/{i}.png", _png_bytes()) for i in range(12)], mode="w")
    _assert_refused(archive, tmp_path / "out", "train/a/10.png", ArchiveLimits(max_entries=10))


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "d.tar", [("train/a/0.png", _png_bytes()), ("train/a/0.png", _png_bytes(9))], mode="w")
    _assert_refused(archive, tmp_path / "out", "train/a/0.png")


def test_corrupt_and_non_archives_are_refused(tmp_path: Path) -> None:
    good = _zip(tmp_path / "good.zip", _dataset_members()).read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArchiveError):
        safe_extract(truncated, tmp_path / "out")
    not_archive = tmp_path / "notes.txt"
    not_archive.write_text("hello")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        safe_extract(not_archive, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_modes_are_sanitised_and_os_litter_skipped(tmp_path: Path) -> None:
    info = tarfile.TarInfo("train/a/0.png")
    data = _png_bytes()
    info.size, info.mode = len(data), 0o4777  # setuid, world-writable
    archive = tmp_path / "m.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(info, io.BytesIO(data))
        for name in ("__MACOSX/train/a/._0.png", "train/a/._1.png", "train/.DS_Store"):
            litter = tarfile.TarInfo(name)
            litter.size = 3
            tf.addfile(litter, io.BytesIO(b"xyz"))
    out = safe_extract(archive, tmp_path / "out")
    assert out.files == 1
    assert stat.S_IMODE((tmp_path / "out/train/a/0.png").stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["0.png"]


def test_manifest_in_an_archive_cannot_reach_outside_files(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png_bytes())
    manifest = f'{{"path": "{outside}", "label": "a"}}\n{{"path": "x.png", "label": "b"}}\n'
    archive = _zip(tmp_path / "m.zip", {"manifest.jsonl": manifest.encode(), "x.png": _png_bytes()})
    with pytest.raises(DatasetError, match="outside the allowed data roots"), open_dataset(archive):
        pass
