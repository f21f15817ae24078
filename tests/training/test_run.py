"""`open_run` in a torchrun job, as a rank other than the main one sees it (no process group needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.training.conftest import second_rank, smoke_config
from training import run as run_module
from training.config import TrainConfig, TrainConfigError


def _second_rank(monkeypatch: pytest.MonkeyPatch, main_saves: TrainConfig, file: Path) -> None:
    """This process becomes rank 1 of 2; rank 0 writes `main_saves` to `file` while rank 1 waits at the barrier."""

    def rank_0_saves() -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        main_saves.save(file)

    rank = second_rank(at_barrier=rank_0_saves)
    monkeypatch.setattr(run_module, "setup_distributed", lambda device: rank)


def test_every_rank_checks_the_recipe_the_main_rank_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 reads `config.yaml` only after the barrier, once the main rank has written it.

    It used to check before the barrier: it could read the file while rank 0 was still writing it
    (torchrun's test failed with "a different recipe"), or miss a recipe that differed.
    """
    config = smoke_config(tmp_path)
    saved = Path(config.run_dir) / "config.yaml"
    _second_rank(monkeypatch, dataclasses.replace(config, seed=config.seed + 1), saved)
    with pytest.raises(TrainConfigError, match="different recipe"):
        run_module.open_run(config)

    saved.unlink()
    _second_rank(monkeypatch, config, saved)
    run = run_module.open_run(config)
    assert run.run_dir == Path(config.run_dir) and not run.dist.is_main
