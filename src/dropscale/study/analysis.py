"""Statistics of a study's results: intervals over seeds and paired verdicts.

Everything here works on result rows (dicts as written to ``results.csv``), so
a verdict can be recomputed from the CSV alone.

Intervals are two-sided 95 % Student-t intervals over seeds: for values
``v_1..v_n`` with mean ``m`` and sample std ``s``, ``m +- t(0.975, n-1) s/sqrt(n)``.
Paired comparisons use the same interval on the per-seed differences between
two conventions that share a seed (same initialisation, data order and masks).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "Comparison",
    "Interval",
    "PVerdict",
    "interval",
    "summarise",
    "verdicts",
]

Row = Mapping[str, object]


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a 95 % t-interval (infinite when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


def interval(values: Iterable[float]) -> Interval:
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        raise ValueError("interval: no values")
    m = sum(v) / n
    if n < 2:
        return Interval(m, -math.inf, math.inf, n)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def summarise(rows: Iterable[Row], metric: str) -> dict[tuple[str, float], Interval]:
    """Mean and interval of ``metric`` per (scaling, p)."""
    groups: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in rows:
        groups[(str(r["scaling"]), float(r["p"]))].append(float(r[metric]))
    return {k: interval(v) for k, v in groups.items()}


@dataclass(frozen=True)
class Comparison:
    """Winner minus ``other`` on the metric, paired by seed."""

    other: str
    diff: Interval

    @property
    def separated(self) -> bool:
        """True when the whole interval of the difference lies above zero."""
        return self.diff.low > 0.0


@dataclass(frozen=True)
class PVerdict:
    """Which convention is best at one ``p``, and by how much."""

    p: float
    metric: str
    winner: str
    winner_value: Interval
    comparisons: tuple[Comparison, ...]

    @property
    def clear(self) -> bool:
        return all(c.separated for c in self.comparisons)

    def sentence(
        self, scale: float = 100.0, unit: str = " points", digits: int = 2
    ) -> str:
        """The verdict in one paragraph; values are multiplied by ``scale``."""
        w = self.winner_value
        head = (
            f"At p = {self.p:g}, **{self.winner}** has the best mean test "
            f"{self.metric}, {w.mean * scale:.{digits}f} "
            f"[{w.low * scale:.{digits}f}, {w.high * scale:.{digits}f}]"
        )
        if not self.comparisons:
            return head + "; it is the only convention."
        parts = []
        for c in self.comparisons:
            d = c.diff
            tag = "outside the interval" if c.separated else "the interval includes 0"
            parts.append(
                f"{d.mean * scale:+.{digits}f}{unit} over {c.other} "
                f"[{d.low * scale:+.{digits}f}, {d.high * scale:+.{digits}f}], {tag}"
            )
        if self.clear:
            tail = "it beats every other convention beyond the interval."
        elif any(c.separated for c in self.comparisons):
            tail = "it wins against some conventions; the rest are not separable."
        else:
            tail = "no convention is separable from it at this number of seeds."
        return f"{head}: " + "; ".join(parts) + f". So {tail}"


def verdicts(
    rows: Iterable[Row], metric: str = "accuracy", higher_is_better: bool = True
) -> list[PVerdict]:
    """For every p: the convention with the best mean and paired gaps to the rest.

    Seeds present for both conventions are paired; a seed missing for either is
    left out of that comparison.
    """
    rows = list(rows)
    sign = 1.0 if higher_is_better else -1.0
    by_p: dict[float, dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        by_p[float(r["p"])][str(r["scaling"])][int(r["seed"])] = float(r[metric])
    out = []
    for p in sorted(by_p):
        conv = by_p[p]
        means = {s: sum(v.values()) / len(v) for s, v in conv.items()}
        winner = max(means, key=lambda s: (sign * means[s], s))
        comps = []
        for other in sorted(conv, key=lambda s: -sign * means[s]):
            if other == winner:
                continue
            shared = sorted(set(conv[winner]) & set(conv[other]))
            if not shared:
                continue
            diffs = [sign * (conv[winner][s] - conv[other][s]) for s in shared]
            comps.append(Comparison(other, interval(diffs)))
        out.append(
            PVerdict(
                p=p,
                metric=metric,
                winner=winner,
                winner_value=interval(conv[winner].values()),
                comparisons=tuple(comps),
            )
        )
    return out
