"""The clustering artifact: which path trains on which image, saved as safetensors + JSON.

`path_ids[i]` is the integer id of the path image `i` trains (-1: the image could not be
decoded and trains nothing). The JSON report holds the method, mapping, sizes and NMI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sdr_model.atomic_write import atomic_path, write_text_atomic
from sdr_model.paths import id_to_path

__all__ = ["Clusters"]

_TENSORS, _REPORT = "clusters.safetensors", "clusters.json"


@dataclass
class Clusters:
    """Image -> path assignment of a run.

    Attributes:
        path_ids: int64 `[N]`, path id per image, -1 for unreadable images.
        prototypes: `[k, D]` cluster centres in path-id order (for inspection and `aligned`).
        report: JSON-able summary (method, mapping, sizes, NMI, comparison with k-means).
    """

    path_ids: torch.Tensor
    prototypes: torch.Tensor
    report: dict[str, Any]

    @property
    def mapping(self) -> str:
        return str(self.report["mapping"])

    def members(self, path: str) -> torch.Tensor:
        """Indices of the images of `path`'s cluster D_i."""
        return (self.path_ids == int(path, self.num_groups)).nonzero()[:, 0]

    @property
    def num_groups(self) -> int:
        return int(self.report["num_groups"])

    def readable(self) -> torch.Tensor:
        """Indices of every decodable image: the whole set D_0."""
        return (self.path_ids >= 0).nonzero()[:, 0]

    def sizes(self) -> dict[str, int]:
        """Images per path, every path listed (zero included)."""
        k = int(self.report["num_paths"])
        counts = torch.bincount(self.path_ids[self.path_ids >= 0], minlength=k).tolist()
        stages = int(self.report["num_stages"])
        return {id_to_path(i, stages, self.num_groups): int(c) for i, c in enumerate(counts)}

    def save(self, directory: Path) -> None:
        tensors = {"path_ids": self.path_ids.contiguous(), "prototypes": self.prototypes.float().contiguous()}
        with atomic_path(directory / _TENSORS) as tmp:
            save_file(tensors, str(tmp))
        write_text_atomic(directory / _REPORT, json.dumps(self.report, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Clusters:
        tensors = load_file(str(directory / _TENSORS))
        report = json.loads((directory / _REPORT).read_text())
        return cls(tensors["path_ids"], tensors["prototypes"], report)

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / _TENSORS).is_file() and (directory / _REPORT).is_file()
