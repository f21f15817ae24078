"""Build the image source a recipe names, with the channels and storage size of its model."""

from __future__ import annotations

from training.config import DataConfig
from training.data.fashion_mnist import FashionMNISTSource
from training.data.image_folder import ImageFolderSource
from training.data.manifest import ManifestSource
from training.data.source import DataError, ImageSource
from training.data.synthetic import SyntheticSource

__all__ = ["build_source"]


def build_source(config: DataConfig, channels: int, default_size: int, seed: int = 0) -> ImageSource:
    """The source `config.kind` describes.

    Args:
        config: the recipe's data section.
        channels: the model's input channels; file sources convert to it.
        default_size: stored square side when `config.storage_size` is 0 (the model's resize side).
        seed: synthetic data only.
    """
    size = config.storage_size or default_size
    if config.kind == "fashion_mnist":
        source: ImageSource = FashionMNISTSource(config.root, config.split)
    elif config.kind == "image_folder":
        source = ImageFolderSource(config.root, channels, size)
    elif config.kind == "manifest":
        source = ManifestSource(config.root, channels, size)
    elif config.kind == "synthetic":
        source = SyntheticSource(config.synthetic_images, config.synthetic_classes, channels, size, seed)
    else:
        raise DataError(f"unknown data.kind {config.kind!r}; use fashion_mnist, image_folder, manifest or synthetic")
    if source.channels != channels:
        raise DataError(f"data {config.kind} has {source.channels} channel(s) but the model takes {channels}")
    return source
