"""Configuration of an SDR supernet and of the preprocessing that travels with its weights.

Both are frozen dataclasses (nanoGPT style): a config is a value, hashed and compared, never
mutated after a model is built from it. They serialise to plain JSON-able dicts for the
safetensors header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["TIMM_PLAIN_STEM_WIDTH", "BlockType", "Preprocessing", "SDRConfig", "from_known_fields"]

_T = TypeVar("_T", bound="DataclassInstance")

BlockType = Literal["basic", "bottleneck"]

# timm's ResNet hard-codes a 64-channel 7x7 stem unless a deep stem is requested; the interop
# contract (every sub-net is a plain timm ResNet) therefore fixes the stem width.
TIMM_PLAIN_STEM_WIDTH = 64

_EXPANSION = {"basic": 1, "bottleneck": 4}


class ConfigError(ValueError):
    """A config that cannot describe an SDR supernet; the message says which field and why."""


def from_known_fields(cls: type[_T], d: Mapping[str, Any], what: str, error: type[ValueError]) -> _T:
    """`cls(**d)` for a dataclass, refusing keys it has no field for (naming them as `what`).

    A misspelt key in a checkpoint header or a request would otherwise be a TypeError from the
    constructor, or, worse, would be dropped and leave a default in its place.
    """
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise error(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)


@dataclass(frozen=True)
class SDRConfig:
    """Architecture of an SDR supernet (DESIGN §3)."""

    block: BlockType = "bottleneck"  # residual block type, as in timm's BasicBlock / Bottleneck
    depths: tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage; 4 stages -> 4 path digits
    planes: tuple[int, ...] = (96, 200, 400, 800)  # supernet planes per stage (before expansion)
    stem_width: int = TIMM_PLAIN_STEM_WIDTH  # stem conv output channels (shared by all paths)
    in_chans: int = 3  # image channels the stem expects (1 for grayscale presets)
    input_size: int = 224  # square input side in pixels the weights were trained at
    num_groups: int = 4  # G: individual groups per split layer; paths are base-G digit strings
    shared_fraction: float = 0.5  # fraction of every split layer's channels shared by all paths

    def __post_init__(self) -> None:
        # Tuples even when built from YAML/JSON lists, so configs hash and compare as values.
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "planes", tuple(int(p) for p in self.planes))
        if self.block not in _EXPANSION:
            raise ConfigError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if len(self.depths) != len(self.planes) or not self.depths:
            raise ConfigError(f"depths {self.depths} and planes {self.planes} must be non-empty and of equal length")
        if any(d < 1 for d in self.depths):
            raise ConfigError(f"every stage needs at least one block, got depths {self.depths}")
        if self.stem_width != TIMM_PLAIN_STEM_WIDTH:
            raise ConfigError(
                f"stem_width must be {TIMM_PLAIN_STEM_WIDTH}: timm's plain 7x7 ResNet stem is fixed at that "
                f"width and every extracted sub-net must load into timm.models.resnet.ResNet"
            )
        if self.num_groups < 1:
            raise ConfigError(f"num_groups must be >= 1, got {self.num_groups}")
        if not 0.0 < self.shared_fraction < 1.0:
            raise ConfigError(f"shared_fraction must be in (0, 1), got {self.shared_fraction}")
        for stage, planes in enumerate(self.planes, start=1):
            for width in (planes, planes * self.expansion):
                shared = width * self.shared_fraction
                group = (width - shared) / self.num_groups
                if shared != int(shared) or group != int(group) or group < 1:
                    raise ConfigError(
                        f"stage {stage}: width {width} does not split into a shared part of "
                        f"{self.shared_fraction} and {self.num_groups} equal integer groups"
                    )

    @property
    def expansion(self) -> int:
        """Output channels per plane of the block type (1 basic, 4 bottleneck)."""
        return _EXPANSION[self.block]

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_paths(self) -> int:
        return int(self.num_groups**self.num_stages)

    def shared_width(self, width: int) -> int:
        """Channels of a split layer of `width` channels that every path uses."""
        return int(width * self.shared_fraction)

    def group_width(self, width: int) -> int:
        """Channels of one individual group of a split layer of `width` channels."""
        return (width - self.shared_width(width)) // self.num_groups

    def active_width(self, width: int) -> int:
        """Channels a single path uses of a split layer of `width` channels."""
        return self.shared_width(width) + self.group_width(width)

    @property
    def subnet_planes(self) -> tuple[int, ...]:
        """Per-stage planes of every extracted sub-net: timm's `channels` argument."""
        return tuple(self.active_width(p) for p in self.planes)

    @property
    def num_features(self) -> int:
        """Feature dimension of the supernet (path=None)."""
        return self.planes[-1] * self.expansion

    @property
    def subnet_num_features(self) -> int:
        """Feature dimension of every sub-net."""
        return self.subnet_planes[-1] * self.expansion

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depths"], d["planes"] = list(self.depths), list(self.planes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SDRConfig:
        return from_known_fields(cls, d, "config keys", ConfigError)


@dataclass(frozen=True)
class Preprocessing:
    """Deterministic eval preprocessing; it travels in every checkpoint header, never in docs alone."""

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # per-channel mean after scaling to [0, 1]
    std: tuple[float, ...] = (0.229, 0.224, 0.225)  # per-channel std after scaling to [0, 1]
    input_size: int = 224  # side of the square crop fed to the network
    resize: int = 256  # shorter side is resized to this before the center crop
    channels: int = 3  # 1 -> convert to grayscale ("L"), 3 -> RGB

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocessing channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"mean and std need {self.channels} values each, got {self.mean}, {self.std}")
        if self.resize < self.input_size:
            raise ConfigError(f"resize ({self.resize}) must be >= input_size ({self.input_size})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return from_known_fields(cls, d, "preprocessing keys", ConfigError)
