"""Image sources (idx, ImageFolder, manifest, synthetic), unreadable files, batches and augmentations."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sdr_model.config import Preprocessing
from training.config import AugmentConfig, DataConfig
from training.data import (
    DataError,
    StepLoader,
    TwoViewAugment,
    build_source,
    draw_batch,
    eval_transform,
    step_generator,
)
from training.data.fashion_mnist import FashionMNISTSource
from training.data.image_folder import ImageFolderSource
from training.data.manifest import ManifestSource

GRAY = Preprocessing(mean=(0.5,), std=(0.25,), input_size=16, resize=16, channels=1)
RGB = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, input_size=16, resize=18, channels=3)


def _write_idx(file: Path, array: np.ndarray, gz: bool) -> None:
    magic = {3: 2051, 1: 2049}[array.ndim]
    data = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    (file.with_name(file.name + ".gz") if gz else file).write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([7, 0, 3]), gz)
    source = FashionMNISTSource(tmp_path, "train")
    assert len(source) == 3 and source.channels == 1
    assert source.labels is not None and source.labels.tolist() == [7, 0, 3]
    image = source.load(1)
    assert image is not None and image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    assert torch.equal(image[0], torch.from_numpy(images[1].astype(np.uint8)))


def test_fashion_mnist_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        FashionMNISTSource(tmp_path / "nowhere")


def test_installed_fashion_mnist() -> None:
    root = Path("/usr/share/datasets/fashion-mnist")
    assert root.is_dir(), "dataset-fashion-mnist is not installed: `make setup` installs it (apt-get, as root)"
    source = FashionMNISTSource(root, "test")
    assert len(source) == 10_000 and source.labels is not None and source.labels.max() == 9


def test_image_folder_skips_and_counts_unreadable_images(image_folder: Path) -> None:
    source = ImageFolderSource(image_folder, channels=1, storage_size=12)
    assert len(source) == 4 * 6 + 1 and source.classes == ["class_0", "class_1", "class_2", "class_3"]
    loader = StepLoader(source, lambda step: torch.arange(len(source)), 0, 1, num_workers=0)
    [(_, batch)] = list(loader)
    assert batch.skipped == 1 and len(batch) == 24
    assert batch.images.shape == (24, 1, 12, 12)
    broken = [i for i, f in enumerate(source.files) if f.name.startswith("broken")]
    assert broken and broken[0] not in batch.indices.tolist()


def test_image_folder_decodes_in_worker_processes(image_folder: Path) -> None:
    source = ImageFolderSource(image_folder, channels=3, storage_size=10)
    batches = list(StepLoader(source, lambda step: torch.arange(step * 5, step * 5 + 5), 0, 5, num_workers=2))
    assert sum(len(b) for _, b in batches) + sum(b.skipped for _, b in batches) == 25
    assert batches[0][1].images.shape[1:] == (3, 10, 10)


def test_image_folder_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing", 1, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderSource(tmp_path / "empty", 1, 8)


def test_manifest_with_and_without_labels(image_folder: Path, tmp_path: Path) -> None:
    files = sorted((image_folder / "class_1").glob("*.png"))[:3]
    labelled = tmp_path / "labelled.jsonl"
    lines = [json.dumps({"path": str(f), "label": lab}) for f, lab in zip(files, "bab", strict=True)]
    labelled.write_text("\n".join(lines))
    source = ManifestSource(labelled, channels=1, storage_size=8)
    assert source.labels is not None and source.labels.tolist() == [1, 0, 1]
    unlabelled = image_folder / "plain.jsonl"  # relative paths resolve against the manifest's folder
    unlabelled.write_text("\n".join(json.dumps({"path": str(f.relative_to(image_folder))}) for f in files))
    source = ManifestSource(unlabelled, channels=1, storage_size=8)
    assert source.labels is None and source.load(0) is not None


def test_manifest_errors_say_where(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"path": "a.png", "label": 1}\n{"path": "b.png"}\n')
    with pytest.raises(DataError, match="entry 2 has no label"):
        ManifestSource(mixed, 1, 8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.png"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        ManifestSource(bad, 1, 8)


def test_build_source_checks_channels() -> None:
    source = build_source(DataConfig(kind="synthetic", synthetic_images=16, storage_size=8), 3, 8)
    assert source.channels == 3 and len(source) == 16
    assert (
        source.fingerprint()
        == build_source(DataConfig(kind="synthetic", synthetic_images=16, storage_size=8), 3, 8).fingerprint()
    )


def test_draw_batch_is_a_pure_function_of_its_generator_seed() -> None:
    pool = torch.arange(100, 110)
    a = draw_batch(pool, 25, step_generator(0, 1, 7))
    b = draw_batch(pool, 25, step_generator(0, 1, 7))
    assert torch.equal(a, b) and len(a) == 25
    counts = torch.bincount(a - 100, minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3  # a pool smaller than the batch is repeated evenly
    assert not torch.equal(a, draw_batch(pool, 25, step_generator(0, 1, 8)))


@pytest.mark.parametrize("preprocessing", [GRAY, RGB], ids=["gray", "rgb"])
def test_two_view_augment_shapes_and_determinism(preprocessing: Preprocessing) -> None:
    c = preprocessing.channels
    images = (torch.rand(6, c, 20, 20, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    augment = TwoViewAugment(AugmentConfig(blur_p=0.5), preprocessing)
    x1, x2 = augment(images, torch.Generator().manual_seed(3))
    y1, y2 = augment(images, torch.Generator().manual_seed(3))
    assert x1.shape == x2.shape == (6, c, 16, 16)
    assert torch.equal(x1, y1) and torch.equal(x2, y2)  # resume draws the very same views
    assert not torch.allclose(x1, x2)  # two different views
    assert torch.isfinite(x1).all()


def test_full_crop_without_jitter_is_a_plain_resize() -> None:
    """With the crop fixed to the whole image and no jitter, a view is the eval transform."""
    images = (torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0)
    x1, _ = TwoViewAugment(config, GRAY)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x1, eval_transform(images, GRAY), atol=1e-5, rtol=0)
