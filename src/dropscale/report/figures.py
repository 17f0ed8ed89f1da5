"""Figures of a study, written as PNG files (matplotlib, no display needed).

Rules that train the same model (the same training factor a at a seed, e.g.
classic and none, or every rule at p = 0) give the same Monte-Carlo curve,
and at p = 0 the same eval-scale curve too. So that no curve hides another,
every rule has its own marker and line style (earlier rules drawn larger,
underneath), and a panel in which curves coincide names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dropscale.study.analysis import mc_curve, summarise, sweep_curve

__all__ = [
    "coincident_groups",
    "eval_scale_figure",
    "mc_figure",
    "plot_eval_scale",
    "plot_mc",
    "plot_metric_vs_p",
    "rule_style",
]

Row = Mapping[str, object]

_MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">", "h", "*")
_LINESTYLES = ("-", "--", ":", "-.")


def rule_style(i: int) -> dict[str, object]:
    """Marker, line style, size and drawing order of the ``i``-th rule: all
    distinct for the first ten rules; earlier rules are larger and drawn
    underneath, so a later curve on top of an earlier one leaves its outline
    visible."""
    return {
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
        "markersize": max(3.0, 9.0 - 1.5 * i),
        "linewidth": max(1.0, 2.6 - 0.4 * i),
        "zorder": 2 + i,
    }


def coincident_groups(
    curves: Mapping[str, Sequence[float]], rel_tol: float = 1e-9
) -> list[list[str]]:
    """Groups (of two or more rules, in the given order) whose curves are
    the same point for point, up to ``rel_tol``."""
    groups: list[list[str]] = []
    for name, ys in curves.items():
        for g in groups:
            ref = curves[g[0]]
            if len(ref) == len(ys) and all(
                abs(a - b) <= rel_tol * max(1.0, abs(a), abs(b))
                for a, b in zip(ref, ys, strict=True)
            ):
                g.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def _note_coincident(ax, curves: Mapping[str, Sequence[float]]) -> list[list[str]]:
    """Write in ``ax`` which curves coincide; return the groups."""
    groups = coincident_groups(curves)
    if groups:
        ax.text(
            0.02,
            0.02,
            "same curve: " + "; ".join(" = ".join(g) for g in groups),
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            ha="left",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
        )
    return groups


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(iv, scale: float, bounds: tuple[float, float] | None = None):
    """Error-bar lengths below and above the mean; ``bounds`` clips the
    interval (``(0, 1)`` for an accuracy); none with one seed."""
    if iv.n < 2:
        return 0.0, 0.0
    low, high = iv.low, iv.high
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return (iv.mean - low) * scale, (high - iv.mean) * scale


def _scalings(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(str(r["scaling"]) for r in rows))


def _ps(rows: Sequence[Row]) -> list[float]:
    return sorted({float(r["p"]) for r in rows})  # type: ignore[arg-type]


def plot_metric_vs_p(
    rows: Iterable[Row],
    metric: str,
    path: Path,
    *,
    ylabel: str,
    scale: float = 1.0,
) -> Path:
    """Mean of ``metric`` against p, one line per convention, 95 % intervals
    over seeds as error bars (clipped to [0, 100] % for an accuracy); written
    to ``path`` (PNG)."""
    plt = _plt()
    rows = list(rows)
    summary = summarise(rows, metric)
    scalings = _scalings(rows)
    ps = _ps(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    width = (max(ps) - min(ps) or 1.0) * 0.012
    for i, s in enumerate(scalings):
        xs, ys, lo, hi = [], [], [], []
        for p in ps:
            if (s, p) not in summary:
                continue
            iv = summary[(s, p)]
            xs.append(p + (i - (len(scalings) - 1) / 2) * width)
            ys.append(iv.mean * scale)
            e = _err(iv, scale, (0.0, 1.0) if metric.endswith("accuracy") else None)
            lo.append(e[0])
            hi.append(e[1])
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=s, **rule_style(i))
    ax.set_xlabel("drop probability p")
    ax.set_ylabel(ylabel)
    ax.set_xticks(ps)
    ax.grid(alpha=0.3)
    ax.legend(title="scaling")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _panels(plt, n: int, title: str):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=90, squeeze=False
    )
    fig.suptitle(title)
    flat = [a for row in axes for a in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def plot_eval_scale(rows: Iterable[Row], scales: Sequence[float], path: Path) -> Path:
    """Test accuracy (top) and NLL (bottom) against the eval-scale factor c,
    one column per p, one line per training convention; c = 1 is the
    vertical line and each convention's std-matching factors (mean over sites
    and seeds) the cross. Coinciding curves are named in their panel."""
    plt = _plt()
    fig = eval_scale_figure(plt, rows, scales)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def eval_scale_figure(plt, rows: Iterable[Row], scales: Sequence[float]):
    """The figure of :func:`plot_eval_scale`, not yet saved."""
    rows = list(rows)
    ps = _ps(rows)
    fig, axes = plt.subplots(
        2, len(ps), figsize=(3.6 * len(ps) + 0.6, 6.4), dpi=90, squeeze=False
    )
    fig.suptitle("inference scale c: accuracy and NLL (X: std-matching c)")
    for col, p in enumerate(ps):
        plotted: list[dict[str, list[float]]] = [{}, {}]
        for i, s in enumerate(_scalings(rows)):
            curve = sweep_curve(rows, s, p, scales)
            if not curve:
                continue
            sub = [r for r in rows if r["scaling"] == s and float(r["p"]) == p]  # type: ignore[arg-type]
            cs = [
                float(v)  # type: ignore[arg-type]
                for r in sub
                for k, v in r.items()
                if k.startswith("site") and k.endswith("_std_c")
            ]
            xs = [c for c, _, _ in curve]
            for row, (idx, key, scale) in enumerate(
                ((1, "scale_std_accuracy", 100.0), (2, "scale_std_nll", 1.0))
            ):
                ax = axes[row][col]
                ys = [t[idx].mean * scale for t in curve]
                plotted[row][s] = ys
                (line,) = ax.plot(xs, ys, label=s, **rule_style(i))
                if cs:
                    y = sum(float(r[key]) for r in sub) / len(sub)  # type: ignore[arg-type]
                    ax.plot(
                        [sum(cs) / len(cs)],
                        [y * scale],
                        marker="X",
                        markersize=9,
                        color=line.get_color(),
                        linestyle="none",
                        zorder=20,
                    )
        for row, label in enumerate(("test accuracy (%)", "test NLL")):
            ax = axes[row][col]
            _note_coincident(ax, plotted[row])
            ax.axvline(1.0, color="0.4", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
        axes[0][col].set_title(f"p = {p:g}")
        axes[1][col].set_xlabel("c")
    axes[0][0].legend(title="trained with", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mc(rows: Iterable[Row], samples: Sequence[int], path: Path) -> Path:
    """Monte-Carlo dropout accuracy against the number of passes T, one panel
    per p; the thin dashed line is the convention's own deterministic rule.
    Rules that train the same model have the same MC curve; the panel names
    them."""
    plt = _plt()
    fig = mc_figure(plt, rows, samples)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def mc_figure(plt, rows: Iterable[Row], samples: Sequence[int]):
    """The figure of :func:`plot_mc`, not yet saved."""
    rows = list(rows)
    ps = _ps(rows)
    fig, axes = _panels(plt, len(ps), "MC dropout accuracy vs passes T")
    summary = summarise(rows, "accuracy")
    for ax, p in zip(axes, ps, strict=False):
        plotted: dict[str, list[float]] = {}
        for i, s in enumerate(_scalings(rows)):
            curve = mc_curve(rows, s, p, samples)
            if not curve:
                continue
            xs = [t for t, _, _ in curve]
            ys = [a.mean * 100 for _, a, _ in curve]
            plotted[s] = ys
            (line,) = ax.plot(xs, ys, label=s, **rule_style(i))
            ax.axhline(
                summary[(s, p)].mean * 100,
                color=line.get_color(),
                linestyle=(0, (4, 2 + i)),
                linewidth=1,
            )
        _note_coincident(ax, plotted)
        ax.set_xscale("log")
        ax.set_title(f"p = {p:g}")
        ax.set_xlabel("T (dashed: deterministic rule)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="scaling", fontsize=8)
    fig.tight_layout()
    return fig
