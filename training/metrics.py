"""Metrics as JSON lines, one file per stage, consistent with the resumed state.

A run killed after a checkpoint has logged lines for steps it will redo; on resume those lines
are dropped so that the file reads as if the run had never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdr_model.atomic_write import write_text_atomic

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    """Append-only JSONL writer. `resume_step`: keep only records with `step <= resume_step`."""

    def __init__(self, file: Path, resume_step: int = 0, enabled: bool = True) -> None:
        self.file, self.enabled = file, enabled
        if not enabled:
            return
        kept = [r for r in read_metrics(file) if int(r.get("step", 0)) <= resume_step] if file.exists() else []
        write_text_atomic(file, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.file.open("a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(file: Path) -> list[dict[str, Any]]:
    """Every record of a metrics file; a torn last line (crash mid-write) is ignored."""
    records = []
    for line in file.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
