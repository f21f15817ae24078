"""Rebuild `examples/fmnist_tops_demo.zip`, the demo dataset of the README walkthrough.

Four Fashion-MNIST classes that are easy to confuse (T-shirt/top, pullover, coat, shirt), 60
images each, cut from the Fashion-MNIST *test* split (never seen in pre-training): 40 train and
20 test per class. Needs Debian's `dataset-fashion-mnist`.

    .venv/bin/python examples/make_demo.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from docs.evidence.tasks import Task, build_task, zip_tree

DEMO = Task(
    "fmnist_tops_demo",
    "fashion-mnist-test",
    (0, 2, 4, 6),
    60,
    test_fraction=1 / 3,
    description="demo: tops, 40 train + 20 test per class",
)


def main() -> None:
    out = Path(__file__).resolve().parent / f"{DEMO.name}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        zip_tree(build_task(DEMO, Path(tmp), seed=0), out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
