"""The ledger survives SIGKILL at random moments: no corrupt database, no
half-written CSV or report, and the next run resumes where it stopped."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from dropscale.study import StudyConfig, run_study
from dropscale.study.ledger import Ledger
from dropscale.study.rows import read_csv

CONFIG = dict(
    scalings=("inverted", "none"),
    model_options={"hidden": [8]},
    ps=(0.2, 0.5),
    seeds=4,
    epochs=1,
    mc_samples=(1, 2),
    eval_scales=(0.5, 1.0),
    calibration_examples=32,
    group_size=1,
)
SCRIPT = (
    "import sys\n"
    "from dropscale.study import StudyConfig, run_study\n"
    f"run_study(StudyConfig(**{CONFIG!r}), sys.argv[1])\n"
)


def _check_consistent(folder) -> int:
    db = sqlite3.connect(folder / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT key, metrics, sites FROM trials").fetchall()
    finally:
        db.close()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys))
    for _, metrics, sites in rows:
        assert "accuracy" in json.loads(metrics) and json.loads(sites)
    if (folder / "results.csv").exists():
        csv_rows = read_csv(folder / "results.csv")
        assert 0 < len(csv_rows) <= len(keys)
        assert all(v != "" for r in csv_rows for v in r.values())
    if (folder / "report.md").exists():
        assert "## Run time" in (folder / "report.md").read_text()
    if (folder / "report.html").exists():
        assert (folder / "report.html").read_text().endswith("</html>\n")
    return len(keys)


def _committed(folder) -> int:
    try:
        db = sqlite3.connect(f"file:{folder / 'ledger.sqlite'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _start(folder) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(folder)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_after(proc: subprocess.Popen, folder, at_least: int, delay: float) -> None:
    """SIGKILL ``delay`` s after the ledger holds ``at_least`` trials."""
    deadline = time.monotonic() + 30
    while _committed(folder) < at_least and proc.poll() is None:
        assert time.monotonic() < deadline, "the study made no progress"
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    rng = random.Random(20261204)
    counts = []
    # two kills while trials are being trained and committed (each group is
    # one trial of about 0.1 s), one while the outputs are being written
    for at_least, delay in ((1, rng.uniform(0, 0.8)), (6, rng.uniform(0, 0.8))):
        _kill_after(_start(tmp_path), tmp_path, at_least, delay)
        counts.append(_check_consistent(tmp_path))
    _kill_after(_start(tmp_path), tmp_path, 16, rng.uniform(0.05, 0.6))
    counts.append(_check_consistent(tmp_path))
    print("trials committed at each kill:", counts)
    assert counts == sorted(counts)  # never loses a committed trial
    config = StudyConfig(**CONFIG)
    outcome = run_study(config, tmp_path)
    assert outcome.n_trials == 16 and outcome.n_run == 16 - counts[-1]
    assert _check_consistent(tmp_path) == 16
    assert not list(tmp_path.glob(".*.tmp"))
    with Ledger(tmp_path) as ledger:
        assert ledger.definition() == config.definition()
