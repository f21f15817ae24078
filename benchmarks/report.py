"""What a benchmark returns, and how `python -m benchmarks` turns the results into docs/BENCHMARKS.md.

Each benchmark module has `bench(quick: bool) -> Section`. A section holds tables of measured
figures, each figure beside the baseline measured in the same run (so a busy machine shifts both
alike and the ratio stays honest), the goal it is held to, and whether this run met it, and the
plots of what is easier seen than read (`Plot`), which the page run writes beside the page.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sdr_model.atomic_write import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Goal", "Plot", "Section", "Table", "commit", "machine_description", "new_figure", "render"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    text: str  # e.g. "route speedup >= 80% of the FLOP bound"
    met: bool | None  # None: not measurable on this machine (say why in the section's notes)

    def markdown(self) -> str:
        mark = {True: "**met**", False: "**not met**", None: "not measured here"}[self.met]
        return f"- Goal: {self.text}: {mark}"


def new_figure(width: float = 6.4, height: float = 3.6) -> Figure:
    """A matplotlib figure for files only (Agg: no display on a benchmark machine)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


@dataclass
class Plot:
    """A section's picture: `figures/bench_<name>.png` beside the page, linked from the section."""

    name: str
    caption: str
    figure: Figure

    @property
    def file(self) -> str:
        """Its path relative to the page."""
        return f"figures/bench_{self.name}.png"

    def markdown(self) -> str:
        return f"![{self.caption}]({self.file})"

    def save(self, page_dir: Path) -> Path:
        """Write the PNG under `page_dir` (atomically, like the page); returns its path."""
        target = page_dir / self.file
        with atomic_path(target) as tmp:
            self.figure.savefig(tmp, format="png")
        return target


@dataclass
class Section:
    title: str
    module: str  # the benchmarks module that produced it, e.g. "benchmarks.scoring"
    about: str  # what is measured against what, in a sentence or two
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    seconds: float = 0.0  # filled in by the runner

    def markdown(self) -> str:
        short = self.module.removeprefix("benchmarks.")
        parts = [
            f"## {self.title}",
            f"`{self.module}` ({self.seconds:.0f} s in this run; alone: `make bench ONLY={short}`). {self.about}",
        ]
        parts += [t.markdown() for t in self.tables]
        parts += [p.markdown() for p in self.plots]
        if self.goals:
            parts.append("\n".join(g.markdown() for g in self.goals))
        parts += self.notes
        return "\n\n".join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit() -> str:
    """The short commit the figures come from, marked when the tree has uncommitted changes.

    `BENCH_COMMIT` overrides it, for a copy of the tree without its git history (a GPU machine).
    """
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    except OSError:
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def machine_description() -> str:
    """One paragraph naming the hardware and software the figures come from."""
    import faiss
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores ({_cpu_model()}), GPU: {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}; "
        f"commit {commit()}; load average at start {load}"
    )


def render(sections: list[Section], machine: str, command: str, seconds: float, end_load: str) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmarks",
        "<!-- Written by `make bench` (python -m benchmarks); edit benchmarks/*.py, not this file. -->",
        f"Command: `{command}`, {date}, {seconds / 60:.1f} min in all.",
        f"Machine: {machine}; load average at the end {end_load}.",
        "Every ratio compares two things measured in the same run, interleaved where they can be, so "
        "a busy machine slows both alike. Absolute times on a shared 2-core machine move with its load; "
        "the ratios move much less.",
    ]
    return "\n\n".join(head + [s.markdown() for s in sections]) + "\n"
