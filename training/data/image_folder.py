"""ImageFolder trees: `root/<class>/**/<image>`; the class folder names become labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from training.data.decode import IMAGE_EXTENSIONS
from training.data.source import DataError, FileSource

__all__ = ["ImageFolderSource"]


class ImageFolderSource(FileSource):
    """Every image file under `root/<class>/`, in sorted order, decoded lazily."""

    def __init__(self, root: str | Path, channels: int, storage_size: int) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist (data.root in the config)")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"image folder {self.root} has no class sub-folders (expected root/<class>/<image>)")
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            found = sorted(p for p in (self.root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            files += found
            labels += [label] * len(found)
        if not files:
            raise DataError(f"image folder {self.root} holds no images with extensions {IMAGE_EXTENSIONS}")
        self.files, self.classes = files, classes
        self.labels = torch.tensor(labels, dtype=torch.long)
        self._label_list = labels
        self.channels, self.storage_size = channels, storage_size

    def fingerprint(self) -> str:
        # Names, sizes and labels: cheap on ImageNet-sized trees, and changes when files do.
        digest = hashlib.sha256()
        for file, label in zip(self.files, self._label_list, strict=True):
            digest.update(f"{file.relative_to(self.root)}\0{file.stat().st_size}\0{label}\n".encode())
        return digest.hexdigest()
