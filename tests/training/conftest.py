"""Fixtures for the training tests: the synthetic smoke recipe and small image trees on disk."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import TrainConfig, load_config
from training.distributed import Dist

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIG = REPO / "configs" / "sdr_tiny_synthetic.yaml"


def smoke_config(tmp_path: Path, **sections: dict[str, Any]) -> TrainConfig:
    """The shipped smoke recipe, with `run_dir` in `tmp_path` and sections partially overridden."""
    config = load_config(SMOKE_CONFIG)
    replaced = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, run_dir=str(tmp_path / "run"), **replaced)


@dataclasses.dataclass(frozen=True)
class SecondRank(Dist):
    """Rank 1 of a two-process job, without a process group: rank 0 is played by the callbacks.

    `at_barrier` is what rank 0 does while this rank waits at a barrier; `peer_min` is the value
    rank 0 contributes to `all_min`.
    """

    at_barrier: Callable[[], None] = lambda: None
    peer_min: int = 1

    def barrier(self) -> None:
        self.at_barrier()

    def all_min(self, value: int) -> int:
        return min(value, self.peer_min)


def second_rank(at_barrier: Callable[[], None] = lambda: None, peer_min: int = 1) -> SecondRank:
    return SecondRank(rank=1, world_size=2, device=torch.device("cpu"), at_barrier=at_barrier, peer_min=peer_min)


def write_config(config: TrainConfig, file: Path) -> Path:
    config.save(file)
    return file


def make_image_folder(root: Path, classes: int = 4, per_class: int = 6, size: int = 20, corrupt: int = 1) -> Path:
    """`root/<class>/<i>.png` gray images with class-dependent brightness, plus `corrupt` broken files."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((size, size + 4)) * 60 + c * 50).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    for i in range(corrupt):
        (root / "class_0" / f"broken_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(autouse=True)
def _training_tests_on_one_thread(one_thread: None) -> None:
    """Every training test runs on one intra-op thread (tests/conftest.py::one_thread says why)."""
