"""The BatchNorm section of a study: shift, cost, fix and order, from rows.

Expected values are computed here from the rows with numpy and scipy's t
quantile, not with the analysis code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from dropscale.report.content import bn_shift_blocks, study_blocks
from dropscale.report.markdown import to_markdown
from dropscale.study import StudyConfig, run_study
from dropscale.study.bnshift import bn_shift_summary, order_comparison
from dropscale.study.rows import read_csv


def _t_interval(values) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def _row(order, scaling, p, seed, acc, recal, shift=None):
    r = {
        "model_options": json.dumps({"hidden": [8], "order": order}),
        "scaling": scaling,
        "p": p,
        "seed": seed,
        "accuracy": acc,
        "nll": 1.0 - acc,
        "bn_recal_accuracy": recal,
        "bn_recal_nll": 1.0 - recal,
    }
    if shift is not None:
        r["bn1_shift_measured"], r["bn1_shift_exact"] = shift
    return r


@pytest.fixture
def rows():
    before = [
        _row("dropout-bn", "inverted", 0.5, s, acc, recal, shift)
        for s, acc, recal, shift in (
            (0, 0.80, 0.86, (0.49, 0.50)),
            (1, 0.78, 0.85, (0.52, 0.51)),
            (2, 0.81, 0.84, (0.50, 0.49)),
        )
    ]
    after = [
        _row("bn-dropout", "inverted", 0.5, s, acc, recal)
        for s, acc, recal in ((0, 0.87, 0.87), (1, 0.86, 0.865), (2, 0.88, 0.875))
    ]
    return before, after


def test_summary_follows_from_the_rows(rows):
    before, after = rows
    (b,) = bn_shift_summary(before)
    assert (b.order, b.scaling, b.p, b.n) == ("dropout-bn", "inverted", 0.5, 3)
    m, e = b.shift[0]
    assert (m.mean, m.low, m.high) == pytest.approx(_t_interval([0.49, 0.52, 0.50]))
    assert e.mean == pytest.approx(0.50)
    # the cost of the shift: re-estimated minus trained accuracy, paired
    fix = _t_interval([0.06, 0.07, 0.03])
    assert (b.fix.mean, b.fix.low, b.fix.high) == pytest.approx(fix)
    assert b.fix_separated == (fix[1] > 0)
    assert b.recal_accuracy.mean == pytest.approx(0.85)
    # one order only: nothing to compare
    assert order_comparison(before) == []
    (c,) = order_comparison(before + after)
    assert (c.diff.mean, c.diff.low, c.diff.high) == pytest.approx(
        _t_interval([0.07, 0.08, 0.07])
    )
    assert c.recal_diff.mean == pytest.approx(np.mean([0.01, 0.015, 0.035]))
    # gain before (0.06, 0.07, 0.03) minus gain after (0, 0.005, -0.005)
    net = _t_interval([0.06, 0.065, 0.035])
    assert (c.net_fix.mean, c.net_fix.low, c.net_fix.high) == pytest.approx(net)


def test_section_renders_the_numbers(rows):
    before, after = rows
    text = to_markdown(bn_shift_blocks(before))
    assert "## BatchNorm and dropout: variance shift and its fix" in text
    m = _t_interval([0.49, 0.52, 0.50])
    assert f"{m[0]:.4f} [{m[1]:.4f}, {m[2]:.4f}]" in text
    fix = _t_interval([6.0, 7.0, 3.0])  # points
    assert f"{fix[0]:+.2f} [{fix[1]:+.2f}, {fix[2]:+.2f}]" in text
    acc = np.mean([0.80, 0.78, 0.81]) * 100
    assert f"{acc:.2f} [" in text and "85.00 [" in text  # before and after the fix
    assert "bn-shift-after preset" in text  # the control is pointed to
    both = to_markdown(bn_shift_blocks(before + after))
    d = _t_interval([7.0, 8.0, 7.0])
    assert "dropout after BatchNorm minus before" in both
    assert f"{d[0]:+.2f} points [{d[1]:+.2f}, {d[2]:+.2f}]" in both
    g = _t_interval([6.0, 6.5, 3.5])
    assert f"owed to the shift (gain before minus gain after) is {g[0]:+.2f}" in both
    # rows of another study carry no section
    plain = [{k: v for k, v in r.items() if not k.startswith("bn")} for r in before]
    assert bn_shift_blocks(plain) == []


def test_tiny_bn_shift_study_report_holds_the_section(tmp_path):
    config = StudyConfig(
        dataset="digits",
        model="mlp-bn",
        model_options={"hidden": [16], "order": "dropout-bn"},
        scalings=("inverted", "none"),
        ps=(0.5,),
        seeds=2,
        epochs=2,
        batch_size=64,
        eval_scales=(1.0, 2.0),
        mc_samples=(1, 2),
        calibration_examples=64,
    )
    out = run_study(config, tmp_path / "bn")
    text = out.report_md.read_text()
    html = out.report_html.read_text()
    assert "BatchNorm and dropout: variance shift and its fix" in html
    csv_rows = read_csv(out.results_csv)
    for scaling in ("inverted", "none"):
        sub = [r for r in csv_rows if r["scaling"] == scaling]
        measured = np.mean([float(r["bn1_shift_measured"]) for r in sub])
        exact = np.mean([float(r["bn1_shift_exact"]) for r in sub])
        fix = np.mean(
            [float(r["bn_recal_accuracy"]) - float(r["accuracy"]) for r in sub]
        )
        line = next(
            ln for ln in text.splitlines() if ln.startswith(f"| dropout-bn | {scaling}")
        )
        assert f"{measured:.4f} [" in line and f"{exact:.4f} [" in line
        fix_line = [
            ln
            for ln in text.splitlines()
            if ln.startswith(f"| dropout-bn | {scaling}") and "points" not in ln
        ][1]
        assert f"{fix * 100:+.2f} [" in fix_line
    # the section is rebuilt from the ledger alone, identically
    (tmp_path / "bn" / "report.md").unlink()
    from dropscale.report import build_report

    build_report(tmp_path / "bn")
    assert (tmp_path / "bn" / "report.md").read_text() == text
    # study_blocks places the section once
    d = json.loads((tmp_path / "bn" / "study.json").read_text())["definition"]
    blocks = study_blocks(csv_rows, d, wall_seconds=1.0, group_seconds=1.0, figures={})
    heads = [b[1] for b in blocks if b[0] == "h2"]
    assert heads.count("BatchNorm and dropout: variance shift and its fix") == 1
