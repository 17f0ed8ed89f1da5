"""Figures: curves that coincide (rules that train the same model) stay
visible, with distinct styles and a note naming them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dropscale.report.figures import (  # noqa: E402
    coincident_groups,
    eval_scale_figure,
    mc_figure,
    plot_mc,
    rule_style,
)

SCALES = (0.5, 1.0, 2.0)
TS = (1, 2, 5)


def _rows(p: float, values: dict[str, tuple[float, float]]):
    """Two seeds per rule; ``values[s] = (mc level, eval-scale level)``."""
    out = []
    for s, (mc, ev) in values.items():
        for seed in (0, 1):
            r = {
                "scaling": s,
                "p": p,
                "seed": seed,
                "accuracy": ev,
                "nll": 1 - ev,
                "scale_std_accuracy": ev,
                "scale_std_nll": 1 - ev,
                "site0_std_c": 1.0,
            }
            for t in TS:
                r[f"mc_{t}_accuracy"] = mc - 0.01 / t + 0.001 * seed
            for c in SCALES:
                r[f"scale_{c:g}_accuracy"] = ev - 0.02 * abs(c - 1) + 0.001 * seed
                r[f"scale_{c:g}_nll"] = 1 - ev + 0.02 * abs(c - 1)
            out.append(r)
    return out


def _texts(fig) -> str:
    return " | ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_rule_styles_are_distinct():
    styles = [rule_style(i) for i in range(10)]
    assert len({(s["marker"], s["linestyle"]) for s in styles}) == 10
    assert len({s["marker"] for s in styles}) == 10
    # earlier rules are drawn larger and underneath
    assert styles[0]["markersize"] > styles[1]["markersize"]
    assert styles[0]["zorder"] < styles[1]["zorder"]


def test_coincident_groups():
    curves = {"a": [1.0, 2.0], "b": [1.0, 2.5], "c": [1.0, 2.0], "d": [1.0, 2.5]}
    assert coincident_groups(curves) == [["a", "c"], ["b", "d"]]
    assert coincident_groups({"a": [1.0], "b": [1.1]}) == []


def test_mc_figure_names_coinciding_rules_and_keeps_both_visible():
    # classic and none share a = 1: the same trained model, the same MC curve
    rows = _rows(
        0.3,
        {"inverted": (0.9, 0.9), "classic": (0.8, 0.85), "none": (0.8, 0.7)},
    )
    fig = mc_figure(plt, rows, TS)
    try:
        assert "same curve: classic = none" in _texts(fig)
        lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
        c, n = lines["classic"], lines["none"]
        assert list(c.get_ydata()) == list(n.get_ydata())
        assert (c.get_marker(), c.get_linestyle()) != (
            n.get_marker(),
            n.get_linestyle(),
        )
        assert c.get_markersize() > n.get_markersize()
        assert "inverted" not in _texts(fig)
    finally:
        plt.close(fig)


def test_eval_scale_figure_names_rules_identical_at_p0(tmp_path):
    rows = _rows(0.0, {s: (0.9, 0.9) for s in ("inverted", "variance")})
    rows += _rows(0.5, {"inverted": (0.9, 0.9), "variance": (0.8, 0.8)})
    fig = eval_scale_figure(plt, rows, SCALES)
    try:
        texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
        # p = 0 is the first column: accuracy (axes 0) and NLL (axes 2)
        assert texts[0] == ["same curve: inverted = variance"]
        assert texts[2] == ["same curve: inverted = variance"]
        assert texts[1] == [] and texts[3] == []
    finally:
        plt.close(fig)
    assert plot_mc(rows, TS, tmp_path / "mc.png").stat().st_size > 0


def test_accuracy_error_bars_stop_at_100_percent():
    from dropscale.report.figures import _err
    from dropscale.study.analysis import interval

    iv = interval([0.98, 1.0, 0.47])
    assert iv.high > 1.0
    below, above = _err(iv, 100.0, (0.0, 1.0))
    assert above == (1.0 - iv.mean) * 100 and below == (iv.mean - iv.low) * 100
    assert _err(interval([0.5]), 100.0, (0.0, 1.0)) == (0.0, 0.0)
