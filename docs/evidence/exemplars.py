"""Plot exemplar pre-training images of a few clusters (docs/figures/cluster_exemplars.png).

    .venv/bin/python -m docs.evidence.exemplars runs/sdr_tiny_fmnist

Reads the run's cluster artifact (`cluster/clusters.safetensors`: one path id per Fashion-MNIST
train image) and shows 10 random members of 12 clusters spread over the path ids.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from safetensors.numpy import load_file

from docs.evidence.tasks import FASHION_MNIST_ROOT
from sdr_model.paths import id_to_path
from training.data.fashion_mnist import read_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/figures/cluster_exemplars.png"))
    args = parser.parse_args()
    path_ids = load_file(str(args.run_dir / "cluster" / "clusters.safetensors"))["path_ids"]
    images = read_idx(FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz")
    rng = np.random.default_rng(0)
    clusters = np.linspace(0, 255, 12).round().astype(int)
    per_row = 10
    fig, axes = plt.subplots(len(clusters), per_row, figsize=(per_row * 0.8, len(clusters) * 0.85))
    for row, cluster in enumerate(clusters):
        members = np.flatnonzero(path_ids == cluster)
        chosen = rng.choice(members, size=min(per_row, len(members)), replace=False)
        for col in range(per_row):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap="gray_r")
            if col == 0:
                ax.set_ylabel(f"{id_to_path(int(cluster))}\n({len(members)})", rotation=0, labelpad=22, fontsize=7)
    fig.suptitle("Pre-training images per cluster (path, cluster size)", fontsize=9)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
