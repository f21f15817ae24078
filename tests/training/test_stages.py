"""Stage skipping in a torchrun job, as rank 1 sees it (its peer's view is a stand-in: no process group)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.training.conftest import second_rank, smoke_config
from training.run import FINAL_CHECKPOINT, open_run
from training.stages import run_stage


@pytest.mark.parametrize("peer_done", [False, True])
def test_a_stage_is_skipped_only_when_every_process_sees_it_finished(tmp_path: Path, peer_done: bool) -> None:
    """Rank 1 finds the final checkpoint that rank 0 has just written.

    Rank 0 may still be at calibration's barrier. Rank 1 must then wait there too: it used to
    return at once, skip the barrier, and leave rank 0 waiting for a peer that had moved on.
    """
    run = open_run(smoke_config(tmp_path))
    run.stage_dir("progressive").mkdir(parents=True)
    (run.stage_dir("progressive") / "done.json").write_text("{}")
    (run.run_dir / FINAL_CHECKPOINT).write_bytes(b"written by rank 0")
    barriers: list[str] = []
    rank = second_rank(at_barrier=lambda: barriers.append("waited"), peer_min=int(peer_done))
    run = dataclasses.replace(run, dist=rank)
    run_stage(run, "calibrate")
    assert barriers == ([] if peer_done else ["waited"])
