"""Sub-net extraction: the supernet restricted to one path, as a plain `timm.models.resnet.ResNet`.

The supernet's modules carry timm's names, so extraction is a walk over its split layers that
slices each weight to the path's channels and takes the path's BN statistics rows. The result
loads into timm with `strict=True` and, in eval mode, gives the supernet's features on that path.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.channels import select_channels
from sdr_model.config import SDRConfig
from sdr_model.paths import parse_path
from sdr_model.supernet import SDRResNet, SplitConv2d

__all__ = ["extract_subnet", "subnet_state_dict", "subnet_timm_kwargs"]


def subnet_timm_kwargs(config: SDRConfig) -> dict[str, Any]:
    """JSON-able kwargs of `timm.models.resnet.ResNet` for every sub-net of `config`.

    `block` is the class name; a user maps it back with `getattr(timm.models.resnet, name)`.
    """
    return {
        "block": "BasicBlock" if config.block == "basic" else "Bottleneck",
        "layers": list(config.depths),
        "channels": list(config.subnet_planes),
        "stem_width": config.stem_width,
        "in_chans": config.in_chans,
        "num_classes": 0,
    }


def build_timm_resnet(kwargs: dict[str, Any]) -> ResNet:
    """A timm ResNet from `subnet_timm_kwargs` output (the block name resolved to its class)."""
    blocks = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
    return ResNet(**{**kwargs, "block": blocks[kwargs["block"]]})


@torch.no_grad()
def subnet_state_dict(supernet: SDRResNet, path: str | int) -> dict[str, torch.Tensor]:
    """The timm state dict of sub-net `path`: sliced weights and that path's BN statistics."""
    path = parse_path(path, supernet.config.num_stages, supernet.config.num_groups)
    config, state = supernet.config, {}
    for name, module in supernet.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, SplitConv2d):
            state[prefix + "weight"] = module.active_weight(path)
        elif isinstance(module, SplitBatchNorm2d):
            group, row = int(path[module.stage]), module.row(path)
            state[prefix + "weight"] = select_channels(module.weight, 0, config, group)
            state[prefix + "bias"] = select_channels(module.bias, 0, config, group)
            state[prefix + "running_mean"] = module.prefix_mean[row]
            state[prefix + "running_var"] = module.prefix_var[row]
            state[prefix + "num_batches_tracked"] = module.prefix_batches[row]
        elif isinstance(module, nn.Conv2d | nn.BatchNorm2d) and name in ("conv1", "bn1"):  # the shared stem
            state.update({prefix + k: v for k, v in module.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def extract_subnet(supernet: SDRResNet, path: str | int) -> ResNet:
    """Sub-net `path` as a standalone timm ResNet (eval mode, on the supernet's device)."""
    model = build_timm_resnet(subnet_timm_kwargs(supernet.config))
    model.load_state_dict(subnet_state_dict(supernet, path), strict=True)
    device = next(supernet.parameters()).device
    return model.to(device).eval()
