"""A sub-net made ready to serve: BatchNorm folded into its convolutions, weights in channels_last.

An extracted sub-net (`extract_subnet`) is the plain timm ResNet a user downloads, laid out as
trained. Run as is on a CPU, two things cost it more than its convolutions' share; the prepared
copy is 2.1-2.4x faster (`docs/BENCHMARKS.md`, serving: sdr_tiny at 64 px, batch 64, one thread):

- PyTorch's max-pool over NCHW activations is scalar code: in a profile of one 83 ms forward as
  extracted, the stem's pool took 34 ms, and 2 ms over NHWC. With the weights in channels_last
  every activation is NHWC, even behind a 1-channel input, whose layout PyTorch cannot tell apart
  from NCHW on its own.
- An eval-mode BatchNorm is an affine map per channel, but it runs as one more pass over every
  activation. Folded into the convolution before it, it costs nothing.

The prepared copy computes the same features to float rounding (tested at 1e-5) and is still a
timm `ResNet`; only its state dict differs (convolutions with biases, no BatchNorm), so it is for
running, never for saving: the weights endpoint serves the sub-net as extracted.
"""

from __future__ import annotations

import copy

import torch
from timm.models.resnet import ResNet
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["inference_subnet"]


def inference_subnet(subnet: ResNet) -> ResNet:
    """A copy of an eval-mode sub-net with every BatchNorm folded into its convolution, in channels_last.

    Folds the pairs timm's ResNet applies back to back: `conv<i>` then `bn<i>` of the stem and of
    every block, and the (conv, BN) of each downsample `Sequential`. `subnet` is left untouched.

    Raises:
        ValueError: `subnet` is in training mode (folding uses the running statistics), or a
            BatchNorm was left that is not right after a convolution.
    """
    if subnet.training:
        raise ValueError("the sub-net must be in eval mode: folding uses BatchNorm's running statistics")
    model = copy.deepcopy(subnet)
    for module in list(model.modules()):  # listed first: the loop replaces children as it goes
        for i in range(1, 4):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(module, f"bn{i}", nn.Identity())
        if isinstance(module, nn.Sequential):
            for j in range(len(module) - 1):
                conv, bn = module[j], module[j + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[j] = fuse_conv_bn_eval(conv, bn)
                    module[j + 1] = nn.Identity()
    left = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"BatchNorm layers not after a convolution, left unfolded: {left}")
    return model.to(memory_format=torch.channels_last).eval()
