"""Model registry, timm style: `create_model("sdr_tiny")`, `list_models()`.

Each preset registers a builder and the eval preprocessing its weights expect, so preprocessing
travels with the model name (and, once trained, in the checkpoint header).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdr_model.config import Preprocessing, SDRConfig

if TYPE_CHECKING:
    from sdr_model.supernet import SDRResNet

__all__ = ["create_model", "default_preprocessing", "list_models", "preset_config", "register_model"]


@dataclass(frozen=True)
class _Preset:
    config: SDRConfig
    preprocessing: Preprocessing


_PRESETS: dict[str, _Preset] = {}


def register_model(
    name: str, preprocessing: Preprocessing
) -> Callable[[Callable[[], SDRConfig]], Callable[[], SDRConfig]]:
    """Register a preset: the decorated function returns its `SDRConfig`."""

    def decorator(fn: Callable[[], SDRConfig]) -> Callable[[], SDRConfig]:
        if name in _PRESETS:
            raise ValueError(f"model {name!r} is registered twice")
        _PRESETS[name] = _Preset(fn(), preprocessing)
        return fn

    return decorator


def _preset(name: str) -> _Preset:
    _ensure_presets_loaded()
    if name not in _PRESETS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def _ensure_presets_loaded() -> None:
    import sdr_model.supernet  # noqa: F401  (registers the presets on import)


def list_models() -> list[str]:
    """Names of every registered preset, sorted."""
    _ensure_presets_loaded()
    return sorted(_PRESETS)


def preset_config(name: str) -> SDRConfig:
    """The architecture config of preset `name`."""
    return _preset(name).config


def default_preprocessing(name: str) -> Preprocessing:
    """The eval preprocessing preset `name` is trained with."""
    return _preset(name).preprocessing


def create_model(name: str, **overrides: Any) -> SDRResNet:
    """Build a randomly initialised supernet of preset `name`, optionally overriding config fields."""
    from dataclasses import replace

    from sdr_model.supernet import SDRResNet

    config = _preset(name).config
    return SDRResNet(replace(config, **overrides) if overrides else config)
