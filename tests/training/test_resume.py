"""Kill a run mid-stage (SIGKILL, twice), rerun it, and get the weights of a run never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sdr_model.cli import main as sdr

from .conftest import REPO, smoke_config, write_config

# One thread per run: results are compared bit for bit, and a single thread also keeps the runs
# fast on a shared, oversubscribed CI machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


class Runs:
    """Starts `sdr train all` processes and makes sure none outlives the test."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, config_file: Path) -> subprocess.Popen[bytes]:
        log = config_file.with_suffix(".log").open("ab")  # a file, not a pipe: progress bars would fill a pipe
        process = subprocess.Popen(
            [sys.executable, "-m", "sdr_model.cli", "train", "all", "--config", str(config_file)],
            cwd=REPO,
            env=ENV,
            stdout=log,
            stderr=log,
        )
        self.started.append(process)
        return process

    def finish(self, config_file: Path, timeout: float = 400) -> None:
        process = self.start(config_file)
        assert process.wait(timeout=timeout) == 0, config_file.with_suffix(".log").read_text()[-3000:]

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def runs() -> Iterator[Runs]:
    runs = Runs()
    yield runs
    runs.stop_all()


def _saved_step(stage_dir: Path) -> int:
    try:
        return int(json.loads((stage_dir / "state.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _kill_once_saved(process: subprocess.Popen[bytes], stage_dir: Path, total: int, timeout: float = 400) -> int:
    """SIGKILL `process` as soon as `stage_dir` holds a save short of the stage's end; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _saved_step(stage_dir)
        if 0 < step < total:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return step
        assert process.poll() is None, "run ended before it could be killed mid-stage"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path: Path, runs: Runs) -> None:
    sections: dict[str, dict[str, Any]] = {
        "baseline": {"epochs": 2},  # 24 steps of 64 images
        "progressive": {"phase_steps": (2, 2, 4, 12)},
    }
    reference = smoke_config(tmp_path / "reference", **sections)
    killed = smoke_config(tmp_path / "killed", **sections)
    ref_file = write_config(reference, tmp_path / "reference.yaml")
    killed_file = write_config(killed, tmp_path / "killed.yaml")
    run_dir = Path(killed.run_dir)

    assert sdr(["train", "all", "--config", str(ref_file)]) == 0  # in-process, one thread (conftest.py)
    baseline_step = _kill_once_saved(runs.start(killed_file), run_dir / "baseline", total=24)
    progressive_step = _kill_once_saved(runs.start(killed_file), run_dir / "progressive", total=20)
    runs.finish(killed_file)
    assert baseline_step % killed.checkpoint_every == 0 and progressive_step % killed.checkpoint_every == 0

    expected = load_file(str(Path(reference.run_dir) / "supernet.safetensors"))
    got = load_file(str(run_dir / "supernet.safetensors"))
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    # the metrics read as one uninterrupted run: every step once
    steps = [json.loads(line)["step"] for line in (run_dir / "progressive" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))
