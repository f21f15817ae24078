"""Where a checkpoint came from: code version and git commit, recorded in every header."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["code_provenance"]


def code_provenance() -> dict[str, str]:
    """The package version and, when run from a git checkout, its commit (with `-dirty` if modified)."""
    try:
        version = metadata.version("sdr-router")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return {"code_version": version, "git_commit": _git_commit()}


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
