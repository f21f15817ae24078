"""Fashion-MNIST from its idx files (gzip or raw), as Debian's `dataset-fashion-mnist` installs them."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import torch

from training.data.source import DataError, ImageSource

__all__ = ["FashionMNISTSource", "read_idx"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAGIC = {3: 2051, 1: 2049}  # idx magic numbers for uint8 images (3 dims) and labels (1 dim)


def read_idx(file: Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array of its declared shape."""
    data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    (magic,) = struct.unpack(">i", data[:4])
    ndim = data[3]
    if _MAGIC.get(ndim) != magic:
        raise DataError(f"{file}: not a uint8 idx file (magic {magic})")
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{file}: truncated idx file ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


class FashionMNISTSource(ImageSource):
    """All images of one split held in memory as uint8 `[N, 1, 28, 28]`."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(
                f"Fashion-MNIST folder {root} does not exist; install it with "
                f"`apt-get install dataset-fashion-mnist` or point data.root at the idx files"
            )
        images_file, labels_file = (_find(root, name) for name in _FILES[split])
        images, labels = read_idx(images_file), read_idx(labels_file)
        if len(images) != len(labels):
            raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28]
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.channels = 1
        self._digest = hashlib.sha256(images_file.read_bytes() + labels_file.read_bytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> torch.Tensor | None:
        return self.images[index]

    def fingerprint(self) -> str:
        return self._digest


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST folder {root} has neither {name}.gz nor {name}")
