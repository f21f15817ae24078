"""Pre-training image sources, batch drawing and the SimSiam augmentations (DESIGN §4)."""

from training.data.augment import TwoViewAugment, eval_transform
from training.data.batches import LoadedBatch, StepLoader, draw_batch, step_generator
from training.data.build import build_source
from training.data.source import DataError, ImageSource

__all__ = [
    "DataError",
    "ImageSource",
    "LoadedBatch",
    "StepLoader",
    "TwoViewAugment",
    "build_source",
    "draw_batch",
    "eval_transform",
    "step_generator",
]
