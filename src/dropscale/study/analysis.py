"""Statistics of a study's results: intervals over seeds and paired verdicts.

Everything here works on result rows (dicts as written to ``results.csv``), so
a verdict can be recomputed from the CSV alone.

Intervals are two-sided 95 % Student-t intervals over seeds: for values
``v_1..v_n`` with mean ``m`` and sample std ``s``, ``m +- t(0.975, n-1) s/sqrt(n)``.
Paired comparisons use the same interval on the per-seed differences between
two conventions that share a seed (same initialisation, data order and masks).

Two cases the t-interval cannot describe are named as such:

- *tied*: every per-seed difference is zero (two rules that train and infer
  identically, e.g. every rule at p = 0). No rule is called the winner over
  a rule it is tied with.
- *degenerate*: every seed gives the same non-zero difference, so s = 0 and
  the interval has zero width. Test accuracy is discrete, so this happens by
  chance with few seeds and says nothing about precision. Such a comparison
  is judged by a two-sided sign test instead: all n seeds on one side has
  probability 2 * 0.5^n under "no difference", below 0.05 only for n >= 6.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "SIGN_TEST_MIN_SEEDS",
    "Comparison",
    "Interval",
    "PVerdict",
    "SpreadVerdict",
    "best_eval_scale",
    "format_interval",
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

#: Fewest seeds at which a sign test with every seed on one side is below 0.05
#: (two-sided: 2 * 0.5^6 = 0.031; with 5 seeds it is 0.0625).
SIGN_TEST_MIN_SEEDS = 6

# Values this close (relative to their size) count as equal: per-seed values
# of identical models agree exactly; the slack only absorbs rounding in the
# differences of equal gaps (0.9 - 0.8 against 0.8 - 0.7).
_REL_TOL = 1e-12


def _same(x: float, y: float) -> bool:
    return abs(x - y) <= _REL_TOL * max(1.0, abs(x), abs(y))


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a 95 % t-interval (infinite when n < 2;
    zero width when all values are equal, see ``degenerate``)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def degenerate(self) -> bool:
        """All ``n >= 2`` values are equal: s = 0 and the interval has zero
        width, which with discrete metrics is chance, not precision."""
        return self.n >= 2 and self.low == self.high


def interval(values: Iterable[float]) -> Interval:
    """Mean and 95 % Student-t interval ``m +- t(0.975, n-1) s/sqrt(n)``."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        raise ValueError("interval: no values")
    m = sum(v) / n
    if n < 2:
        return Interval(m, -math.inf, math.inf, n)
    if all(_same(x, v[0]) for x in v):
        return Interval(m, m, m, n)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def format_interval(
    iv: Interval,
    scale: float = 1.0,
    digits: int = 2,
    *,
    sign: bool = False,
    bounds: tuple[float, float] | None = None,
) -> str:
    """``"mean [low, high]"`` with values multiplied by ``scale``.

    ``bounds`` (in unscaled units) clips the displayed interval to the range
    the quantity can take, e.g. ``(0, 1)`` for an accuracy: a t-interval is
    symmetric and can reach past 100 %. With one value there is no interval
    and the text says so.
    """
    f = f"{'+' if sign else ''}.{digits}f"
    if iv.n < 2:
        return f"{iv.mean * scale:{f}} (1 seed, no interval)"
    low, high = iv.low, iv.high
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"{iv.mean * scale:{f}} [{low * scale:{f}}, {high * scale:{f}}]"


def _side(iv: Interval) -> int:
    """+1 (-1) when the interval of a paired difference shows it above
    (below) zero, else 0. Never with fewer than 3 seeds; a degenerate
    interval is judged by the sign test (``SIGN_TEST_MIN_SEEDS``)."""
    if iv.degenerate:
        if iv.n < SIGN_TEST_MIN_SEEDS or iv.mean == 0.0:
            return 0
        return 1 if iv.mean > 0 else -1
    if iv.n < 3:
        return 0
    return 1 if iv.low > 0 else -1 if iv.high < 0 else 0


def _diff_note(iv: Interval, separated: bool) -> str:
    """How a paired difference's interval reads, in words."""
    if iv.n < 2:
        return "one seed cannot separate them"
    if iv.degenerate:
        p = 2 * 0.5**iv.n
        verdict = "beyond chance" if separated else "which could be chance"
        return (
            f"every one of the {iv.n} seeds gives this same difference, so the "
            "interval is degenerate (zero width: accuracy is discrete, this is "
            f"not precision); by a sign test, p = {p:.3g}, {verdict}"
        )
    if separated:
        return "0 lies outside the interval"
    where = (
        "0 lies outside the interval"
        if iv.low > 0 or iv.high < 0
        else "the interval includes 0"
    )
    if iv.n < 3:
        # below 3 seeds no interval separates (see ``_side``): say so rather
        # than claim the interval includes 0 when it does not
        return f"{where}, but {iv.n} seeds are too few to call a winner (3 needed)"
    return where


def summarise(rows: Iterable[Row], metric: str) -> dict[tuple[str, float], Interval]:
    """Mean and interval of ``metric`` per (scaling, p)."""
    groups: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in rows:
        groups[(str(r["scaling"]), float(r["p"]))].append(float(r[metric]))
    return {k: interval(v) for k, v in groups.items()}


@dataclass(frozen=True)
class Comparison:
    """Winner minus ``other`` on the metric, paired by seed; ``also`` names
    rules whose per-seed values equal ``other``'s at every seed."""

    other: str
    diff: Interval
    also: tuple[str, ...] = ()

    @property
    def separated(self) -> bool:
        """True when the difference is shown above zero: the whole interval
        lies above 0 with at least 3 seeds, or, for a degenerate interval, a
        sign test below 0.05 (``SIGN_TEST_MIN_SEEDS`` seeds or more)."""
        return _side(self.diff) > 0

    @property
    def names(self) -> str:
        if not self.also:
            return self.other
        return f"{self.other} (and {_join(self.also)}, identical at every seed)"


def _join(names: Iterable[str]) -> str:
    names = list(names)
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class PVerdict:
    """Which convention is best at one ``p``, and by how much.

    ``tied`` names the rules whose per-seed values equal the winner's at
    every seed (all paired differences zero): they share first place and no
    comparison is made with them. ``bounds`` clips the displayed interval of
    the winner's value (``(0, 1)`` for accuracies).
    """

    p: float
    metric: str
    winner: str
    winner_value: Interval
    comparisons: tuple[Comparison, ...]
    tied: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None

    @property
    def clear(self) -> bool:
        return not self.tied and all(c.separated for c in self.comparisons)

    @property
    def leaders(self) -> tuple[str, ...]:
        """The winner and every rule tied with it."""
        return (self.winner, *self.tied)

    def sentence(
        self, scale: float = 100.0, unit: str = " points", digits: int = 2
    ) -> str:
        """The verdict in one paragraph; values are multiplied by ``scale``."""
        value = format_interval(self.winner_value, scale, digits, bounds=self.bounds)
        if self.tied:
            names = _join(f"**{s}**" for s in self.leaders)
            head = (
                f"At p = {self.p:g}, {names} are tied for the best mean test "
                f"{self.metric}, {value} (every seed gives them exactly the "
                "same value)"
            )
        else:
            head = (
                f"At p = {self.p:g}, **{self.winner}** has the best mean test "
                f"{self.metric}, {value}"
            )
            level = [c.other for c in self.comparisons if _same(c.diff.mean, 0.0)]
            if level:
                head += f" (the same mean as {_join(level)}, though not seed by seed)"
        if not self.comparisons:
            if self.tied:
                return head + ". So no single convention wins."
            return head + "; it is the only convention."
        parts = []
        for c in self.comparisons:
            d = c.diff
            diff = format_interval(d, scale, digits, sign=True)
            mean, rest = diff.split(" ", 1)
            parts.append(
                f"{mean}{unit} over {c.names} {rest}, {_diff_note(d, c.separated)}"
            )
        who = "they beat" if self.tied else "it beats"
        if all(c.separated for c in self.comparisons):
            tail = f"{who} every other convention beyond the interval."
        elif any(c.separated for c in self.comparisons):
            tail = (
                f"{'they win' if self.tied else 'it wins'} against some "
                "conventions; the rest are not separable."
            )
        else:
            tail = (
                "no other convention is separable from "
                f"{'them' if self.tied else 'it'} at this number of seeds."
            )
        if self.tied:
            tail = f"no single convention wins; {tail}"
        return f"{head}: " + "; ".join(parts) + f". So {tail}"


def _identical(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
    return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)


def verdicts(
    rows: Iterable[Row], metric: str = "accuracy", higher_is_better: bool = True
) -> list[PVerdict]:
    """For every p: the convention with the best mean and paired gaps to the rest.

    Seeds present for both conventions are paired; a seed missing for either is
    left out of that comparison. Rules with the winner's value at every seed
    are reported as tied with it; rules identical to each other are compared
    once, named together.
    """
    rows = list(rows)
    sign = 1.0 if higher_is_better else -1.0
    bounds = (0.0, 1.0) if metric.endswith("accuracy") else None
    by_p: dict[float, dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        by_p[float(r["p"])][str(r["scaling"])][int(r["seed"])] = float(r[metric])
    out = []
    for p in sorted(by_p):
        conv = by_p[p]
        order = list(conv)
        means = {s: sum(v.values()) / len(v) for s, v in conv.items()}
        best = max(means, key=lambda s: (sign * means[s], -order.index(s)))
        leaders = [s for s in order if _identical(conv[s], conv[best])]
        winner = leaders[0]
        comps: list[Comparison] = []
        for other in sorted(
            (s for s in order if s not in leaders),
            key=lambda s: (-sign * means[s], order.index(s)),
        ):
            twin = next(
                (
                    i
                    for i, c in enumerate(comps)
                    if _identical(conv[c.other], conv[other])
                ),
                None,
            )
            if twin is not None:
                c = comps[twin]
                comps[twin] = Comparison(c.other, c.diff, (*c.also, other))
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
                tied=tuple(leaders[1:]),
                bounds=bounds,
            )
        )
    return out


def _f(r: Row, key: str) -> float:
    return float(r[key])  # type: ignore[arg-type]


def _arm(rows: Iterable[Row], scaling: str, p: float) -> list[Row]:
    """The rows of one (scaling, p) arm, one per seed."""
    return [
        r
        for r in rows
        if str(r["scaling"]) == scaling and float(r["p"]) == p  # type: ignore[arg-type]
    ]


def paired_interval(
    rows: Iterable[Row], scaling: str, p: float, metric_a: str, metric_b: str
) -> Interval | None:
    """Interval of ``metric_a - metric_b`` over the seeds of one (scaling, p);
    both metrics come from the same trained model, so the pairing is exact."""
    diffs = [_f(r, metric_a) - _f(r, metric_b) for r in _arm(rows, scaling, p)]
    return interval(diffs) if diffs else None


def sweep_curve(
    rows: Iterable[Row], scaling: str, p: float, scales: Iterable[float]
) -> list[tuple[float, Interval, Interval]]:
    """(c, accuracy interval, NLL interval) over the eval-scale grid."""
    rows = _arm(rows, scaling, p)
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
    rows = _arm(rows, scaling, p)
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
        undecided with fewer than 3 seeds. A degenerate (zero-width)
        interval decides only by the sign test (see the module docstring)."""
        a, n = self.acc_diff, self.nll_diff
        if a.n < 3:
            return "undecided"
        side = _side(a)
        if side:
            return "spread" if side > 0 else "mean"
        side = _side(n)
        if side:
            return "mean" if side > 0 else "spread"
        return "undecided"

    def sentence(self) -> str:
        a, n = self.acc_diff, self.nll_diff
        cs = ", ".join(f"{c:.3f}" for c in self.std_c)
        head = (
            f"{self.scaling}, p = {self.p:g}: matching the training std "
            f"(c = {cs} per site) instead of the mean (c = 1) changes test "
            f"accuracy by {format_interval(a, 100, 2, sign=True)} points and "
            f"NLL by {format_interval(n, 1, 4, sign=True)}"
        )
        if a.degenerate:
            if _same(a.mean, 0.0):
                head += " (accuracy: the same at every seed)"
            else:
                head += f" (accuracy: {_diff_note(a, _side(a) != 0)})"
        answer = self.answer
        if answer == "undecided":
            return f"{head}; the two are not separable at this number of seeds."
        side = "the spread" if answer == "spread" else "the mean"
        by_accuracy = a.n >= 3 and _side(a) != 0
        basis = (
            "on accuracy"
            if by_accuracy
            else "accuracy cannot tell them apart, but on NLL"
        )
        return f"{head}; {basis}, matching {side} gives the better model."


def best_eval_scale(
    curve: Iterable[tuple[float, Interval, Interval]],
) -> tuple[float, Interval, str]:
    """The eval scale c with the best mean accuracy on a ``sweep_curve``.

    Returns ``(c, accuracy interval at c, label)``. When several c share
    the best mean, c = 1 (the rule's own inference) is preferred if it is
    among them, else the one nearest 1 (on a log scale); the label names
    the others as tied, e.g. ``"1 (tied with 0.625, 0.75)"``.
    """
    curve = list(curve)
    if not curve:
        raise ValueError("best_eval_scale: empty curve")
    top = max(a.mean for _, a, _ in curve)
    tied = [(c, a) for c, a, _ in curve if _same(a.mean, top)]
    c, acc = min(tied, key=lambda t: (abs(math.log(t[0])), t[0]))
    others = [f"{x:g}" for x, _ in tied if x != c]
    label = f"{c:g}" + (f" (tied with {', '.join(others)})" if others else "")
    return c, acc, label


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
