"""The training recipe: frozen dataclasses, one per stage, loaded from and saved to YAML.

A recipe is a value (nanoGPT style): every stage reads its own section, and the run directory
keeps the resolved copy so that a resumed run refuses to continue under a different recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from sdr_model.atomic_write import write_text_atomic

__all__ = [
    "AugmentConfig",
    "BaselineConfig",
    "CalibrateConfig",
    "ClusterConfig",
    "DataConfig",
    "OptimConfig",
    "ProgressiveConfig",
    "SSLConfig",
    "TrainConfig",
    "TrainConfigError",
    "load_config",
]


class TrainConfigError(ValueError):
    """A recipe that cannot run; the message names the field and what is accepted."""


@dataclass(frozen=True)
class DataConfig:
    """Where the unlabeled pre-training images come from."""

    kind: Literal["fashion_mnist", "image_folder", "manifest", "synthetic"] = "fashion_mnist"
    root: str = "/usr/share/datasets/fashion-mnist"  # idx folder, ImageFolder root or manifest.jsonl
    split: Literal["train", "test"] = "train"  # fashion_mnist only: which idx pair to read
    storage_size: int = 0  # decoded square side kept per image; 0 = the source's native size
    num_workers: int = 0  # decode workers for file sources (in-memory sources ignore it)
    synthetic_images: int = 512  # synthetic only: number of images
    synthetic_classes: int = 8  # synthetic only: planted classes (labels are kept for NMI)


@dataclass(frozen=True)
class AugmentConfig:
    """SimSiam's augmentation recipe, adapted to the model's channels and input size."""

    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area fraction range
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)  # RandomResizedCrop aspect ratio range
    flip_p: float = 0.5  # horizontal flip probability
    jitter_p: float = 0.8  # probability of applying colour jitter
    brightness: float = 0.4  # jitter strengths, as torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1)
    contrast: float = 0.4
    saturation: float = 0.4  # RGB only
    hue: float = 0.1  # RGB only
    grayscale_p: float = 0.2  # RGB only
    blur_p: float = 0.0  # Gaussian blur probability (SimSiam ImageNet: 0.5; off for small images)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur sigma range in pixels at the input size

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))


@dataclass(frozen=True)
class SSLConfig:
    """Self-supervised method and head sizes (SimSiam: 3-layer projector, bottleneck predictor)."""

    method: Literal["simsiam", "byol"] = "simsiam"
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 2048  # projector output width (collapse std is ~1/sqrt(proj_dim) when healthy)
    pred_hidden: int = 512  # predictor bottleneck width
    byol_momentum: float = 0.996  # BYOL target EMA momentum at step 0, cosine-annealed to 1


@dataclass(frozen=True)
class OptimConfig:
    """SGD as in SimSiam: lr scales with batch/256, cosine decay, predictor at a fixed lr."""

    lr: float = 0.05  # base lr for batch 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0  # linear warm-up steps at the start of each training stage
    fix_pred_lr: bool = True  # SimSiam: the predictor keeps the base lr (no cosine decay)


@dataclass(frozen=True)
class BaselineConfig:
    """Phase 0 of algorithm 1: W0 alone on the whole set."""

    epochs: float = 1.0  # an epoch is ceil(N / batch_size) steps of independently drawn batches
    batch_size: int = 256  # global batch (split across torchrun processes)


@dataclass(frozen=True)
class ClusterConfig:
    """Eq. 2: prototypes against Sinkhorn-Knopp targets, or faiss k-means (baseline)."""

    method: Literal["sinkhorn", "kmeans"] = "sinkhorn"
    mapping: Literal["identity", "aligned", "random"] = "identity"  # cluster -> path; random = split ablation
    epochs: int = 50  # prototype SGD epochs over the fixed features
    batch_size: int = 4096  # features per prototype step; must be well above k for equipartition
    lr: float = 0.5  # prototype SGD learning rate
    temperature: float = 0.1  # softmax temperature of the cross-entropy (SwAV)
    sinkhorn_eps: float = 0.05  # entropic regularisation epsilon (SwAV)
    sinkhorn_iters: int = 3  # Sinkhorn-Knopp iterations for the training targets (SwAV)
    assign_eps: float = 0.02  # epsilon of the whole-set Sinkhorn behind the final argmax: closer to hard
    assign_iters: int = 50  # its iterations; together they keep every cluster near N/k images
    kmeans_iters: int = 50  # faiss k-means iterations
    compare_kmeans: bool = True  # also run faiss k-means and report its sizes and NMI
    feature_batch_size: int = 512  # batch for extracting W0 features


@dataclass(frozen=True)
class ProgressiveConfig:
    """Phases 1..4 of algorithm 1, with SiamKD (eq. 4)."""

    phase_steps: tuple[int, ...] = (500, 1000, 2000, 4000)  # steps in phases 1..4
    rho: float = 0.5  # probability of training W0 (on the whole set) at a step
    lam: float = 1.0  # lambda: weight of the distillation term
    distill: Literal["siamkd", "l2", "none"] = "siamkd"  # l2 and none are ablations
    batch_size: int = 256  # global batch
    mix: float = 0.0  # share of whole-set images in a sub-net's pool (training and calibration); 0 = paper

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase_steps", tuple(int(s) for s in self.phase_steps))
        if not 0.0 <= self.rho <= 1.0:
            raise TrainConfigError(f"progressive.rho must be in [0, 1], got {self.rho}")
        if not 0.0 <= self.mix < 1.0:
            raise TrainConfigError(f"progressive.mix must be in [0, 1), got {self.mix}")
        if any(s < 0 for s in self.phase_steps):
            raise TrainConfigError(f"progressive.phase_steps must be >= 0, got {self.phase_steps}")


@dataclass(frozen=True)
class CalibrateConfig:
    """DESIGN §4 D: per-path BN statistics from each path's own cluster."""

    batches_per_path: int = 1  # batches of its cluster per path (a small cluster fits in one)
    w0_batches: int = 50  # batches of the whole set for W0's statistics
    batch_size: int = 256


@dataclass(frozen=True)
class TrainConfig:
    """A whole recipe: model preset, data, and the four stages of `sdr train all`."""

    model: str = "sdr_tiny"  # a registered preset (sdr_model.list_models())
    model_overrides: dict[str, Any] = field(default_factory=dict)  # SDRConfig fields to override
    run_dir: str = "runs/sdr_tiny_fmnist"  # every stage writes and resumes here
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    log_every: int = 10  # steps between metrics lines
    checkpoint_every: int = 100  # steps between resumable checkpoints
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d, "")

    def save(self, file: Path) -> None:
        """Atomically: a crash mid-write must not leave a truncated recipe that refuses every resume."""
        write_text_atomic(file, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_config(file: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe YAML, then apply `section.key=value` overrides; unknown keys fail with their dotted name.

    Overrides let an ablation differ from its recipe by the one setting it ablates
    (`--set cluster.mapping=random`) instead of by a copied file that drifts from the original.
    Values are parsed as YAML, so `0.5`, `true` and `[1, 2]` get their types.
    """
    file = Path(file)
    if not file.is_file():
        raise TrainConfigError(f"config file {file} does not exist")
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{file}: expected a mapping at the top level")
    for override in overrides:
        _apply_override(raw, override)
    return TrainConfig.from_dict(raw)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(f"override {override!r} is not KEY=VALUE (for example progressive.rho=1.0)")
    *sections, name = key.strip().split(".")
    node = raw
    for i, section in enumerate(sections):
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"override {override!r}: {'.'.join(sections[: i + 1])} is not a section")
        node = child
    node[name] = yaml.safe_load(text)


def _build(cls: Any, d: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise TrainConfigError(f"unknown config keys: {names}; expected some of {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        sub = _SECTIONS.get(name) if cls is TrainConfig else None
        if sub is not None:
            if not isinstance(value, dict):
                raise TrainConfigError(f"config section {prefix}{name} must be a mapping")
            kwargs[name] = _build(sub, value, f"{prefix}{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "ssl": SSLConfig,
    "optim": OptimConfig,
    "baseline": BaselineConfig,
    "cluster": ClusterConfig,
    "progressive": ProgressiveConfig,
    "calibrate": CalibrateConfig,
}


def _to_plain(value: Any) -> Any:
    """Tuples become lists so that YAML and JSON hold plain values."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value
