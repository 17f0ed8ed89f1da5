"""BatchNorm next to dropout: the variance shift, its cost and its fix, from
result rows.

An ``mlp-bn`` trial (see :mod:`dropscale.study.workloads`) records, per
BatchNorm layer ``j`` that has dropout right before it,

- ``bn<j>_shift_measured``: the inference variance of BN's input (dropout
  in inference mode) over BN's running variance, learnt in training;
- ``bn<j>_shift_exact``: the same ratio from
  :func:`dropscale.moments.batchnorm_shift` at each unit's measured input
  mean ``mu`` and std ``sigma``: ``b^2 sigma^2 / (a^2 q (sigma^2 + p mu^2))``
  pooled over units (``q sigma^2 / (sigma^2 + p mu^2)`` under inverted
  dropout);

and, for every order, ``bn_recal_accuracy``/``bn_recal_nll``: the test
scores after re-estimating BatchNorm's running statistics on the training
inputs with dropout off. The accuracy the re-estimation recovers,
``bn_recal_accuracy - accuracy`` paired within each trained model, bounds
what the shift cost from above: re-estimating also replaces running averages
that lag behind the weights. With rows of both orders (``dropout-bn`` and
``bn-dropout``, e.g. the ``bn-shift`` and ``bn-shift-after`` studies read
together), the paired accuracy difference after minus before over the seeds
both hold, and the gain before minus the gain after (the control has no
shift), which is the part of the gain owed to the shift.

Intervals are the 95 % Student-t intervals of :mod:`dropscale.study.analysis`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dropscale.study.analysis import Interval, interval

__all__ = [
    "BEFORE",
    "AFTER",
    "BNShift",
    "OrderComparison",
    "bn_order",
    "bn_shift_summary",
    "order_comparison",
]

Row = Mapping[str, object]

BEFORE = "dropout-bn"  # dropout before BatchNorm: BN learns the shifted variance
AFTER = "bn-dropout"  # dropout after BatchNorm: the control


def bn_order(row: Row) -> str | None:
    """The row's ``order`` model option, or ``None`` for a model without one."""
    opts = row.get("model_options", "{}")
    if isinstance(opts, str):
        try:
            opts = json.loads(opts or "{}")
        except json.JSONDecodeError:
            return None
    order = opts.get("order") if isinstance(opts, Mapping) else None
    return None if order is None else str(order)


def _f(row: Row, key: str) -> float:
    return float(row[key])  # type: ignore[arg-type]


@dataclass(frozen=True)
class BNShift:
    """One (order, scaling, p) over its seeds.

    ``shift`` holds, per BatchNorm layer with dropout right before it, the
    measured and the exact variance shift (empty for ``bn-dropout``);
    ``fix`` and ``nll_fix`` are paired intervals of the re-estimated minus
    the trained statistics' test accuracy and NLL.
    """

    order: str
    scaling: str
    p: float
    shift: tuple[tuple[Interval, Interval], ...]
    accuracy: Interval
    recal_accuracy: Interval
    fix: Interval
    nll: Interval
    recal_nll: Interval
    nll_fix: Interval

    @property
    def n(self) -> int:
        return self.accuracy.n

    @property
    def fix_separated(self) -> bool:
        """The re-estimation gain lies above zero beyond the interval (never
        with fewer than 3 seeds)."""
        return self.fix.n >= 3 and self.fix.low > 0.0

    def sentence(self) -> str:
        """What this arm shows, in one paragraph (accuracy in points)."""
        where = "before" if self.order == BEFORE else "after"
        head = f"{self.scaling}, p = {self.p:g}, dropout {where} BatchNorm: "
        parts = []
        if self.shift:
            m, e = self.shift[0]
            parts.append(
                "the first BatchNorm layer's inference variance is "
                f"{m.mean:.3f} [{m.low:.3f}, {m.high:.3f}] times its running "
                f"variance, exact {e.mean:.3f}"
            )
        f = self.fix
        gain = (
            f"re-estimating BatchNorm with dropout off changes test accuracy "
            f"from {self.accuracy.mean * 100:.2f} % to "
            f"{self.recal_accuracy.mean * 100:.2f} %, "
            f"{f.mean * 100:+.2f} points [{f.low * 100:+.2f}, {f.high * 100:+.2f}]"
        )
        if self.fix_separated:
            gain += ", a gain beyond the interval"
        elif f.n >= 3 and f.high < 0:
            gain += ", a loss beyond the interval"
        elif f.low > 0 or f.high < 0:  # below 3 seeds: too few to call it
            gain += f", 0 lies outside the interval but {f.n} seeds are too few"
        else:
            gain += ", the interval includes 0"
        parts.append(gain)
        return head + "; ".join(parts) + "."


def bn_shift_summary(rows: Iterable[Row]) -> list[BNShift]:
    """Per (order, scaling, p) with re-estimation metrics: shift, cost, fix.

    Rows without ``bn_recal_accuracy`` are skipped; an empty list means the
    rows hold no BatchNorm study.
    """
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("bn_recal_accuracy") in (None, ""):
            continue
        key = (bn_order(r) or BEFORE, str(r["scaling"]), _f(r, "p"))
        groups[key].append(r)
    out = []
    for (order, scaling, p), sub in groups.items():
        shift = []
        j = 1
        while all(
            sub[0].get(f"bn{j}_shift_{k}") not in (None, "")
            for k in ("measured", "exact")
        ):
            shift.append(
                (
                    interval(_f(r, f"bn{j}_shift_measured") for r in sub),
                    interval(_f(r, f"bn{j}_shift_exact") for r in sub),
                )
            )
            j += 1
        out.append(
            BNShift(
                order=order,
                scaling=scaling,
                p=p,
                shift=tuple(shift),
                accuracy=interval(_f(r, "accuracy") for r in sub),
                recal_accuracy=interval(_f(r, "bn_recal_accuracy") for r in sub),
                fix=interval(
                    _f(r, "bn_recal_accuracy") - _f(r, "accuracy") for r in sub
                ),
                nll=interval(_f(r, "nll") for r in sub),
                recal_nll=interval(_f(r, "bn_recal_nll") for r in sub),
                nll_fix=interval(_f(r, "bn_recal_nll") - _f(r, "nll") for r in sub),
            )
        )
    # orders before, after, others; conventions in the order the rows list them
    orders = [BEFORE, AFTER]
    scalings = list(dict.fromkeys(k[1] for k in groups))
    out.sort(
        key=lambda s: (
            orders.index(s.order) if s.order in orders else 2,
            s.order,
            scalings.index(s.scaling),
            s.p,
        )
    )
    return out


@dataclass(frozen=True)
class OrderComparison:
    """Dropout after minus before BatchNorm at one (scaling, p), paired by
    seed: ``diff`` with BatchNorm's trained statistics, ``recal_diff`` after
    both were re-estimated with dropout off. ``net_fix`` is the re-estimation
    gain with dropout before BatchNorm minus the gain in the control: the
    control has no variance shift, so its gain is what re-estimation brings
    anyway (running averages that lag behind the weights), and the
    difference is the part of the gain owed to the shift."""

    scaling: str
    p: float
    diff: Interval
    recal_diff: Interval
    net_fix: Interval

    def sentence(self) -> str:
        d, r, g = self.diff, self.recal_diff, self.net_fix
        outside = d.low > 0 or d.high < 0
        tag = (
            "beyond the interval"
            if d.n >= 3 and outside
            else f"0 lies outside the interval but {d.n} seeds are too few"
            if outside
            else "the interval includes 0"
        )
        return (
            f"{self.scaling}, p = {self.p:g}: dropout after BatchNorm minus before "
            f"changes test accuracy by {d.mean * 100:+.2f} points "
            f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}] ({tag}); after "
            f"re-estimating both, by {r.mean * 100:+.2f} points "
            f"[{r.low * 100:+.2f}, {r.high * 100:+.2f}]. The re-estimation gain "
            f"owed to the shift (gain before minus gain after) is "
            f"{g.mean * 100:+.2f} points [{g.low * 100:+.2f}, {g.high * 100:+.2f}]."
        )


def order_comparison(rows: Iterable[Row]) -> list[OrderComparison]:
    """After minus before, per (scaling, p) where rows of both orders share
    seeds; empty when the rows hold one order only."""
    by: dict[tuple[str, float], dict[str, dict[int, Row]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        order = bn_order(r)
        if order in (BEFORE, AFTER) and r.get("bn_recal_accuracy") not in (None, ""):
            by[(str(r["scaling"]), _f(r, "p"))][order][int(r["seed"])] = r  # type: ignore[arg-type]
    out = []
    for (scaling, p), orders in sorted(by.items()):
        seeds = sorted(set(orders[BEFORE]) & set(orders[AFTER]))
        if not seeds:
            continue
        before, after = orders[BEFORE], orders[AFTER]
        out.append(
            OrderComparison(
                scaling,
                p,
                interval(
                    _f(after[s], "accuracy") - _f(before[s], "accuracy") for s in seeds
                ),
                interval(
                    _f(after[s], "bn_recal_accuracy")
                    - _f(before[s], "bn_recal_accuracy")
                    for s in seeds
                ),
                interval(
                    (_f(before[s], "bn_recal_accuracy") - _f(before[s], "accuracy"))
                    - (_f(after[s], "bn_recal_accuracy") - _f(after[s], "accuracy"))
                    for s in seeds
                ),
            )
        )
    return out
