"""The interface every pre-training image source implements.

A source is an indexable set of images stored as uint8 squares `[C, S, S]` of one size, so a
batch stacks without padding and the augmentations run batched. Labels are optional: they are
only used to report clustering NMI, never for training.
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch
from torch.utils.data import Dataset

from training.data.decode import decode_image

__all__ = ["DataError", "FileSource", "ImageSource"]


class DataError(ValueError):
    """A data source that cannot be read: missing folder, bad manifest, empty set. Says which and why."""


class ImageSource(Dataset[tuple[int, torch.Tensor | None]], abc.ABC):
    """Images as uint8 `[C, S, S]` tensors; `load` returns None for an unreadable image.

    Attributes:
        channels: 1 or 3.
        labels: int64 `[N]` class ids, or None when the source has no labels.
    """

    channels: int
    labels: torch.Tensor | None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, index: int) -> torch.Tensor | None:
        """Image `index` as uint8 `[C, S, S]`, or None if it cannot be decoded (skipped and counted)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex digest identifying the data, recorded in the checkpoint's provenance."""

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        return index, self.load(index)


class FileSource(ImageSource):
    """A source whose images are files on disk (ImageFolder trees, manifests), decoded when loaded.

    Subclasses fill `files`, `channels` and `storage_size` and say how they fingerprint the data.
    """

    files: list[Path]
    storage_size: int  # side of the stored uint8 square

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor | None:
        return decode_image(self.files[index], self.channels, self.storage_size)
