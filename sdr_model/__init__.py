"""SDR supernet, sub-net extraction, checkpoint format and routing engine (see docs/ARCHITECTURE.md)."""

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
from sdr_model.paths import PathError, all_paths, id_to_path, parse_path, path_to_id, phase_paths
from sdr_model.registry import create_model, default_preprocessing, list_models, preset_config
from sdr_model.supernet import SDRResNet

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
