"""The SDR supernet: a ResNet whose stages are split into a shared group and G individual groups.

Credits: the method is "Scalable Dynamic Routing" (SDR, AAAI 2022); the layout of this file and
the module names follow timm's `resnet.py`, so that every sub-net is exactly a
`timm.models.resnet.ResNet` with the same state-dict names (DESIGN §3, interop contract).

Every split layer of stage s uses the channels `shared ∪ g[path[s]]`; the stem is shared by all
paths. The path is an explicit argument everywhere, never hidden mutable state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sdr_model.batchnorm import SplitBatchNorm2d
from sdr_model.channels import select_channels
from sdr_model.config import Preprocessing, SDRConfig
from sdr_model.paths import parse_path
from sdr_model.registry import register_model

__all__ = ["Route", "SDRResNet", "SplitConv2d"]

# What a split layer runs: W0 (None), one path (its prefix up to the layer's stage), or a tuple of
# sibling prefixes (same parent, different last digit) evaluated together in eval mode. Siblings'
# activations are stacked along channels, sibling i in block i, so one grouped convolution does
# the work of G separate ones (fewer, larger kernels: what a GPU wants).
Route = str | tuple[str, ...] | None


class SplitConv2d(nn.Module):
    """A bias-free conv whose output channels belong to stage `out_stage`'s split.

    Its input channels are split by stage `in_stage` (the stage that produced them), or not at
    all when `in_stage` is None (the input is the shared stem).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        config: SDRConfig,
        in_stage: int | None,
        out_stage: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.config, self.in_stage, self.out_stage = config, in_stage, out_stage
        self.stride, self.padding = stride, kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")  # as timm's ResNet

    def active_weight(self, path: str | None) -> torch.Tensor:
        """The weight slice `path` uses (the whole weight for W0)."""
        if path is None:
            return self.weight
        w = select_channels(self.weight, 0, self.config, int(path[self.out_stage]))
        if self.in_stage is not None:
            w = select_channels(w, 1, self.config, int(path[self.in_stage]))
        return w

    def forward(self, x: torch.Tensor, path: Route) -> torch.Tensor:
        if not isinstance(path, tuple):
            return F.conv2d(x, self.active_weight(path), stride=self.stride, padding=self.padding)
        # Siblings: their weights stacked along the output channels. A layer fed by the previous
        # stage (or the stem) sees the parent's activation, one input for all; a layer inside the
        # stage sees the stacked sibling activations, one group each.
        weight = torch.cat([self.active_weight(p) for p in path])
        groups = len(path) if self.in_stage == self.out_stage else 1
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding, groups=groups)


class SplitBasicBlock(nn.Module):
    """timm's BasicBlock (two 3x3 convs) over split channels."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, config: SDRConfig, stage: int, in_stage: int | None, stride: int):
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = SplitConv2d(inplanes, planes, 3, config, in_stage, stage, stride)
        self.bn1 = SplitBatchNorm2d(planes, config, stage)
        self.conv2 = SplitConv2d(planes, outplanes, 3, config, stage, stage)
        self.bn2 = SplitBatchNorm2d(outplanes, config, stage)
        self.downsample = _downsample(inplanes, outplanes, config, stage, in_stage, stride)

    def forward(self, x: torch.Tensor, path: Route) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x, path), path)
        x = F.relu(self.bn1(self.conv1(x, path), path), inplace=True)
        x = self.bn2(self.conv2(x, path), path)
        return F.relu(x + shortcut, inplace=True)


class SplitBottleneck(nn.Module):
    """timm's Bottleneck (1x1, 3x3, 1x1 with 4x expansion) over split channels."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, config: SDRConfig, stage: int, in_stage: int | None, stride: int):
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = SplitConv2d(inplanes, planes, 1, config, in_stage, stage)
        self.bn1 = SplitBatchNorm2d(planes, config, stage)
        self.conv2 = SplitConv2d(planes, planes, 3, config, stage, stage, stride)
        self.bn2 = SplitBatchNorm2d(planes, config, stage)
        self.conv3 = SplitConv2d(planes, outplanes, 1, config, stage, stage)
        self.bn3 = SplitBatchNorm2d(outplanes, config, stage)
        self.downsample = _downsample(inplanes, outplanes, config, stage, in_stage, stride)

    def forward(self, x: torch.Tensor, path: Route) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x, path), path)
        x = F.relu(self.bn1(self.conv1(x, path), path), inplace=True)
        x = F.relu(self.bn2(self.conv2(x, path), path), inplace=True)
        x = self.bn3(self.conv3(x, path), path)
        return F.relu(x + shortcut, inplace=True)


def _downsample(
    inplanes: int, outplanes: int, config: SDRConfig, stage: int, in_stage: int | None, stride: int
) -> nn.Sequential | None:
    """Projection shortcut (`downsample.0` conv, `downsample.1` BN, as timm names them), when shapes change.

    It stays inside the active channel set: input split by the previous stage, output by this one.
    """
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        SplitConv2d(inplanes, outplanes, 1, config, in_stage, stage, stride),
        SplitBatchNorm2d(outplanes, config, stage),
    )


class SDRResNet(nn.Module):
    """The SDR supernet. `forward_features(x, path)` is W0 for `path=None`, else the sub-net `path`.

    Answers timm's questions (`num_features`, `feature_info`, `forward_features`, `forward_head`,
    `forward`); there is no classifier head (num_classes=0), so features are pooled `[B, D]`.
    """

    def __init__(self, config: SDRConfig) -> None:
        super().__init__()
        self.config = config
        block_cls: Any = SplitBasicBlock if config.block == "basic" else SplitBottleneck
        self.conv1 = nn.Conv2d(config.in_chans, config.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_info = [dict(num_chs=config.stem_width, reduction=2, module="act1")]
        inplanes, reduction = config.stem_width, 4
        for stage, (depth, planes) in enumerate(zip(config.depths, config.planes, strict=True)):
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                in_stage = (stage - 1 if stage > 0 else None) if i == 0 else stage
                blocks.append(block_cls(inplanes, planes, config, stage, in_stage, stride))
                inplanes = planes * config.expansion
            reduction *= 2 if stage > 0 else 1
            self.add_module(f"layer{stage + 1}", nn.ModuleList(blocks))
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=f"layer{stage + 1}"))
        self.num_features = config.num_features
        self.subnet_num_features = config.subnet_num_features
        self._zero_init_last()

    def _zero_init_last(self) -> None:
        # timm's zero_init_last: each residual branch starts as identity, which helps SSL warm-up.
        for module in self.modules():
            if isinstance(module, SplitBasicBlock):
                nn.init.zeros_(module.bn2.weight)
            elif isinstance(module, SplitBottleneck):
                nn.init.zeros_(module.bn3.weight)

    def stage(self, index: int) -> nn.ModuleList:
        """The blocks of stage `index` (0-based)."""
        layer = getattr(self, f"layer{index + 1}")
        assert isinstance(layer, nn.ModuleList)
        return layer

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Shared stem: [B, in_chans, H, W] -> [B, stem_width, H/4, W/4]."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    def forward_stage(self, x: torch.Tensor, stage: int, prefix: Route) -> torch.Tensor:
        """Stage `stage` for `prefix = path[:stage + 1]` (None: W0) on the output of `prefix[:-1]`.

        A tuple of sibling prefixes (eval mode) returns their outputs stacked along channels,
        `[B, len(prefix) * C, h, w]`, equal to the separate calls concatenated.
        """
        for block in self.stage(stage):
            x = block(x, prefix)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool: [B, C, h, w] -> [B, C]."""
        return x.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor, path: str | int | None = None) -> torch.Tensor:
        """Pooled features [B, D] of W0 (`path=None`) or of the sub-net `path`."""
        canonical = None if path is None else parse_path(path, self.config.num_stages, self.config.num_groups)
        x = self.forward_stem(x)  # [B, 64, H/4, W/4]
        for stage in range(self.config.num_stages):
            x = self.forward_stage(x, stage, None if canonical is None else canonical[: stage + 1])
        return self.pool(x)  # [B, D]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """No classifier (num_classes=0): features pass through, as in timm."""
        return x

    def forward(self, x: torch.Tensor, path: str | int | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, path))

    def num_params(self, path: str | None = None) -> int:
        """Backbone parameters of W0, or of the sub-net `path` (what its timm ResNet holds)."""
        if path is None:
            return sum(p.numel() for p in self.parameters())
        from sdr_model.extract import subnet_state_dict  # local: extract imports this module

        return sum(t.numel() for name, t in subnet_state_dict(self, path).items() if _is_parameter(name))


def _is_parameter(name: str) -> bool:
    return not name.endswith(("running_mean", "running_var", "num_batches_tracked"))


# --- presets -------------------------------------------------------------------------------------

_IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=224, resize=256)
# Fashion-MNIST's pixel mean and std; 28-px images are resized up to the 64-px input (DESIGN §3).
_FASHION_MNIST = Preprocessing(mean=(0.2860,), std=(0.3530,), input_size=64, resize=64, channels=1)


@register_model("sdr_resnet50", preprocessing=_IMAGENET)
def sdr_resnet50() -> SDRConfig:
    """ResNet-50-sized sub-nets: supernet ≈ 57M params, each sub-net 22.4M with 2000-d features."""
    return SDRConfig(block="bottleneck", depths=(3, 4, 6, 3), planes=(96, 200, 400, 800), input_size=224)


@register_model("sdr_tiny", preprocessing=_FASHION_MNIST)
def sdr_tiny() -> SDRConfig:
    """1.2M-param grayscale supernet at 64 px: trains and routes on 2 CPU cores in minutes."""
    return SDRConfig(block="basic", depths=(1, 1, 1, 1), planes=(32, 64, 128, 256), in_chans=1, input_size=64)
