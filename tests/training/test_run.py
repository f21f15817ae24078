"""`open_run` in a torchrun job, as a rank other than the main one sees it (no process group needed),
and the layout of the backbone a run trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.training.conftest import second_rank, smoke_config
from training import run as run_module
from training.config import TrainConfig, TrainConfigError
from training.data.augment import TwoViewAugment


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


def test_the_backbone_trains_with_nhwc_activations_behind_its_one_channel_input(tmp_path: Path) -> None:
    """`TRAIN_MEMORY_FORMAT`: a [B, 1, S, S] batch cannot make the activations NHWC by itself."""
    run = run_module.open_run(smoke_config(tmp_path))
    backbone = run.new_backbone().train()
    assert backbone.config.in_chans == 1
    x1, _ = TwoViewAugment(run.config.augment, run.preprocessing)(
        run.source.load(0)[None].repeat(4, 1, 1, 1), torch.Generator().manual_seed(0)
    )
    nhwc: list[bool] = []
    backbone.conv1.register_forward_hook(lambda _m, _i, out: nhwc.append(out.stride(1) == 1))
    backbone.forward_features(x1, "0123").sum().backward()
    assert nhwc == [True]
    assert backbone.conv1.weight.grad is not None and backbone.conv1.weight.grad.abs().sum() > 0
