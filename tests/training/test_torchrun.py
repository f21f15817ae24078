"""`torchrun --nproc_per_node=2` on CPU (gloo): the whole pipeline in two processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdr_model import load_checkpoint

from .conftest import REPO, smoke_config, write_config


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    config = smoke_config(tmp_path, progressive={"phase_steps": (2, 2, 2, 4)})
    file = write_config(config, tmp_path / "recipe.yaml")
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "sdr_model.cli", "train", "all", "--config", str(file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    # A failing rank's own message comes first: the tail is the launcher's report, and the other
    # rank's traceback of the broken connection, which can push it out.
    errors = [line for line in result.stderr.splitlines() if "sdr train: error" in line]
    assert result.returncode == 0, "\n".join([*errors, result.stderr[-3000:]])
    _, meta = load_checkpoint(Path(config.run_dir) / "supernet.safetensors")
    assert meta.provenance["world_size"] == 2
    assert meta.provenance["steps"]["progressive"] == 10
