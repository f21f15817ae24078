"""`torch_threads`: torch's intra-op thread count for one block of code, restored afterwards.

CPU work here often wants one torch thread per worker thread (the route's walk, scoring, the
benchmarks' local baselines, tests on a shared CI machine): OpenMP threads that spin-wait for each
other on busy cores were measured 10-40x slower than one thread. The count is process-wide, so set
it around a whole pool, never inside its threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the duration (None: left alone)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
