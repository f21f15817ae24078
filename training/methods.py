"""Build the SSL method a recipe names."""

from __future__ import annotations

from sdr_model.supernet import SDRResNet
from training.byol import BYOL
from training.config import SSLConfig, TrainConfigError
from training.simsiam import SimSiam
from training.ssl_method import SSLMethod

__all__ = ["build_method"]


def build_method(backbone: SDRResNet, config: SSLConfig) -> SSLMethod:
    """SimSiam or BYOL around `backbone`."""
    if config.method == "simsiam":
        return SimSiam(backbone, config)
    if config.method == "byol":
        return BYOL(backbone, config)
    raise TrainConfigError(f"unknown ssl.method {config.method!r}; use simsiam or byol")
