"""Shared fixtures. Tests run on 2 CPU cores: keep models tiny, inputs small."""

from __future__ import annotations

import torch

torch.set_num_threads(2)
