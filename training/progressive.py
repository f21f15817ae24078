"""Data-aware progressive training, algorithm 1 of the paper: the network space N grows by phase.

Phase 0 is N = {W0} (the baseline stage). Phase s = 1..4 adds the sub-nets that differ from the
anchor `0000` only in their last s stages, so N holds W0 plus 4, 16, 64, then all 256 sub-nets
(`sdr_model.paths.phase_paths`). At every step W0 is drawn with probability rho, otherwise a
sub-net uniformly from the phase's set (algorithm 1, line 6).

`mixed_pool` is an investigation beyond the paper (docs/MODEL_CARD.md, "What was tried"): a
sub-net's pool can hold a share of whole-set images beside its cluster, so the weights it shares
with W0 never see one-cluster batches only.
"""

from __future__ import annotations

import bisect
import itertools

import torch

from sdr_model.paths import phase_paths

__all__ = ["PhaseSchedule", "mixed_pool", "sample_path"]


class PhaseSchedule:
    """Maps a progressive step to its phase, from per-phase step counts."""

    def __init__(self, phase_steps: tuple[int, ...]) -> None:
        self.phase_steps = phase_steps
        self.ends = list(itertools.accumulate(phase_steps))  # first step after each phase

    @property
    def total_steps(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def starts(self) -> list[int]:
        """First step of each phase 1..S (where the plots draw phase boundaries)."""
        return [0, *self.ends[:-1]]

    def phase(self, step: int) -> int:
        """Phase (1-based) of 0-based `step`."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} is outside the schedule's {self.total_steps} steps")
        return bisect.bisect_right(self.ends, step) + 1


def sample_path(generator: torch.Generator, rho: float, phase: int, num_stages: int, num_groups: int) -> str | None:
    """W0 (`None`) with probability rho, else a sub-net uniformly from phase `phase`'s set."""
    if float(torch.rand((), generator=generator)) < rho:
        return None
    candidates = phase_paths(phase, num_stages, num_groups)
    return candidates[int(torch.randint(len(candidates), (), generator=generator))]


def mixed_pool(members: torch.Tensor, whole: torch.Tensor, mix: float, generator: torch.Generator) -> torch.Tensor:
    """`members` plus whole-set images drawn so that they make up about `mix` of the pool.

    The draw is fixed per generator, so training and calibration of a path see the same pool.
    A whole-set image that is also a member may appear twice; at 1/256 of the set that is rare.
    """
    if not 0.0 <= mix < 1.0:
        raise ValueError(f"mix must be in [0, 1), got {mix}")
    extra = min(round(len(members) * mix / (1.0 - mix)), len(whole))
    if extra == 0:
        return members
    return torch.cat([members, whole[torch.randperm(len(whole), generator=generator)[:extra]]])
