"""Every knob of a route in one frozen, JSON-able value: the service ships it to its workers as is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sdr_model.config import from_known_fields
from sdr_model.routing.knn import DEFAULT_KS, TEMPERATURE
from sdr_model.routing.selection import SELECTION_METHODS, Selection

__all__ = ["SCORERS", "RouteOptions", "ScorerName"]

ScorerName = Literal["knn", "logme", "sfda", "gbc"]
SCORERS: tuple[ScorerName, ...] = ("knn", "logme", "sfda", "gbc")


@dataclass(frozen=True)
class RouteOptions:
    """How paths are scored, selected and reported. Two routes with equal options agree exactly."""

    scorer: ScorerName = "knn"  # what ranks the paths; the reported accuracy is always kNN on test
    selection: Selection = "loo"  # kNN selection: leave-one-out on train, or a carved selection split
    k: int = 200  # neighbours for ranking and the headline accuracy (the paper's default)
    ks: tuple[int, ...] = DEFAULT_KS  # further k reported per path (DINO reports 20 and 200)
    temperature: float = TEMPERATURE  # kNN vote weight exp(sim / T)
    test_fraction: float = 0.2  # held out as test when the dataset has a single split
    selection_fraction: float = 0.2  # carved from train as the selection split (selection="split")
    seed: int = 0  # splits and bootstrap resamples
    n_boot: int = 1000  # bootstrap resamples for intervals and ties
    ci_level: float = 0.95  # two-sided level of intervals and of the tie test
    batch_size: int = 128  # images per forward mini-batch
    screen_fraction: float = 0.25  # screening: share of train scored for every path
    screen_top: int = 8  # screening: paths re-scored on everything

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {list(SCORERS)}, got {self.scorer!r}")
        if self.selection not in SELECTION_METHODS:
            raise ValueError(f"selection must be one of {list(SELECTION_METHODS)}, got {self.selection!r}")
        if self.k < 1 or any(k < 1 for k in self.ks):
            raise ValueError(f"k must be >= 1, got k={self.k}, ks={self.ks}")
        for name in ("test_fraction", "selection_fraction", "screen_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not 0.0 < self.ci_level < 1.0 or self.n_boot < 10:
            raise ValueError(f"need 0 < ci_level < 1 and n_boot >= 10, got {self.ci_level}, {self.n_boot}")
        if self.batch_size < 1 or self.screen_top < 1 or self.temperature <= 0:
            raise ValueError("batch_size and screen_top must be >= 1 and temperature > 0")

    @property
    def all_ks(self) -> tuple[int, ...]:
        """The ranking k and the reported ks, sorted, without repeats."""
        return tuple(sorted({self.k, *self.ks}))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouteOptions:
        return from_known_fields(cls, d, "route options", ValueError)
