"""Labelled downstream datasets as routing sees them: image files, class names and splits.

Three layouts are accepted (DESIGN §5, §6), and archives of any of them:

- an ImageFolder tree: `ROOT/train/<class>/<image>` and optionally `ROOT/test/<class>/<image>`;
  a tree with class folders directly under ROOT is a single-split dataset;
- a JSONL manifest: one `{"path": ..., "label": ..., "split": "train" | "test"}` object per line,
  `split` optional (all lines have it or none do), relative paths resolved against the manifest's
  folder; a folder holding `manifest.jsonl` is read through it;
- a zip / tar / tar.gz archive of either, extracted with `safe_extract` into a temporary folder
  that `open_dataset` removes on exit. A single top-level folder in the archive is looked through.

Reading only lists files; decoding happens once, later (`sdr_model.datasets.images`), so a
corrupt image is counted there, per file, rather than failing the listing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sdr_model.datasets.archive import ArchiveLimits, is_archive, safe_extract

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "DatasetError",
    "ImageRecord",
    "LabelledImages",
    "open_dataset",
    "read_dataset",
    "read_image_folder",
    "read_manifest",
    "stratified_split",
]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MANIFEST_NAME = "manifest.jsonl"


class DatasetError(ValueError):
    """A dataset that cannot be read as a labelled image dataset; the message says what to fix."""


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file."""

    path: Path
    label: str  # class name
    split: Split | None  # None: the dataset has a single split, to be divided later


@dataclass(frozen=True)
class LabelledImages:
    """A labelled image dataset: its files and where they came from."""

    name: str  # shown in reports: the folder, manifest or archive name
    records: tuple[ImageRecord, ...]
    root: Path | None = None  # files are named relative to it in reports

    def display_name(self, path: Path) -> str:
        """`path` relative to the dataset root when it lies below it (for reports), else as is."""
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return str(path)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, sorted; a class's index in this tuple is its label id."""
        return tuple(sorted({r.label for r in self.records}))

    @property
    def has_test_split(self) -> bool:
        return any(r.split == "test" for r in self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split ("all" for a single-split dataset) and class."""
        counts: dict[str, Counter[str]] = {}
        for r in self.records:
            counts.setdefault(r.split or "all", Counter())[r.label] += 1
        return {split: dict(sorted(c.items())) for split, c in counts.items()}


def read_image_folder(root: str | Path) -> LabelledImages:
    """Read `root/train/<class>/*` (+ optional `root/test/<class>/*`), or `root/<class>/*` as one split.

    Raises:
        DatasetError: no class folders or no image files.
    """
    root = Path(root)
    if (root / "train").is_dir():
        records = _read_class_folders(root / "train", "train")
        if (root / "test").is_dir():
            records += _read_class_folders(root / "test", "test")
    else:
        records = _read_class_folders(root, None)
    if not records:
        raise DatasetError(
            f"{root}: no images found; expected {root}/train/<class>/<image> (optionally {root}/test/...), "
            f"{root}/<class>/<image>, or a {MANIFEST_NAME}; image extensions: {', '.join(IMAGE_EXTENSIONS)}"
        )
    return LabelledImages(name=root.name, records=tuple(records), root=root)


def _read_class_folders(folder: Path, split: Split | None) -> list[ImageRecord]:
    records = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        records += [ImageRecord(path=f, label=class_dir.name, split=split) for f in files]
    return records


def read_manifest(manifest: str | Path, allowed_roots: Sequence[str | Path] | None = None) -> LabelledImages:
    """Read a JSONL manifest of `{"path", "label", "split"?}` objects.

    Args:
        manifest: the `.jsonl` file; relative image paths are resolved against its folder.
        allowed_roots: when given, every image must resolve (symlinks followed) to a file under one of
            these folders; the service passes its allow-list so a manifest cannot reach other files.

    Raises:
        DatasetError: naming the line: bad JSON, missing keys, a URL, a path outside the allowed
            roots, a missing file, an unknown split, or `split` given on some lines only.
    """
    manifest = Path(manifest)
    base = manifest.parent.resolve()
    roots = [Path(r).resolve() for r in allowed_roots] if allowed_roots is not None else None
    records = []
    with manifest.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{manifest.name} line {lineno}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or "label" not in entry:
                raise DatasetError(f'{where}: expected an object with "path" (string) and "label"')
            raw_path, label, split = entry["path"], str(entry["label"]), entry.get("split")
            if "://" in raw_path:
                raise DatasetError(f"{where}: {raw_path!r} is a URL; only local files are read")
            if split is not None and split not in SPLITS:
                raise DatasetError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
            path = (base / raw_path).resolve()
            if roots is not None and not any(path.is_relative_to(r) for r in roots):
                raise DatasetError(f"{where}: {raw_path!r} is outside the allowed data roots")
            if not path.is_file():
                raise DatasetError(f"{where}: {raw_path!r} does not exist or is not a file")
            records.append(ImageRecord(path=path, label=label, split=split))
    if not records:
        raise DatasetError(f"{manifest}: the manifest lists no images")
    with_split = sum(r.split is not None for r in records)
    if 0 < with_split < len(records):
        raise DatasetError(
            f"{manifest}: {with_split} of {len(records)} lines give a split; give it on every line or on none"
        )
    return LabelledImages(name=manifest.parent.name or manifest.stem, records=tuple(records), root=base)


def read_dataset(source: str | Path, allowed_roots: Sequence[str | Path] | None = None) -> LabelledImages:
    """Read an ImageFolder tree, a folder holding `manifest.jsonl`, or a `.jsonl` manifest (no archives)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".jsonl":
        return read_manifest(source, allowed_roots)
    if not source.is_dir():
        raise DatasetError(f"{source}: not a folder, a .jsonl manifest or an archive")
    root = _look_through_single_folder(source)
    if (root / MANIFEST_NAME).is_file():
        return read_manifest(root / MANIFEST_NAME, allowed_roots)
    return read_image_folder(root)


def _look_through_single_folder(root: Path) -> Path:
    """`data.zip` holding only `data/train/...` reads like `train/...` at the top."""
    entries = list(root.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in SPLITS:
        inner = entries[0]
        if (inner / "train").is_dir() or (inner / MANIFEST_NAME).is_file():
            return inner
    return root


@contextlib.contextmanager
def open_dataset(
    source: str | os.PathLike[str] | LabelledImages,
    limits: ArchiveLimits | None = None,
    workdir: str | Path | None = None,
) -> Iterator[LabelledImages]:
    """Open any accepted dataset form, extracting archives safely into a temporary folder.

    Args:
        source: a folder, a `.jsonl` manifest, a zip / tar archive, or an already read dataset.
        limits: caps for archive extraction.
        workdir: where the temporary extraction folder is made (default: the system temp folder).

    Yields:
        The dataset; for an archive its files live until the `with` block ends.
    """
    if isinstance(source, LabelledImages):
        yield source
        return
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    if source.is_file() and source.suffix != ".jsonl" and is_archive(source):
        with tempfile.TemporaryDirectory(prefix="sdr-dataset-", dir=workdir) as tmp:
            extracted = safe_extract(source, Path(tmp) / "data", limits).root
            # A manifest inside an upload may only name files that came with it.
            dataset = read_dataset(extracted, allowed_roots=[extracted])
            yield LabelledImages(name=source.name, records=dataset.records, root=dataset.root)
        return
    yield read_dataset(source)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held-out), holding out `round(fraction * n_c)` of each class c.

    Every class keeps at least one index, so a class with a single image stays on the kept side.
    The permutation depends only on `seed` and the labels, so every worker of a distributed route
    computes the same split.

    Returns:
        Two sorted int64 index arrays.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_held = min(round(fraction * len(members)), len(members) - 1)
        held.append(rng.permutation(members)[:n_held])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_idx)
    return kept.astype(np.int64), held_idx.astype(np.int64)
