"""Figures of a study, written as PNG files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from dropscale.study.analysis import summarise

__all__ = ["plot_metric_vs_p"]


def plot_metric_vs_p(
    rows: Iterable[Mapping[str, object]],
    metric: str,
    path: Path,
    *,
    ylabel: str,
    scale: float = 1.0,
) -> Path:
    """Plot the mean of ``metric`` against p, one line per convention, with
    95 % intervals over seeds as error bars; write it to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows, metric)
    scalings = sorted({s for s, _ in summary})
    ps = sorted({p for _, p in summary})
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    width = (max(ps) - min(ps) or 1.0) * 0.012
    for i, s in enumerate(scalings):
        xs, ys, lo, hi = [], [], [], []
        for p in ps:
            if (s, p) not in summary:
                continue
            iv = summary[(s, p)]
            shift = (i - (len(scalings) - 1) / 2) * width
            xs.append(p + shift)
            ys.append(iv.mean * scale)
            finite = iv.n > 1
            lo.append((iv.mean - iv.low) * scale if finite else 0.0)
            hi.append((iv.high - iv.mean) * scale if finite else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=s)
    ax.set_xlabel("drop probability p")
    ax.set_ylabel(ylabel)
    ax.set_xticks(ps)
    ax.grid(alpha=0.3)
    ax.legend(title="scaling")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
