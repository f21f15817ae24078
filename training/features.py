"""W0 features of every image under the deterministic eval transform: clustering's input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sdr_model.config import Preprocessing
from sdr_model.supernet import SDRResNet
from training.data import ImageSource, StepLoader, eval_transform

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(
    backbone: SDRResNet,
    source: ImageSource,
    preprocessing: Preprocessing,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised W0 features `[N, D]` (float32, CPU) and a bool `[N]` mask of decodable images.

    Unreadable images get a zero row and `False` in the mask; they join no cluster.
    """
    backbone.eval()
    n = len(source)
    features = torch.zeros(n, backbone.num_features)
    readable = torch.zeros(n, dtype=torch.bool)
    steps = (n + batch_size - 1) // batch_size

    def chunk(step: int) -> torch.Tensor:
        return torch.arange(step * batch_size, min(n, (step + 1) * batch_size))

    for _, batch in tqdm(
        StepLoader(source, chunk, 0, steps, num_workers),
        total=steps,
        desc="features",
        disable=not progress,
        leave=False,
    ):
        if len(batch):
            x = eval_transform(batch.images, preprocessing).to(device)
            features[batch.indices] = F.normalize(backbone.forward_features(x, None).float(), dim=1).cpu()
            readable[batch.indices] = True
    return features, readable
