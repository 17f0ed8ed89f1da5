"""Rebuild every output of a study folder from its ledger alone.

results.csv, the PNG figures, report.md and report.html are derived data:
this module reads ``ledger.sqlite`` and writes each of them through a
temporary file and an atomic rename, so a reader (or a kill) never sees a
half-written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropscale.report.content import study_blocks
from dropscale.report.figures import plot_eval_scale, plot_mc, plot_metric_vs_p
from dropscale.report.html import to_html
from dropscale.report.markdown import to_markdown
from dropscale.study.ledger import LEDGER_NAME, Ledger, study_lock
from dropscale.study.rows import csv_text, ledger_rows

__all__ = ["ReportPaths", "build_report"]


@dataclass(frozen=True)
class ReportPaths:
    """Where the outputs went, and the rows they were built from."""

    folder: Path
    results_csv: Path
    report_md: Path
    report_html: Path
    figures: dict[str, Path]
    rows: list[dict[str, Any]]


def _write(path: Path, data: bytes) -> None:
    from dropscale._io import atomic_write

    atomic_write(path, data)


def _figure(path: Path, draw) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        draw(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def build_report(folder: str | Path) -> ReportPaths:
    """Write results.csv, figures, report.md and report.html from the ledger,
    holding the folder's lock (refused while a study runs there).

    Raises:
        ValueError: no ledger in ``folder``, or no finished trial in it.
        StudyBusyError: a study is running in ``folder``.
    """
    folder = Path(folder)
    if not (folder / LEDGER_NAME).exists():
        return _build(folder)  # raises: no ledger there
    with study_lock(folder):
        return _build(folder)


def _build(folder: Path) -> ReportPaths:
    """:func:`build_report` once the folder is locked."""
    with Ledger(folder) as ledger:
        d = ledger.definition()
        if d is None:
            raise ValueError(f"{str(folder)!r}: the ledger holds no study definition")
        rows = ledger_rows(ledger.results(), d)
        wall = float(ledger.meta("wall_seconds") or 0.0)
        timings = ledger.timings()
        version = ledger.meta("code_version") or ""
    if not rows:
        raise ValueError(f"{str(folder)!r}: no finished trials to report yet")
    _write(folder / "results.csv", csv_text(rows).encode())
    figs = {
        "accuracy": _figure(
            folder / "accuracy_vs_p.png",
            lambda t: plot_metric_vs_p(
                rows, "accuracy", t, ylabel="test accuracy (%)", scale=100.0
            ),
        ),
        "nll": _figure(
            folder / "nll_vs_p.png",
            lambda t: plot_metric_vs_p(rows, "nll", t, ylabel="test NLL"),
        ),
        "eval_scale": _figure(
            folder / "eval_scale.png",
            lambda t: plot_eval_scale(rows, d["eval_scales"], t),
        ),
        "mc": _figure(
            folder / "mc_dropout.png", lambda t: plot_mc(rows, d["mc_samples"], t)
        ),
    }
    blocks = study_blocks(
        rows,
        d,
        wall_seconds=wall or timings["group_seconds"],
        group_seconds=timings["group_seconds"],
        figures={k: v.name for k, v in figs.items()},
        code_version=version,
    )
    _write(folder / "report.md", to_markdown(blocks).encode())
    _write(folder / "report.html", to_html(blocks, folder).encode())
    _write(
        folder / "study.json",
        json.dumps({"definition": d, "n_trials": len(rows)}, indent=2).encode(),
    )
    return ReportPaths(
        folder=folder,
        results_csv=folder / "results.csv",
        report_md=folder / "report.md",
        report_html=folder / "report.html",
        figures=figs,
        rows=rows,
    )
