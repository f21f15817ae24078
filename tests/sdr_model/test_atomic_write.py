"""Atomic writes: the target is the old file or the whole new one, and nothing is left behind on error;
folders published by one rename are flushed whole first."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdr_model import atomic_write
from sdr_model.atomic_write import SYNC_THREADS, atomic_path, sync_tree, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.json"
    write_text_atomic(target, "old")
    assert write_text_atomic(target, "new") == target
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.safetensors"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]


def test_the_temporary_name_is_unique_per_write(tmp_path: Path) -> None:
    """Two writers of the same file (two workers, a retried task) never share a temporary file."""
    target = tmp_path / "job.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("a")
        second.write_text("b")
    assert target.read_text() == "a"  # the outer block finishes last


def _staged_tree(root: Path) -> Path:
    for name in ("data/train/a/1.png", "data/train/a/2.png", "data/test/b/3.png", "dataset.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


@pytest.mark.parametrize("threads", [1, SYNC_THREADS])
def test_sync_tree_flushes_every_file_and_each_folder_after_its_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    root = _staged_tree(tmp_path / "staged")
    flushed: list[Path] = []
    real = atomic_write._fsync
    monkeypatch.setattr(atomic_write, "_fsync", lambda path, flags: (flushed.append(Path(path)), real(path, flags)))
    sync_tree(root, threads=threads)
    everything = {root, *root.rglob("*")}
    assert sorted(flushed) == sorted(everything)  # each once, none missed
    for path in everything - {root}:
        assert flushed.index(path) < flushed.index(path.parent)  # an entry is on disk before its folder


def test_a_failed_flush_is_raised_and_no_folder_is_flushed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _staged_tree(tmp_path / "staged")
    broken = root / "data" / "train" / "a" / "2.png"
    flushed: list[Path] = []

    def fsync(path: Path, flags: int) -> None:
        if Path(path) == broken:
            raise OSError(5, "Input/output error", str(path))
        flushed.append(Path(path))

    monkeypatch.setattr(atomic_write, "_fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        sync_tree(root)
    assert all(path.is_file() for path in flushed)  # no folder: the tree is never reported durable
