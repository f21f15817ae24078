"""Shared fixtures. Tests run on 2 CPU cores: keep models tiny, inputs small."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from sdr_model.torch_threads import torch_threads

torch.set_num_threads(2)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one intra-op thread, restoring the suite's setting afterwards.

    Many small tensor ops: on a shared CI machine with more runnable processes than cores, OpenMP
    threads that spin-wait for each other made them 10-40x slower than on one thread (measured
    here under a load average of 10; a 2-thread prefix walk was 20x slower).
    """
    with torch_threads(1):
        yield
