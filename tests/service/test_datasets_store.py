"""`DatasetStore.add` makes an upload durable before it is visible: flushed while staged, then renamed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sdr_model.datasets.archive import ArchiveLimits
from service import datasets_store
from service.datasets_store import DatasetStore
from tests.service.support import write_image_tree, zip_tree


def test_an_upload_is_on_disk_before_its_commit_and_the_commit_before_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatasetStore(tmp_path / "data", ArchiveLimits())
    events: list[tuple[str, Path, bool]] = []  # (call, folder, whether any dataset is visible yet)

    def visible() -> bool:
        return any(store.root.iterdir())

    def sync_tree(root: Path) -> None:
        assert (root / "dataset.json").is_file() and (root / "data").is_dir()  # the whole staged dataset
        events.append(("tree", Path(root), visible()))

    def sync_folder(folder: Path) -> None:
        events.append(("folder", Path(folder), visible()))

    monkeypatch.setattr(datasets_store, "sync_tree", sync_tree)
    monkeypatch.setattr(datasets_store, "sync_folder", sync_folder)
    archive = zip_tree(write_image_tree(tmp_path / "images"))
    stored, existed = store.add(io.BytesIO(archive), "images.zip")
    assert not existed and stored.root.is_dir()
    assert [(call, seen) for call, _, seen in events] == [("tree", False), ("folder", True)]
    assert events[1][1] == store.root  # the folder that holds the rename
    events.clear()
    assert store.add(io.BytesIO(archive), "images.zip")[1] and events == []  # already stored: nothing to flush
