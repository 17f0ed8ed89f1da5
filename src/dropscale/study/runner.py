"""Run a study: pending trial groups through an executor, into the ledger, then
every output file rebuilt from the ledger.

Nothing is written in place: each output goes to a temporary name in the
output folder and is renamed over the old one (``os.replace`` is atomic), and
each finished group is one ledger transaction. A run killed at any moment
loses at most the groups in flight; running again with the same ``--out``
resumes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dropscale.study.analysis import PVerdict, SpreadVerdict, mean_or_spread, verdicts
from dropscale.study.config import StudyConfig
from dropscale.study.executors import RAY_HINT, run_groups
from dropscale.study.ledger import Ledger
from dropscale.study.rows import csv_text, ledger_rows
from dropscale.study.trial import TrialResult

__all__ = [
    "StudyOutcome",
    "atomic_write",
    "check_executor",
    "prepare_out_dir",
    "run_study",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    """What a finished run produced."""

    out_dir: Path
    results_csv: Path
    report_md: Path
    report_html: Path
    seconds: float
    n_trials: int
    n_run: int
    verdicts: list[PVerdict]
    spread: list[SpreadVerdict]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and check it is writable; raise ``OSError`` saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        probe = out / f".dropscale-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(
            f"--out: cannot write to output folder {str(out)!r}: {e.strerror or e}"
        ) from e
    return out


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.NAME.PID.tmp`` files left by a killed run (PID not alive)."""
    for tmp in out.glob(".*.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            continue


def check_executor(config: StudyConfig) -> None:
    """Fail early, in one line, when the chosen executor cannot run here."""
    if config.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError(
                f"--executor ray needs Ray, which is not installed: {RAY_HINT}"
            ) from None


def run_study(
    config: StudyConfig,
    out: Path,
    *,
    force_new: bool = False,
    on_group: Callable[[list[TrialResult], int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    ray_num_cpus: int | None = None,
) -> StudyOutcome:
    """Run the trials of ``config`` that ``out``'s ledger does not hold yet,
    then rebuild results.csv, the figures and both reports.

    Args:
        config: the study.
        out: output folder (created if missing); its ledger is resumed.
        force_new: start over when ``out`` holds a different study.
        on_group: called after each recorded group with
            ``(results, done, total)`` counted in trials.
        on_start: called once the ledger is open with ``(done, total)``,
            ``done`` counting the trials it already holds.
        ray_num_cpus: CPUs of a local Ray instance (``executor = "ray"``).

    Raises:
        ValueError: a different study in ``out`` without ``force_new``; Ray
            requested but not installed.
        OSError: ``out`` cannot be written.
    """
    from dropscale.report import build_report

    check_executor(config)
    out = prepare_out_dir(Path(out))
    start = time.perf_counter()
    with Ledger(out, config, force_new=force_new) as ledger:
        trials = config.trials()
        pending = ledger.pending(trials)
        done = len(trials) - len(pending)
        groups = config.groups(pending)
        if on_start is not None:
            on_start(done, len(trials))
        log.info(
            "%d of %d trials to run in %d groups",
            len(pending),
            len(trials),
            len(groups),
        )
        kwargs = {"num_cpus": ray_num_cpus} if config.executor == "ray" else {}
        for results, seconds in run_groups(config, groups, **kwargs):
            ledger.record_group(
                results,
                seconds=seconds,
                executor=config.executor,
                run={
                    k: getattr(config, k)
                    for k in ("executor", "group_size", "threads", "device")
                },
            )
            done += len(results)
            # results.csv follows the ledger after every group (cheap; the
            # figures and reports are rebuilt once at the end)
            rows = ledger_rows(ledger.results(), config.definition())
            atomic_write(out / "results.csv", csv_text(rows).encode())
            if on_group is not None:
                on_group(results, done, len(trials))
        seconds = time.perf_counter() - start
        previous = float(ledger.meta("wall_seconds") or 0.0)
        ledger.set_meta({"wall_seconds": repr(previous + seconds)})
    paths = build_report(out)
    rows = paths.rows
    return StudyOutcome(
        out_dir=out,
        results_csv=paths.results_csv,
        report_md=paths.report_md,
        report_html=paths.report_html,
        seconds=seconds,
        n_trials=len(rows),
        n_run=len(pending),
        verdicts=verdicts(rows),
        spread=mean_or_spread(rows),
    )
