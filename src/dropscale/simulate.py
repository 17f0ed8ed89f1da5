"""Streaming Monte Carlo of dropout's output moments, with confidence intervals.

The experiment: draw ``n_elements`` values of ``x ~ N(mu, sigma^2)``, apply
dropout in training mode, and measure the mean and standard deviation of ``x``
and of the output ``y``. Values are drawn and reduced chunk by chunk, so memory
does not grow with ``n_elements``.

Intervals (95 %, normal approximation, valid for large n):

- mean: ``m +- 1.96 s / sqrt(n)``;
- std: ``s +- 1.96 se_s`` with ``se_s = sqrt((m4 - s^4) / n) / (2 s)``, the
  delta-method standard error of the sample std from the fourth central
  moment ``m4``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from dropscale.functional import dropout, resolve_p
from dropscale.moments import moments
from dropscale.scaling import ScalingLike, get_scaling

__all__ = ["Measured", "SimulationResult", "simulate"]

Z95 = 1.959963984540054


class _Accumulator:
    """Sums of ``(v - c)^k`` for k = 1..4 in float64, merged chunk by chunk."""

    def __init__(self, center: float) -> None:
        self.c = center
        self.n = 0
        self.s = [0.0, 0.0, 0.0, 0.0]

    def add(self, v: torch.Tensor) -> None:
        d = v.double().sub_(self.c)
        d2 = d * d
        self.s[0] += d.sum().item()
        self.s[1] += d2.sum().item()
        self.s[2] += (d2 * d).sum().item()
        self.s[3] += d2.square_().sum().item()
        self.n += v.numel()

    def result(self, exact_mean: float, exact_std: float) -> Measured:
        n = self.n
        e1, e2, e3, e4 = (s / n for s in self.s)
        mean = self.c + e1
        var = max(e2 - e1 * e1, 0.0)
        m4 = e4 - 4 * e1 * e3 + 6 * e1 * e1 * e2 - 3 * e1**4
        std = math.sqrt(var)
        se_mean = std / math.sqrt(n)
        se_std = math.sqrt(max(m4 - var * var, 0.0) / n) / (2 * std) if std else 0.0
        return Measured(
            mean=mean,
            std=std,
            se_mean=se_mean,
            se_std=se_std,
            exact_mean=exact_mean,
            exact_std=exact_std,
        )


@dataclass(frozen=True)
class Measured:
    """A measured mean and std, their standard errors and the exact values."""

    mean: float
    std: float
    se_mean: float
    se_std: float
    exact_mean: float
    exact_std: float

    @property
    def mean_interval(self) -> tuple[float, float]:
        return self.mean - Z95 * self.se_mean, self.mean + Z95 * self.se_mean

    @property
    def std_interval(self) -> tuple[float, float]:
        return self.std - Z95 * self.se_std, self.std + Z95 * self.se_std

    @property
    def z_mean(self) -> float:
        """``|measured - exact|`` of the mean, in standard errors."""
        return _z(self.mean, self.exact_mean, self.se_mean)

    @property
    def z_std(self) -> float:
        """``|measured - exact|`` of the std, in standard errors."""
        return _z(self.std, self.exact_std, self.se_std)

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(
            mean_ci=list(self.mean_interval),
            std_ci=list(self.std_interval),
            z_mean=self.z_mean,
            z_std=self.z_std,
        )
        return d


def _z(value: float, exact: float, se: float) -> float:
    if se == 0.0:
        return 0.0 if value == exact else math.inf
    return abs(value - exact) / se


@dataclass(frozen=True)
class SimulationResult:
    """Measured input and output moments of one convention at one ``p``."""

    scaling: str
    p: float
    n_elements: int
    seed: int
    input: Measured
    output: Measured

    def as_dict(self) -> dict[str, object]:
        return {
            "scaling": self.scaling,
            "p": self.p,
            "n_elements": self.n_elements,
            "seed": self.seed,
            "input": self.input.as_dict(),
            "output": self.output.as_dict(),
        }


def simulate(
    p: float,
    *,
    n_elements: int,
    scaling: ScalingLike = "inverted",
    mean: float = 0.0,
    std: float = 1.0,
    seed: int = 0,
    chunk_elements: int = 1 << 22,
) -> SimulationResult:
    """Measure dropout's training-mode output moments on ``N(mean, std^2)`` input.

    Args:
        p: drop probability.
        n_elements: how many values to draw (``n * n`` for an n-by-n tensor).
        scaling: the convention.
        mean, std: the input distribution.
        seed: seed of the generator that draws inputs and masks.
        chunk_elements: values drawn and reduced at once; bounds the memory.
    """
    p = resolve_p(p)
    conv = get_scaling(scaling)
    if n_elements < 2:
        raise ValueError(f"n_elements must be at least 2, got {n_elements}")
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
    exact = moments(p, mean=mean, std=std, scaling=conv)
    gen = torch.Generator().manual_seed(seed)
    acc_x = _Accumulator(mean)
    acc_y = _Accumulator(exact.train_mean)
    left = n_elements
    while left > 0:
        k = min(chunk_elements, left)
        x = torch.randn(k, generator=gen).mul_(std).add_(mean)
        y = dropout(x, p, scaling=conv, training=True, generator=gen)
        acc_x.add(x)
        acc_y.add(y)
        left -= k
    return SimulationResult(
        scaling=conv.name,
        p=p,
        n_elements=n_elements,
        seed=seed,
        input=acc_x.result(mean, std),
        output=acc_y.result(exact.train_mean, exact.train_std),
    )
