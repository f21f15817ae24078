"""The checkpoint format: safetensors files with a JSON header. No pickle in any load path.

A supernet checkpoint holds the state dict and `__metadata__["sdr"]`, a JSON string with the
config, preprocessing, cluster -> path mapping and sizes, and provenance. An extracted sub-net
file holds timm state-dict names and the same kind of header plus the timm kwargs, so a user
rebuilds it with timm alone (README, "Use a sub-net without this package").

Every load validates before it trusts: the file is safetensors (pickle and torch zip files are
named as such and refused), is not truncated, has every header key, and its tensors match the
architecture its config describes. Writes are atomic (temp file + rename), so a crash never
leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdr_model.atomic_write import atomic_path
from sdr_model.config import ConfigError, Preprocessing, SDRConfig
from sdr_model.paths import PathError, parse_path
from sdr_model.provenance import code_provenance
from sdr_model.supernet import SDRResNet

__all__ = [
    "CheckpointError",
    "CheckpointMetadata",
    "load_checkpoint",
    "load_subnet",
    "read_metadata",
    "save_checkpoint",
    "save_subnet",
]

FORMAT_VERSION = 1
SUPERNET_FORMAT, SUBNET_FORMAT = "sdr-supernet", "sdr-subnet"
_HEADER_KEY = "sdr"
_REQUIRED = {
    SUPERNET_FORMAT: ("format", "format_version", "config", "preprocessing", "clusters", "provenance"),
    SUBNET_FORMAT: (
        "format",
        "format_version",
        "config",
        "preprocessing",
        "provenance",
        "path",
        "timm_kwargs",
    ),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap on the JSON header


class CheckpointError(ValueError):
    """A file that is not a valid SDR checkpoint; the message names the file and the fix."""


@dataclass(frozen=True)
class CheckpointMetadata:
    """The parsed `sdr` header of a supernet or sub-net file."""

    format: str
    config: SDRConfig
    preprocessing: Preprocessing
    provenance: dict[str, Any]
    clusters: dict[str, Any] | None = None
    path: str | None = None  # sub-net files only
    timm_kwargs: dict[str, Any] | None = None  # sub-net files only
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def save_checkpoint(
    file: str | os.PathLike[str],
    model: SDRResNet,
    *,
    preprocessing: Preprocessing,
    clusters: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a supernet checkpoint; provenance gets the code version and commit added."""
    header = {
        "format": SUPERNET_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "clusters": clusters,
        "provenance": {**code_provenance(), **(provenance or {})},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return _atomic_save(Path(file), tensors, header)


def save_subnet(
    file: str | os.PathLike[str],
    supernet: SDRResNet,
    path: str | int,
    *,
    preprocessing: Preprocessing,
    provenance: dict[str, Any] | None = None,
    cluster_size: int | None = None,
) -> Path:
    """Write sub-net `path` as a timm-loadable safetensors file with its BN statistics."""
    from sdr_model.extract import subnet_state_dict, subnet_timm_kwargs

    path = parse_path(path, supernet.config.num_stages, supernet.config.num_groups)
    header = {
        "format": SUBNET_FORMAT,
        "format_version": FORMAT_VERSION,
        "path": path,
        "timm_kwargs": subnet_timm_kwargs(supernet.config),
        "config": supernet.config.to_dict(),
        "preprocessing": preprocessing.to_dict(),
        "cluster_size": cluster_size,
        "provenance": {**code_provenance(), **(provenance or {})},
    }
    tensors = {k: v.cpu() for k, v in subnet_state_dict(supernet, path).items()}
    return _atomic_save(Path(file), tensors, header)


def read_metadata(file: str | os.PathLike[str]) -> CheckpointMetadata:
    """Validate the file's framing and header and return its metadata, without loading tensors."""
    file = Path(file)
    _check_framing(file)
    try:
        with safe_open(str(file), framework="pt") as f:
            header_text = (f.metadata() or {}).get(_HEADER_KEY)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from exc
    if header_text is None:
        raise CheckpointError(
            f"{file}: safetensors file without an '{_HEADER_KEY}' metadata header; it was not written by "
            f"sdr_model (use `sdr init` / `sdr train` to make a checkpoint)"
        )
    try:
        raw = json.loads(header_text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: the '{_HEADER_KEY}' header is not valid JSON ({exc})") from exc
    return _parse_header(file, raw)


def load_checkpoint(
    file: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[SDRResNet, CheckpointMetadata]:
    """Load a supernet checkpoint (validated) into a fresh `SDRResNet` in eval mode."""
    file = Path(file)
    meta = read_metadata(file)
    if meta.format != SUPERNET_FORMAT:
        raise CheckpointError(f"{file}: is a {meta.format} file, expected a supernet checkpoint")
    model = SDRResNet(meta.config)
    _load_tensors_into(file, model)
    return model.to(device).eval(), meta


def load_subnet(file: str | os.PathLike[str]) -> tuple[torch.nn.Module, CheckpointMetadata]:
    """Load an extracted sub-net file into a timm ResNet (eval mode)."""
    from sdr_model.extract import build_timm_resnet

    file = Path(file)
    meta = read_metadata(file)
    if meta.format != SUBNET_FORMAT or meta.timm_kwargs is None:
        raise CheckpointError(f"{file}: is a {meta.format} file, expected an extracted sub-net")
    model = build_timm_resnet(meta.timm_kwargs)
    _load_tensors_into(file, model)
    return model.eval(), meta


# --- internals ------------------------------------------------------------------------------------


def _atomic_save(file: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    with atomic_path(file) as tmp:
        save_file(tensors, str(tmp), metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
    return file


def _check_framing(file: Path) -> None:
    """Refuse pickles, zips and truncated files with a message that says which it is."""
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file")
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(9)
        if head[8:9] != b"{":  # safetensors: u64 little-endian header length, then a JSON object
            if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
                raise CheckpointError(
                    f"{file}: is a pickle / torch.save file; only safetensors is accepted, because unpickling "
                    f"runs arbitrary code. Convert it on a machine where you trust its origin, with "
                    f"safetensors.torch.save_file, or make a checkpoint with `sdr init` / `sdr train`"
                )
            raise CheckpointError(f"{file}: not a safetensors file ({size} bytes, no safetensors header)")
        f.seek(0)
        head = f.read(8)
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(
                f"{file}: truncated or not a safetensors file (header length {header_len}, file {size} bytes)"
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{file}: corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: corrupt safetensors header (not a JSON object)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise CheckpointError(f"{file}: truncated: {size} bytes on disk, the header describes {expected}")


def _parse_header(file: Path, raw: Any) -> CheckpointMetadata:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: the '{_HEADER_KEY}' header must be a JSON object")
    fmt = raw.get("format")
    if fmt not in _REQUIRED:
        raise CheckpointError(f"{file}: unknown format {fmt!r}; expected one of {sorted(_REQUIRED)}")
    missing = [k for k in _REQUIRED[fmt] if k not in raw]
    if missing:
        raise CheckpointError(f"{file}: header is missing keys {missing} (a {fmt} header needs {list(_REQUIRED[fmt])})")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: format_version {raw['format_version']} is not supported (this code reads {FORMAT_VERSION})"
        )
    try:
        config = SDRConfig.from_dict(raw["config"])
        preprocessing = Preprocessing.from_dict(raw["preprocessing"])
        path = parse_path(raw["path"], config.num_stages, config.num_groups) if fmt == SUBNET_FORMAT else None
    except (ConfigError, PathError, TypeError) as exc:
        raise CheckpointError(f"{file}: invalid header: {exc}") from exc
    if preprocessing.channels != config.in_chans:
        raise CheckpointError(
            f"{file}: preprocessing makes {preprocessing.channels}-channel images but the model takes {config.in_chans}"
        )
    return CheckpointMetadata(
        format=fmt,
        config=config,
        preprocessing=preprocessing,
        provenance=dict(raw["provenance"]),
        clusters=raw.get("clusters"),
        path=path,
        timm_kwargs=raw.get("timm_kwargs"),
        raw=raw,
    )


def _load_tensors_into(file: Path, model: torch.nn.Module) -> None:
    """Copy the file's tensors into `model`, refusing any name or shape that does not match."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(file), framework="pt") as f:
        names = set(f.keys())
        missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{file}: tensors do not match the architecture in its header: "
                f"missing {_first(missing)}, unexpected {_first(unexpected)}"
            )
        state = {}
        for name in expected:
            shape = tuple(f.get_slice(name).get_shape())
            if shape != expected[name]:
                raise CheckpointError(
                    f"{file}: tensor {name} has shape {shape}, the architecture needs {expected[name]}"
                )
            state[name] = f.get_tensor(name)
    model.load_state_dict(state, strict=True)


def _first(names: list[str], n: int = 5) -> str:
    return f"{names[:n]}{'...' if len(names) > n else ''}"
