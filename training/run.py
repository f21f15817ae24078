"""A run: the recipe, its run directory, the data, the process's place in a torchrun job.

The run directory keeps the resolved recipe (`config.yaml`); a run resumed with a different
recipe is refused, because mixing recipes would silently break "same result as an uninterrupted
run". Each stage writes under `RUN_DIR/<stage>/`, the final checkpoint is `RUN_DIR/supernet.safetensors`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from sdr_model.config import Preprocessing, SDRConfig
from sdr_model.registry import create_model, default_preprocessing, preset_config
from sdr_model.supernet import SDRResNet
from training.config import TrainConfig, TrainConfigError
from training.data import ImageSource, build_source
from training.distributed import Dist, setup_distributed

__all__ = ["FINAL_CHECKPOINT", "TRAIN_MEMORY_FORMAT", "Run", "open_run"]

FINAL_CHECKPOINT = "supernet.safetensors"

# The supernet trains with channels_last weights, so every activation is NHWC (a 1-channel input
# cannot make them so by itself). PyTorch's CPU max-pool over NCHW activations is scalar code, and
# tensor cores want NHWC too; the values are the same to float rounding. Saved tensors are made
# contiguous, so checkpoints do not depend on it (`docs/BENCHMARKS.md`, training: the step in both).
TRAIN_MEMORY_FORMAT = torch.channels_last

# Stage codes mixed into every per-step seed, so stages never reuse one another's random draws.
STAGE_CODES = {"baseline": 1, "cluster": 2, "progressive": 3, "calibrate": 4}


@dataclass
class Run:
    """Everything a stage needs; built once per process by `open_run`."""

    config: TrainConfig
    run_dir: Path
    dist: Dist
    source: ImageSource
    model_config: SDRConfig
    preprocessing: Preprocessing

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def new_backbone(self) -> SDRResNet:
        """A freshly initialised supernet, identical on every process (seeded), in `TRAIN_MEMORY_FORMAT`."""
        torch.manual_seed(self.config.seed)
        model = create_model(self.config.model, **self.config.model_overrides)
        return model.to(self.dist.device).to(memory_format=TRAIN_MEMORY_FORMAT)

    @property
    def progress(self) -> bool:
        """Show progress bars (main process only)."""
        return self.dist.is_main

    @property
    def amp(self) -> bool:
        return self.config.amp and self.dist.device.type == "cuda"


def open_run(config: TrainConfig, run_dir: Path | None = None) -> Run:
    """Set up the process, the run directory (checking the recipe matches) and the data source."""
    directory = Path(run_dir or config.run_dir)
    config = dataclasses.replace(config, run_dir=str(directory))
    dist = setup_distributed(config.device)
    saved = directory / "config.yaml"
    # The main process writes the recipe of a new run; every process checks it after the barrier.
    # Checked before it, another rank could read the file while the main one was writing it.
    if dist.is_main and not saved.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        config.save(saved)
    dist.barrier()
    if yaml.safe_load(saved.read_text()) != config.to_dict():
        raise TrainConfigError(
            f"run directory {directory} was started with a different recipe ({saved}); "
            f"resume with the same config or choose a new --run-dir"
        )
    model_config = dataclasses.replace(preset_config(config.model), **config.model_overrides)
    preprocessing = _preprocessing_for(config.model, model_config)
    source = build_source(config.data, model_config.in_chans, preprocessing.resize, seed=config.seed)
    return Run(config, directory, dist, source, model_config, preprocessing)


def _preprocessing_for(preset: str, model_config: SDRConfig) -> Preprocessing:
    """The preset's preprocessing, rescaled when the recipe overrides the input size."""
    base = default_preprocessing(preset)
    if model_config.input_size == base.input_size:
        return base
    resize = round(base.resize * model_config.input_size / base.input_size)
    return dataclasses.replace(base, input_size=model_config.input_size, resize=resize)
