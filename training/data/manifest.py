"""JSONL manifests: one `{"path": ..., "label": ...}` object per line, label optional.

Relative paths are resolved against the manifest's folder. Labels may be strings or integers;
they are mapped to class ids in sorted order. Either every line has a label or none does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from training.data.source import DataError, FileSource

__all__ = ["ManifestSource"]


class ManifestSource(FileSource):
    """The images a JSONL manifest lists, decoded lazily."""

    def __init__(self, manifest: str | Path, channels: int, storage_size: int) -> None:
        self.manifest = Path(manifest)
        if not self.manifest.is_file():
            raise DataError(f"manifest {self.manifest} does not exist (data.root in the config)")
        files: list[Path] = []
        raw_labels: list[object] = []
        for lineno, line in enumerate(self.manifest.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.manifest}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise DataError(f'{self.manifest}:{lineno}: expected an object with a string "path"')
            path = Path(entry["path"])
            files.append(path if path.is_absolute() else self.manifest.parent / path)
            raw_labels.append(entry.get("label"))
        if not files:
            raise DataError(f"manifest {self.manifest} lists no images")
        has_label = [label is not None for label in raw_labels]
        if any(has_label) and not all(has_label):
            missing = has_label.index(False) + 1
            raise DataError(f"{self.manifest}: entry {missing} has no label but others do; label all or none")
        self.files = files
        self.labels = None
        if all(has_label):
            names = sorted({str(label) for label in raw_labels})
            ids = {name: i for i, name in enumerate(names)}
            self.labels = torch.tensor([ids[str(label)] for label in raw_labels], dtype=torch.long)
        self.channels, self.storage_size = channels, storage_size

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.manifest.read_bytes())
        for file in self.files:
            digest.update(f"{file.stat().st_size if file.exists() else -1}\n".encode())
        return digest.hexdigest()
