"""The definition of a study: what is trained, under which rules, how often."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from dropscale.scaling import get_scaling

__all__ = ["StudyConfig", "Trial"]

DEFAULT_SCALINGS = ("inverted", "classic", "variance", "none")


@dataclass(frozen=True)
class Trial:
    """One trained model: a convention, a drop probability and a seed index."""

    scaling: str
    p: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.scaling}|p={self.p:g}|seed={self.seed}"


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study; the trials are its grid.

    Every trial with the same ``seed`` starts from the same initialisation,
    sees the training data in the same order and draws its masks from the
    same random stream, whatever its convention.
    """

    dataset: str = "digits"
    scalings: tuple[str, ...] = DEFAULT_SCALINGS
    ps: tuple[float, ...] = (0.1, 0.25, 0.5)
    seeds: int = 5
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    test_fraction: float = 0.25
    split_seed: int = 0
    threads: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "digits":
            raise ValueError(f"dataset: unknown {self.dataset!r}; available: digits")
        if not self.scalings:
            raise ValueError("scalings: give at least one convention")
        for s in self.scalings:
            get_scaling(s)
        if not self.ps:
            raise ValueError("ps: give at least one drop probability")
        for p in self.ps:
            if not (isinstance(p, int | float) and 0.0 <= p < 1.0) or math.isnan(p):
                raise ValueError(
                    f"ps: every p must be in [0, 1) to train a model, got {p!r}"
                )
        for name in ("seeds", "epochs", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: widths must be positive, got {self.hidden!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; use adam or sgd")

    def trials(self) -> list[Trial]:
        """The grid, seed-major so that early trials cover every convention."""
        return [
            Trial(get_scaling(s).name, float(p), seed)
            for seed in range(self.seeds)
            for p in self.ps
            for s in self.scalings
        ]

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["scalings"] = list(self.scalings)
        d["ps"] = list(self.ps)
        d["hidden"] = list(self.hidden)
        return d
