"""Run a study: pending trial groups through an executor, into the ledger, then
every output file rebuilt from the ledger.

Nothing is written in place: each output goes to a temporary name in the
output folder and is renamed over the old one (``os.replace`` is atomic), and
each finished group is one ledger transaction. A run killed at any moment
loses at most the groups in flight; running again with the same ``--out``
resumes.

Before anything is created in ``--out``, the whole study is checked: the
executor and device are available, the data set loads with its options, and
``--out`` is a folder dropscale may write in: a new or empty one, a study
folder (it holds ``ledger.sqlite``), or one holding only study files
(``*.toml``) and dropscale's own outputs. Any other non-empty folder (a home
folder, a source tree) is refused unless ``force_new`` is given, so a
mistyped ``--out`` never sprinkles files among a user's own. While it runs,
a study holds the folder's lock (:func:`~dropscale.study.ledger.study_lock`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dropscale._io import atomic_write
from dropscale.study.analysis import PVerdict, SpreadVerdict, mean_or_spread, verdicts
from dropscale.study.config import StudyConfig
from dropscale.study.executors import RAY_HINT, run_groups
from dropscale.study.ledger import (
    LEDGER_NAME,
    LOCK_NAME,
    OUTPUT_NAMES,
    Ledger,
    study_lock,
)
from dropscale.study.rows import csv_text, ledger_rows
from dropscale.study.trial import TrialResult, load_data

__all__ = [
    "StudyOutcome",
    "check_device",
    "check_executor",
    "check_out_dir",
    "prepare_out_dir",
    "run_study",
    "validate_study",
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


def _foreign(folder: Path) -> list[str]:
    """Names in ``folder`` that are neither a study's files nor study TOMLs
    (empty when ``folder`` holds a ledger: it is a study folder)."""
    if (folder / LEDGER_NAME).exists():
        return []
    ours = {LOCK_NAME, *OUTPUT_NAMES}
    out = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if (
            name in ours
            or name.startswith(LEDGER_NAME)
            or name.endswith((".png", ".toml", ".tmp"))
            or name.startswith(("previous-", "ledger-", ".dropscale-write-test-"))
        ):
            continue
        out.append(name)
    return out


def check_out_dir(out: str | os.PathLike[str], *, force_new: bool = False) -> Path:
    """Check ``--out`` without creating anything (see the module docstring).

    Raises:
        ValueError: empty name; an existing non-empty folder that is not a
            study folder (the message lists a few of its entries) and
            ``force_new`` is false.
        OSError: ``out`` is a file.
    """
    text = os.fspath(out)
    if not text.strip():
        raise ValueError(
            "--out: got an empty folder name; give the folder for the study's "
            "outputs (e.g. --out runs/my-study), or leave --out out for "
            "runs/<timestamp>"
        )
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise OSError(
            f"--out: {text!r} is a file, not a folder; give a new folder or a "
            "study's folder"
        )
    if path.is_dir() and not force_new:
        try:
            foreign = _foreign(path)
        except OSError as e:
            raise OSError(f"--out: cannot list {text!r}: {e.strerror or e}") from None
        if foreign:
            shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise ValueError(
                f"--out: {text!r} already holds {len(foreign)} entries that are "
                f"not a dropscale study's ({shown}); give a new or empty folder, "
                "or pass --force-new to write the study among them"
            )
    return path


def check_device(device: str) -> torch.device:
    """The torch device named by ``run.device``, if this machine has it.

    Raises:
        ValueError: not a device name, or a device this machine lacks.
    """
    key = "run.device (--device)"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{key}: got {device!r}; expected cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{key}: got {device!r}, but this machine has no usable CUDA "
                "device (torch.cuda.is_available() is false); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{key}: got {device!r}, but this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"{key}: got {device!r}, but MPS is not available here; use "
                "--device cpu"
            )
    elif dev.type != "cpu":
        raise ValueError(f"{key}: got {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


def validate_study(config: StudyConfig) -> Any:
    """Check that ``config`` can run here, touching no output folder: the
    executor is installed, the device exists, and the data set loads with
    its options into non-empty training and test splits. Returns the data
    (``None`` for a remote Ray cluster, whose workers alone can see their
    device and data files: those are not checked here).

    Raises:
        ValueError: what cannot run, naming the key or flag, the value and
            the fix.
        OSError: the data set's files cannot be read.
    """
    check_executor(config)
    if config.executor == "ray" and config.address:
        # a remote cluster's workers hold the device and the data files;
        # this machine cannot tell, so the workers report those themselves
        log.info(
            "ray cluster %s: device and data are checked on its workers", config.address
        )
        return None
    check_device(config.device)
    opts = ", ".join(f"{k} = {v!r}" for k, v in config.dataset_options.items())
    where = f"[dataset] {config.dataset}" + (f" ({opts})" if opts else "")
    try:
        data = load_data(config)
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"{where} cannot be loaded: {e}; change the [dataset] options"
        ) from None
    for split in ("train", "test"):
        x = getattr(data, f"x_{split}", None)
        if x is not None and len(x) == 0:
            raise ValueError(
                f"{where} leaves the {split} split empty; change the [dataset] options"
            )
    return data


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and check it is writable; raise ``OSError`` saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
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

    Everything is checked before anything is created in ``out`` (see the
    module docstring), and the folder is locked for the whole run.

    Args:
        config: the study.
        out: output folder (created if missing); its ledger is resumed.
        force_new: start over when ``out`` holds a different study or an
            unreadable ledger: the old ledger and its outputs are moved into
            ``out/previous-<time>/`` (nothing is deleted). Also lets ``out``
            be a non-empty folder that is not a study's.
        on_group: called after each recorded group with
            ``(results, done, total)`` counted in trials.
        on_start: called once the ledger is open with ``(done, total)``,
            ``done`` counting the trials it already holds.
        ray_num_cpus: CPUs of a local Ray instance (``executor = "ray"``).

    Raises:
        ValueError: a different study or an unreadable ledger in ``out``, or
            a non-empty folder that is not a study's, without ``force_new``;
            an empty ``out``; Ray requested but not installed; a device this
            machine lacks; a data set that does not load with its options.
        StudyBusyError: another process runs a study in ``out``.
        OSError: ``out`` cannot be written.
    """
    out = check_out_dir(out, force_new=force_new)
    data = validate_study(config)
    out = prepare_out_dir(out)
    with study_lock(out):
        _remove_stale_temporaries(out)
        return _run_locked(
            config,
            out,
            data,
            force_new=force_new,
            on_group=on_group,
            on_start=on_start,
            ray_num_cpus=ray_num_cpus,
        )


def _run_locked(
    config: StudyConfig,
    out: Path,
    data: Any,
    *,
    force_new: bool,
    on_group: Callable[[list[TrialResult], int, int], None] | None,
    on_start: Callable[[int, int], None] | None,
    ray_num_cpus: int | None,
) -> StudyOutcome:
    """:func:`run_study` once the folder is checked and locked."""
    from dropscale.report import build_report

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
        kwargs: dict[str, Any] = (
            {"num_cpus": ray_num_cpus} if config.executor == "ray" else {"data": data}
        )
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
