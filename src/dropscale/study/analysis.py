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
    "SpreadVerdict",
    "interval",
    "mc_curve",
    "mean_or_spread",
    "paired_interval",
    "preliminary_note",
    "summarise",
    "sweep_curve",
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
        """True when the whole interval of the difference lies above zero
        (never with fewer than 3 seeds, whose intervals mean little)."""
        return self.diff.n >= 3 and self.diff.low > 0.0


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


def _f(r: Row, key: str) -> float:
    return float(r[key])  # type: ignore[arg-type]


def paired_interval(
    rows: Iterable[Row], scaling: str, p: float, metric_a: str, metric_b: str
) -> Interval | None:
    """Interval of ``metric_a - metric_b`` over the seeds of one (scaling, p);
    both metrics come from the same trained model, so the pairing is exact."""
    diffs = [
        _f(r, metric_a) - _f(r, metric_b)
        for r in rows
        if str(r["scaling"]) == scaling and float(r["p"]) == p  # type: ignore[arg-type]
    ]
    return interval(diffs) if diffs else None


def sweep_curve(
    rows: Iterable[Row], scaling: str, p: float, scales: Iterable[float]
) -> list[tuple[float, Interval, Interval]]:
    """(c, accuracy interval, NLL interval) over the eval-scale grid."""
    rows = [
        r
        for r in rows
        if str(r["scaling"]) == scaling and float(r["p"]) == p  # type: ignore[arg-type]
    ]
    out = []
    for c in scales:
        key = f"scale_{c:g}"
        if rows and f"{key}_accuracy" in rows[0]:
            out.append(
                (
                    c,
                    interval(_f(r, f"{key}_accuracy") for r in rows),
                    interval(_f(r, f"{key}_nll") for r in rows),
                )
            )
    return out


def mc_curve(
    rows: Iterable[Row], scaling: str, p: float, samples: Iterable[int]
) -> list[tuple[int, Interval, Interval]]:
    """(T, MC accuracy interval, interval of MC minus own-rule accuracy)."""
    rows = [
        r
        for r in rows
        if str(r["scaling"]) == scaling and float(r["p"]) == p  # type: ignore[arg-type]
    ]
    out = []
    for t in samples:
        key = f"mc_{t}_accuracy"
        if rows and key in rows[0]:
            out.append(
                (
                    t,
                    interval(_f(r, key) for r in rows),
                    interval(_f(r, key) - _f(r, "accuracy") for r in rows),
                )
            )
    return out


def preliminary_note(n_seeds: int) -> str:
    """The caveat every verdict carries when it rests on few seeds."""
    if n_seeds <= 5:
        return (
            f"With {n_seeds} seed{'s' if n_seeds != 1 else ''} this verdict is "
            "preliminary: the intervals are wide and a rerun with more seeds "
            "may change it."
        )
    return (
        f"Based on {n_seeds} seeds; 95 % intervals, so about one comparison in "
        "twenty that looks separated can be chance."
    )


@dataclass(frozen=True)
class SpreadVerdict:
    """Mean-matching (c = 1) against std-matching (measured c per site) at
    inference, for models trained under one convention at one p.

    ``acc_diff`` and ``nll_diff`` are paired intervals of std-matching minus
    mean-matching over seeds; ``std_c`` is the mean std-matching factor per
    site.
    """

    scaling: str
    p: float
    acc_diff: Interval
    nll_diff: Interval
    std_c: tuple[float, ...]

    @property
    def answer(self) -> str:
        """``"mean"``, ``"spread"`` or ``"undecided"``: the side whose paired
        accuracy interval excludes 0 (NLL decides when accuracy cannot);
        undecided with fewer than 3 seeds."""
        a, n = self.acc_diff, self.nll_diff
        if a.n < 3:
            return "undecided"
        if a.low > 0:
            return "spread"
        if a.high < 0:
            return "mean"
        if n.high < 0:
            return "spread"
        if n.low > 0:
            return "mean"
        return "undecided"

    def sentence(self) -> str:
        a, n = self.acc_diff, self.nll_diff
        cs = ", ".join(f"{c:.3f}" for c in self.std_c)
        head = (
            f"{self.scaling}, p = {self.p:g}: matching the training std "
            f"(c = {cs} per site) instead of the mean (c = 1) changes test "
            f"accuracy by {a.mean * 100:+.2f} points "
            f"[{a.low * 100:+.2f}, {a.high * 100:+.2f}] and NLL by "
            f"{n.mean:+.4f} [{n.low:+.4f}, {n.high:+.4f}]"
        )
        answer = self.answer
        if answer == "undecided":
            return f"{head}; the two are not separable at this number of seeds."
        side = "the spread" if answer == "spread" else "the mean"
        by_accuracy = a.n >= 3 and (a.low > 0 or a.high < 0)
        basis = (
            "on accuracy"
            if by_accuracy
            else "accuracy cannot tell them apart, but on NLL"
        )
        return f"{head}; {basis}, matching {side} gives the better model."


def mean_or_spread(
    rows: Iterable[Row], scaling: str = "inverted"
) -> list[SpreadVerdict]:
    """The direct test of "mean or spread", per p, for models trained under
    ``scaling`` (inverted by default, whose c = 1 matches the training mean)."""
    rows = [r for r in rows if str(r["scaling"]) == scaling]
    out = []
    for p in sorted({float(r["p"]) for r in rows}):  # type: ignore[arg-type]
        acc = paired_interval(
            rows, scaling, p, "scale_std_accuracy", "scale_1_accuracy"
        )
        nll = paired_interval(rows, scaling, p, "scale_std_nll", "scale_1_nll")
        if acc is None or nll is None:
            continue
        sub = [r for r in rows if float(r["p"]) == p]  # type: ignore[arg-type]
        n_sites = 0
        while f"site{n_sites}_std_c" in sub[0]:
            n_sites += 1
        std_c = tuple(
            sum(_f(r, f"site{i}_std_c") for r in sub) / len(sub) for i in range(n_sites)
        )
        out.append(SpreadVerdict(scaling, p, acc, nll, std_c))
    return out
