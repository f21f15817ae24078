"""What the API needs to know about the served checkpoint, read without torch.

The API lists sub-nets (cluster sizes, parameter counts, feature dimension) and names files by
checkpoint digest, but must not import torch. A safetensors file starts with an 8-byte length and
a JSON header, and the `sdr` entry of its `__metadata__` is plain JSON, so this reads exactly
that and reuses the torch-free config classes. Workers validate the whole file with
`sdr_model.load_checkpoint` before serving anything computed from it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdr_model.config import Preprocessing, SDRConfig

__all__ = ["CheckpointInfo", "CheckpointUnavailable", "CheckpointWatcher", "timm_resnet_params"]

_MAX_HEADER_BYTES = 100 * 2**20


class CheckpointUnavailable(RuntimeError):
    """The checkpoint file is missing or unreadable; the message says which and why."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Header facts of the served supernet checkpoint."""

    file: Path
    sha256: str
    config: SDRConfig
    preprocessing: Preprocessing
    cluster_sizes: dict[str, int]
    provenance: dict[str, Any]

    @property
    def name(self) -> str:
        """Stem used in download file names (`sdr_tiny_fmnist-0312.safetensors`)."""
        return self.file.stem

    @property
    def subnet_params(self) -> int:
        """Parameters of every extracted sub-net (they all have the same widths)."""
        return timm_resnet_params(
            self.config.block,
            self.config.depths,
            self.config.subnet_planes,
            self.config.stem_width,
            self.config.in_chans,
        )

    @property
    def supernet_params(self) -> int:
        return timm_resnet_params(
            self.config.block, self.config.depths, self.config.planes, self.config.stem_width, self.config.in_chans
        )


def timm_resnet_params(
    block: str, depths: tuple[int, ...], channels: tuple[int, ...], stem_width: int, in_chans: int
) -> int:
    """Trainable parameters of `timm.models.resnet.ResNet(..., num_classes=0)`, counted from its shape.

    Counting from the config keeps the API torch-free; a worker-side test checks it against timm.
    """
    expansion = 1 if block == "basic" else 4
    total = in_chans * stem_width * 49 + 2 * stem_width  # 7x7 stem conv (no bias) + BN
    inplanes = stem_width
    for stage, (depth, planes) in enumerate(zip(depths, channels, strict=True)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            out = planes * expansion
            if block == "basic":
                total += 9 * inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
            else:
                total += inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * out + 2 * out
            if stride != 1 or inplanes != out:
                total += inplanes * out + 2 * out  # 1x1 downsample projection + BN
            inplanes = out
    return total


def _read_header(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointUnavailable(f"{file}: truncated, not a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER_BYTES:
                raise CheckpointUnavailable(f"{file}: not a safetensors file (header length {length})")
            header = json.loads(f.read(length))
    except OSError as exc:
        raise CheckpointUnavailable(f"{file}: cannot read ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointUnavailable(f"{file}: corrupt safetensors header ({exc})") from exc
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if "sdr" not in meta:
        raise CheckpointUnavailable(f"{file}: no 'sdr' metadata; not an SDR supernet checkpoint")
    sdr = json.loads(meta["sdr"])
    if sdr.get("format") != "sdr-supernet":
        raise CheckpointUnavailable(f"{file}: is a {sdr.get('format')!r} file, expected an sdr-supernet checkpoint")
    return dict(sdr)


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


class CheckpointWatcher:
    """Reads the checkpoint header on first use and again whenever the file changes.

    The file may not exist when the API starts (a worker or `sdr serve` creates the stand-in
    checkpoint); until it does, `get()` raises `CheckpointUnavailable` and /readyz says 503.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._info: CheckpointInfo | None = None

    def get(self) -> CheckpointInfo:
        try:
            st = self.file.stat()
        except OSError as exc:
            raise CheckpointUnavailable(f"{self.file}: checkpoint not found ({exc.strerror})") from exc
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._info is None or self._key != key:
                sdr = _read_header(self.file)
                try:
                    config = SDRConfig.from_dict(sdr["config"])
                    preprocessing = Preprocessing.from_dict(sdr["preprocessing"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointUnavailable(f"{self.file}: invalid sdr header ({exc})") from exc
                clusters = sdr.get("clusters") or {}
                sizes = {str(k): int(v) for k, v in (clusters.get("sizes") or {}).items()}
                self._info = CheckpointInfo(
                    file=self.file,
                    sha256=_sha256(self.file),
                    config=config,
                    preprocessing=preprocessing,
                    cluster_sizes=sizes,
                    provenance=dict(sdr.get("provenance") or {}),
                )
                self._key = key
            return self._info
