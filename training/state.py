"""Resumable training state: tensors in safetensors, everything else in JSON. No pickle.

A stage's state is the method's state dict (backbone, heads, BYOL target, BN buffers), the
optimiser's tensors and hyper-parameters, the RNG states and the step. Both files are written
atomically and carry the step, so a crash between the two writes is detected on load.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sdr_model.atomic_write import atomic_path, write_text_atomic

__all__ = ["StateError", "load_state", "save_state", "state_exists"]

_TENSORS, _META = "state.safetensors", "state.json"


class StateError(RuntimeError):
    """A saved training state that cannot be resumed; says which file and why."""


def state_exists(directory: Path) -> bool:
    return (directory / _META).is_file() and (directory / _TENSORS).is_file()


def save_state(
    directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None, extra: dict[str, Any]
) -> None:
    """Write the state after `step` completed steps."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"step": step, "extra": extra, "rng": _rng_state(tensors)}
    if optimizer is not None:
        opt = optimizer.state_dict()
        plain_state: dict[str, dict[str, Any]] = {}
        for pid, entries in opt["state"].items():
            plain_state[str(pid)] = {}
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
                else:
                    plain_state[str(pid)][key] = value
        meta["optimizer"] = {"state": plain_state, "param_groups": opt["param_groups"]}
    with atomic_path(directory / _TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    write_text_atomic(directory / _META, json.dumps(meta))


def load_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device
) -> tuple[int, dict[str, Any]]:
    """Restore model, optimiser and RNG states; returns (completed steps, extra)."""
    meta = json.loads((directory / _META).read_text())
    with safe_open(str(directory / _TENSORS), framework="pt") as f:
        if (f.metadata() or {}).get("step") != str(meta["step"]):
            raise StateError(f"{directory}: {_TENSORS} and {_META} disagree on the step; delete the folder to restart")
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise StateError(f"{directory}: the saved state has no optimiser")
        state: dict[int, dict[str, Any]] = {}
        for pid, entries in meta["optimizer"]["state"].items():
            state[int(pid)] = dict(entries)
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value.to(device)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    _set_rng_state(meta["rng"], tensors)
    return int(meta["step"]), meta["extra"]


def _rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Put the RNG states in `tensors`/JSON. Batches and augmentations use per-step generators
    (training/data/batches.py); the global generators are restored for anything else drawing."""
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    return {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, list(internal), gauss]}


def _set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
