"""Run a study: train every trial, then write results.csv, figures and report.md.

Files are written to a temporary name in the output folder and renamed into
place, so an interrupted run never leaves a half-written result file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dropscale.data import load_digits_split
from dropscale.study.analysis import PVerdict, verdicts
from dropscale.study.config import StudyConfig
from dropscale.study.trial import TrialResult, run_trial

__all__ = ["StudyOutcome", "result_row", "run_study", "write_outputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    out_dir: Path
    results_csv: Path
    report_md: Path
    seconds: float
    n_trials: int
    verdicts: list[PVerdict]


def result_row(res: TrialResult) -> dict[str, object]:
    """One CSV row: the trial's configuration, its metrics and per-site stats."""
    row: dict[str, object] = {
        "scaling": res.trial.scaling,
        "p": res.trial.p,
        "seed": res.trial.seed,
        "accuracy": res.accuracy,
        "nll": res.nll,
        "train_loss": res.train_loss,
        "seconds": round(res.seconds, 4),
    }
    for s in res.sites:
        for k, v in asdict(s).items():
            if k != "site":
                row[f"site{s.site}_{k}"] = v
    return row


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and check it is writable; raise ``OSError`` saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".dropscale-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(
            f"cannot write to output folder {str(out)!r}: {e.strerror}"
        ) from e
    return out


def write_outputs(
    out: Path, rows: list[dict[str, object]], config: dict, seconds: float
) -> Path:
    """Write results.csv, the figures and report.md from result rows."""
    from dropscale.report import plot_metric_vs_p, render_markdown

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out / "results.csv", buf.getvalue().encode())
    figures = {}
    for metric, label, scale in (
        ("accuracy", "test accuracy (%)", 100.0),
        ("nll", "test NLL", 1.0),
    ):
        name = f"{metric}_vs_p.png"
        tmp = out / f".{name}.tmp"
        plot_metric_vs_p(rows, metric, tmp, ylabel=label, scale=scale)
        os.replace(tmp, out / name)
        figures[f"{metric} vs p"] = name
    text = render_markdown(rows, config, seconds=seconds, figures=figures)
    _atomic_write(out / "report.md", text.encode())
    meta = {"config": config, "seconds": seconds, "n_trials": len(rows)}
    _atomic_write(out / "study.json", json.dumps(meta, indent=2).encode())
    return out / "report.md"


def run_study(
    config: StudyConfig,
    out: Path,
    *,
    on_trial: Callable[[TrialResult, int, int], None] | None = None,
) -> StudyOutcome:
    """Train every trial of ``config`` and write the study's files to ``out``.

    Args:
        config: the study definition.
        out: output folder, created if missing.
        on_trial: called after each trial with ``(result, done, total)``.
    """
    out = prepare_out_dir(Path(out))
    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    try:
        data = load_digits_split(config.test_fraction, config.split_seed)
        trials = config.trials()
        rows = []
        for i, trial in enumerate(trials):
            res = run_trial(config, data, trial)
            log.info("%s: accuracy %.4f", trial.key, res.accuracy)
            rows.append(result_row(res))
            if on_trial is not None:
                on_trial(res, i + 1, len(trials))
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    report = write_outputs(out, rows, config.as_dict(), seconds)
    return StudyOutcome(
        out_dir=out,
        results_csv=out / "results.csv",
        report_md=report,
        seconds=seconds,
        n_trials=len(rows),
        verdicts=verdicts(rows),
    )
