"""`DatasetStore.add`: durable before it is visible (flushed while staged, then renamed), and its decode check."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

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


def test_the_decode_check_lists_broken_files_and_decompression_bombs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked in a thread pool, with the workers' rules: a broken file and an image over the pixel limit."""
    images = write_image_tree(tmp_path / "images")  # 28 x 28 = 784 pixels each
    Image.new("L", (40, 40)).save(images / "train" / "blobs" / "bomb.png")  # 1,600 pixels
    (images / "train" / "checks" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; 1,600 is in between.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow still warns; the check does not rely on it
        stored, _ = DatasetStore(tmp_path / "data", ArchiveLimits()).add(io.BytesIO(zip_tree(images)), "images.zip")
    assert stored.info["unreadable"] == ["train/blobs/bomb.png", "train/checks/broken.png"]
    assert stored.info["num_images"] == 3 * (8 + 3)  # the tree's own images: 3 classes, 8 train and 3 test each
