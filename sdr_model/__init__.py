"""SDR supernet, sub-net extraction, checkpoint format and routing engine (see docs/ARCHITECTURE.md).

Names are resolved lazily (PEP 562): `sdr_model.cli` is imported by every `sdr` process, the
torch-free API process included, and importing this package must not drag in torch and timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdr_model.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from sdr_model.checkpoint import (
        CheckpointError,
        CheckpointMetadata,
        load_checkpoint,
        load_subnet,
        read_metadata,
        save_checkpoint,
        save_subnet,
    )
    from sdr_model.config import ConfigError, Preprocessing, SDRConfig
    from sdr_model.extract import extract_subnet, subnet_state_dict, subnet_timm_kwargs
    from sdr_model.inference import inference_subnet
    from sdr_model.paths import PathError, all_paths, id_to_path, parse_path, path_to_id, phase_paths
    from sdr_model.registry import create_model, default_preprocessing, list_models, preset_config
    from sdr_model.supernet import SDRResNet

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "CheckpointMetadata": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_subnet": "checkpoint",
    "read_metadata": "checkpoint",
    "save_checkpoint": "checkpoint",
    "save_subnet": "checkpoint",
    "ConfigError": "config",
    "Preprocessing": "config",
    "SDRConfig": "config",
    "extract_subnet": "extract",
    "subnet_state_dict": "extract",
    "subnet_timm_kwargs": "extract",
    "inference_subnet": "inference",
    "PathError": "paths",
    "all_paths": "paths",
    "id_to_path": "paths",
    "parse_path": "paths",
    "path_to_id": "paths",
    "phase_paths": "paths",
    "create_model": "registry",
    "default_preprocessing": "registry",
    "list_models": "registry",
    "preset_config": "registry",
    "SDRResNet": "supernet",
}

__all__ = [
    "CheckpointError",
    "CheckpointMetadata",
    "ConfigError",
    "PathError",
    "Preprocessing",
    "SDRConfig",
    "SDRResNet",
    "all_paths",
    "create_model",
    "default_preprocessing",
    "extract_subnet",
    "id_to_path",
    "inference_subnet",
    "list_models",
    "load_checkpoint",
    "load_subnet",
    "parse_path",
    "path_to_id",
    "phase_paths",
    "preset_config",
    "read_metadata",
    "save_checkpoint",
    "save_subnet",
    "subnet_state_dict",
    "subnet_timm_kwargs",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
