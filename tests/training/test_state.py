"""Resumable state (safetensors + JSON, no pickle), metrics truncation on resume, recipe files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from training.config import TrainConfig, TrainConfigError, load_config
from training.metrics import MetricsLog, read_metrics
from training.state import StateError, load_state, save_state

from .conftest import REPO


def _model_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return model, optimizer


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = model(torch.randn(8, 4, generator=g)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_state_round_trip_restores_model_optimizer_and_rng(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer(0)
    _train(model, optimizer, 3)
    torch.manual_seed(123)
    save_state(tmp_path, 3, model, optimizer, {"note": "x"})
    expected_draw = torch.rand(3)
    assert not any(p.suffix in {".pt", ".pth", ".pkl"} for p in tmp_path.iterdir())

    fresh, fresh_optimizer = _model_and_optimizer(1)
    step, extra = load_state(tmp_path, fresh, fresh_optimizer, torch.device("cpu"))
    assert step == 3 and extra == {"note": "x"}
    assert torch.equal(torch.rand(3), expected_draw)  # torch RNG restored
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _train(model, optimizer, 2)  # momentum buffers restored: the next steps agree exactly
    _train(fresh, fresh_optimizer, 2)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_files_that_disagree_are_refused(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer(0)
    save_state(tmp_path, 3, model, optimizer, {})
    meta = json.loads((tmp_path / "state.json").read_text())
    meta["step"] = 4  # as if the JSON of a later save landed but not its tensors
    (tmp_path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(StateError, match="disagree"):
        load_state(tmp_path, model, optimizer, torch.device("cpu"))


def test_metrics_log_drops_lines_past_the_resumed_step(tmp_path: Path) -> None:
    file = tmp_path / "metrics.jsonl"
    log = MetricsLog(file)
    for step in range(1, 7):
        log.log({"step": step, "loss": float(step)})
    with file.open("a") as f:
        f.write('{"step": 7, "los')  # torn line from a kill mid-write
    MetricsLog(file, resume_step=4).log({"step": 5, "loss": 50.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(file)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]


@pytest.mark.parametrize("name", ["sdr_tiny_fmnist.yaml", "sdr_resnet50_imagenet.yaml", "sdr_tiny_synthetic.yaml"])
def test_shipped_recipes_load_and_round_trip(name: str, tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / name)
    config.save(tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == config


def test_unknown_recipe_keys_are_named(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("progressive:\n  phase_step: [1, 2]\n")
    with pytest.raises(TrainConfigError, match=r"progressive\.phase_step"):
        load_config(file)
    assert TrainConfig.from_dict({"progressive": {"phase_steps": [1, 2, 3, 4]}}).progressive.phase_steps == (1, 2, 3, 4)


def test_overrides_change_only_the_named_settings() -> None:
    recipe = REPO / "configs" / "sdr_tiny_fmnist.yaml"
    base = load_config(recipe)
    changed = load_config(
        recipe, ["cluster.mapping=random", "progressive.rho=1.0", "progressive.phase_steps=[1, 2, 3, 4]"]
    )
    assert (changed.cluster.mapping, changed.progressive.rho) == ("random", 1.0)
    assert changed.progressive.phase_steps == (1, 2, 3, 4)
    assert (
        dataclasses.replace(
            changed,
            cluster=base.cluster,
            progressive=dataclasses.replace(
                changed.progressive, rho=base.progressive.rho, phase_steps=base.progressive.phase_steps
            ),
        )
        == base
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("progressive.rho", "KEY=VALUE"),
        ("progressive.rhoo=1", r"progressive\.rhoo"),
        ("seed.x=1", "seed is not a section"),
        ("progressive.mix=1.0", r"progressive\.mix must be in \[0, 1\)"),
    ],
)
def test_bad_overrides_are_named(override: str, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        load_config(REPO / "configs" / "sdr_tiny_fmnist.yaml", [override])
