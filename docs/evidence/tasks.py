"""Downstream tasks for the evidence (issue 6), built from data never seen in pre-training.

The supernet is pre-trained on Fashion-MNIST's *train* split; every task here is cut from its
*test* split (10,000 images), or from scikit-learn's bundled 8x8 digits (out of domain). Each
task gets its own stratified train/test split with a fixed seed and is written as an
ImageFolder tree (`train/<class>/*.png`, `test/<class>/*.png`), the format `sdr route` and the
service take.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)


@dataclass(frozen=True)
class Task:
    """A downstream task: which classes of which source, and how much of each class to use."""

    name: str
    source: str  # "fashion-mnist-test" or "sklearn-digits"
    classes: tuple[int, ...]  # class ids in the source
    per_class: int  # images per class taken (train + test), at most what the source has
    test_fraction: float = 0.5
    description: str = ""


TASKS: tuple[Task, ...] = (
    Task("fmnist10", "fashion-mnist-test", tuple(range(10)), 400, description="all 10 Fashion-MNIST classes"),
    Task("tops", "fashion-mnist-test", (0, 2, 4, 6), 800, description="T-shirt/top, pullover, coat, shirt"),
    Task("footwear", "fashion-mnist-test", (5, 7, 9), 600, description="sandal, sneaker, ankle boot"),
    Task("shirt_vs_tshirt", "fashion-mnist-test", (0, 6), 1000, description="T-shirt/top vs shirt (fine-grained)"),
    Task("digits", "sklearn-digits", tuple(range(10)), 180, description="sklearn's 8x8 digits (out of domain)"),
)


def _source(name: str) -> tuple[np.ndarray, np.ndarray, Sequence[str]]:
    """Images as uint8 [N, H, W] and int labels, plus class names."""
    if name == "fashion-mnist-test":
        from training.data.fashion_mnist import read_idx

        images = read_idx(FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_MNIST_ROOT / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
        return images, labels, FASHION_CLASSES
    if name == "sklearn-digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
        return images, digits.target.astype(np.int64), [str(i) for i in range(10)]
    raise ValueError(f"unknown source {name!r}")


def build_task(task: Task, out_dir: Path, seed: int = 0) -> Path:
    """Write `task` as an ImageFolder tree under `out_dir / task.name`; returns that folder."""
    images, labels, class_names = _source(task.source)
    rng = np.random.default_rng(seed)
    root = out_dir / task.name
    if root.exists():
        shutil.rmtree(root)
    for cls in task.classes:
        idx = rng.permutation(np.flatnonzero(labels == cls))[: task.per_class]
        n_test = round(len(idx) * task.test_fraction)
        for split, chosen in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = root / split / class_names[cls]
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png", optimize=True)
    return root


def zip_tree(root: Path, archive: Path) -> Path:
    """Zip an ImageFolder tree (members relative to `root`, sorted, fixed timestamps: reproducible bytes)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(file.relative_to(root)), date_time=(2026, 1, 1, 0, 0, 0))
            zf.writestr(info, file.read_bytes())
    return archive
