"""The collapse signal: per-dimension std of L2-normalised outputs (SimSiam §4.1, solo-learn's z_std).

A collapsed encoder maps every input to one vector: the std is 0. Healthy outputs spread over the
unit sphere give about 1/sqrt(d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["collapse_std"]


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the batch std of `F.normalize(z)`; `z` is `[B, d]`."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())
