"""Algorithm 1's network space: phase sets, the phase schedule, the rho draw, mixed pools."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdr_model.cli import main as sdr
from sdr_model.paths import phase_paths
from training.config import load_config
from training.progressive import PhaseSchedule, mixed_pool, sample_path

from .conftest import smoke_config, write_config


def _differs_from_anchor_only_in_last(path: str, s: int) -> bool:
    return all(d == "0" for d in path[: 4 - s])


@pytest.mark.parametrize("phase", [0, 1, 2, 3, 4])
def test_phase_sets_are_exact(phase: int) -> None:
    every = ["".join(d) for d in itertools.product("0123", repeat=4)]
    expected = [] if phase == 0 else [p for p in every if _differs_from_anchor_only_in_last(p, phase)]
    got = phase_paths(phase)
    assert len(got) == [0, 4, 16, 64, 256][phase]
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got)


def test_phase_sets_grow_monotonically() -> None:
    for s in range(1, 4):
        assert set(phase_paths(s)) < set(phase_paths(s + 1))


def test_schedule_maps_steps_to_phases() -> None:
    schedule = PhaseSchedule((2, 3, 0, 1))
    assert schedule.total_steps == 6
    assert [schedule.phase(t) for t in range(6)] == [1, 1, 2, 2, 2, 4]
    assert schedule.starts == [0, 2, 5, 5]
    with pytest.raises(ValueError):
        schedule.phase(6)


def test_sample_path_draws_w0_with_probability_rho_and_stays_in_phase() -> None:
    g = torch.Generator().manual_seed(0)
    draws = [sample_path(g, 0.3, 2, 4, 4) for _ in range(4000)]
    w0 = sum(d is None for d in draws) / len(draws)
    assert w0 == pytest.approx(0.3, abs=0.03)
    subnets = [d for d in draws if d is not None]
    assert set(subnets) == set(phase_paths(2))  # uniform over the phase: all 16 drawn


def test_mixed_pool_keeps_the_cluster_and_adds_the_asked_share_of_the_whole_set() -> None:
    members, whole = torch.arange(100, 140), torch.arange(1000)
    pool = mixed_pool(members, whole, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(pool[:40], members)
    assert len(pool) == 80 and set(pool[40:].tolist()) <= set(whole.tolist())
    assert len(set(pool[40:].tolist())) == 40  # drawn without replacement
    again = mixed_pool(members, whole, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(pool, again)  # training and calibration see the same pool
    assert torch.equal(mixed_pool(members, whole, 0.0, torch.Generator()), members)


def test_mixed_pool_rejects_a_share_of_one() -> None:
    with pytest.raises(ValueError, match="mix"):
        mixed_pool(torch.arange(4), torch.arange(10), 1.0, torch.Generator())


STATE = "state.safetensors"


def test_mix_changes_only_what_sub_nets_train_on(tmp_path: Path) -> None:
    """Same seed, `progressive.mix` 0 vs 0.5: the baseline stage is bit-identical, the progressive
    weights differ (sub-net batches now hold whole-set images), and the recipe records the share."""
    states = {}
    for mix in (0.0, 0.5):
        config = smoke_config(tmp_path / f"mix{mix}", progressive={"mix": mix})
        assert sdr(["train", "all", "--config", str(write_config(config, tmp_path / f"mix{mix}.yaml"))]) == 0
        run = Path(config.run_dir)
        states[mix] = {stage: load_file(str(run / stage / STATE)) for stage in ("baseline", "progressive")}
        assert load_config(run / "config.yaml").progressive.mix == mix
    plain, mixed = states[0.0], states[0.5]
    assert all(torch.equal(plain["baseline"][k], mixed["baseline"][k]) for k in plain["baseline"])
    assert any(not torch.equal(plain["progressive"][k], mixed["progressive"][k]) for k in plain["progressive"])
