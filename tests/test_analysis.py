"""Verdict wording on tiny synthetic rows: ties, degenerate (zero-width)
intervals, accuracy intervals clipped to [0, 100] %, one seed, and the best
eval scale when several c share the best mean."""

from __future__ import annotations

import math

from scipy import stats

from dropscale.study.analysis import (
    SpreadVerdict,
    best_eval_scale,
    format_interval,
    interval,
    verdicts,
)


def rows(table: dict[str, list[float]], p: float = 0.0, nll: bool = False):
    """Result rows: one per (scaling, seed) with the given accuracies."""
    return [
        {"scaling": s, "p": p, "seed": i, "accuracy": v, "nll": 1.0 - v}
        for s, vals in table.items()
        for i, v in enumerate(vals)
    ]


def test_identical_rules_are_tied_not_won():
    # p = 0: inverted and variance train and infer identically
    same = [0.86, 0.88]
    (v,) = verdicts(rows({"inverted": same, "variance": list(same)}))
    assert v.tied and set(v.leaders) == {"inverted", "variance"}
    assert v.comparisons == () and not v.clear
    text = v.sentence()
    assert "**inverted** and **variance** are tied for the best" in text
    assert "has the best" not in text and " points over " not in text
    assert text.endswith("So no single convention wins.")
    # NLL: the same identity, lower is better
    (n,) = verdicts(rows({"a": same, "b": list(same)}), "nll", False)
    assert set(n.leaders) == {"a", "b"}


def test_ties_among_losers_are_compared_once_and_named_together():
    table = {
        "inverted": [0.90, 0.92, 0.91],
        "classic": [0.80, 0.83, 0.81],
        "none": [0.80, 0.83, 0.81],
    }
    (v,) = verdicts(rows(table))
    assert v.winner == "inverted" and not v.tied
    (c,) = v.comparisons
    assert (c.other, c.also) == ("classic", ("none",))
    assert "over classic (and none, identical at every seed)" in v.sentence()
    # the gap is the ordinary t-interval of the paired differences
    d = [0.10, 0.09, 0.10]
    m = sum(d) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    half = stats.t.ppf(0.975, 2) * s / math.sqrt(3)
    assert math.isclose(c.diff.low, m - half) and math.isclose(c.diff.high, m + half)


def test_equal_means_that_differ_by_seed_are_said_to_be_equal():
    (v,) = verdicts(rows({"a": [0.9, 0.8, 0.85], "b": [0.8, 0.9, 0.85]}))
    assert not v.tied
    assert "the same mean as" in v.sentence()


def test_degenerate_interval_is_named_and_judged_by_a_sign_test():
    # the same +1 point at every seed; equal gaps whose float differences
    # disagree in the last bit still count as equal
    base = [0.91, 0.83, 0.77, 0.95, 0.62, 0.88]
    table3 = {"a": [x + 0.01 for x in base[:3]], "b": base[:3]}
    (v,) = verdicts(rows(table3))
    (c,) = v.comparisons
    assert c.diff.degenerate and c.diff.low == c.diff.high
    assert not c.separated  # 3 seeds: sign-test p = 0.25
    text = v.sentence()
    assert "degenerate" in text and "p = 0.25" in text
    assert "outside the interval" not in text and "could be chance" in text
    table6 = {"a": [x + 0.01 for x in base], "b": base}
    (v6,) = verdicts(rows(table6))
    assert v6.comparisons[0].separated  # 2 * 0.5^6 = 0.03125 < 0.05
    assert "p = 0.0312" in v6.sentence() and "beyond chance" in v6.sentence()


def test_accuracy_intervals_are_clipped_to_100_percent():
    acc = [0.98, 1.0, 0.47]
    iv = interval(acc)
    assert iv.high > 1.0 and iv.low > 0.0  # the raw t-interval passes 100 %
    assert format_interval(iv, 100, bounds=(0.0, 1.0)).endswith(", 100.00]")
    (v,) = verdicts(rows({"a": acc, "b": [0.1, 0.1, 0.1]}))
    assert f"{iv.mean * 100:.2f} [{iv.low * 100:.2f}, 100.00]" in v.sentence()
    # NLL is not an accuracy and is not clipped
    (n,) = verdicts(rows({"a": acc}), "nll", False)
    assert n.bounds is None


def test_one_seed_prints_no_infinite_interval():
    (v,) = verdicts(rows({"a": [0.9], "b": [0.88]}))
    text = v.sentence()
    assert "inf" not in text
    assert "90.00 (1 seed, no interval)" in text
    assert "+2.00 points over b (1 seed, no interval), one seed" in text
    one = interval([0.02])
    sv = SpreadVerdict("inverted", 0.5, one, interval([-0.1]), (1.1,))
    assert "inf" not in sv.sentence() and sv.answer == "undecided"


def test_spread_verdict_degenerate_accuracy_falls_back_to_nll():
    acc = interval([0.01, 0.01, 0.01])
    nll = interval([-0.02, -0.03, -0.025])
    sv = SpreadVerdict("inverted", 0.5, acc, nll, (1.2,))
    assert sv.answer == "spread"  # NLL lower under std-matching
    text = sv.sentence()
    assert "degenerate" in text and "accuracy cannot tell them apart" in text


def test_best_eval_scale_prefers_c_1_on_a_tie():
    def curve(means):
        return [(c, interval([m, m]), interval([0.0, 0.0])) for c, m in means]

    c, acc, label = best_eval_scale(
        curve([(0.5, 0.8), (0.625, 0.9), (0.75, 0.9), (1.0, 0.9), (2.0, 0.7)])
    )
    assert c == 1.0 and label == "1 (tied with 0.625, 0.75)"
    assert acc.mean == 0.9
    c, _, label = best_eval_scale(curve([(0.5, 0.8), (0.875, 0.9), (1.25, 0.9)]))
    assert c == 0.875 and label == "0.875 (tied with 1.25)"
    c, _, label = best_eval_scale(curve([(0.5, 0.95), (1.0, 0.9)]))
    assert (c, label) == (0.5, "0.5")
