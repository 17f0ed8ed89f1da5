"""The ledger: an SQLite record of every finished trial of a study.

One file, ``ledger.sqlite``, in the study's output folder. It holds the study
definition (and its hash) once, and one row per finished trial with its
configuration, metrics, per-site statistics, timings and the code version.
Each finished group of trials is written in one transaction, so a process
killed at any moment leaves the trials of the last committed group and
nothing half-written (SQLite's rollback journal undoes an interrupted
transaction the next time the file is opened).

The ledger is the single record of what finished: resuming skips the trials
it holds, and ``dropscale report DIR`` rebuilds every output from it alone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dropscale.study.config import StudyConfig, Trial, definition_diff
from dropscale.study.trial import TrialResult

__all__ = ["LEDGER_NAME", "Ledger", "code_version"]

LEDGER_NAME = "ledger.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    scaling TEXT NOT NULL,
    p REAL NOT NULL,
    seed INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    batched INTEGER NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    sites TEXT NOT NULL,
    seconds REAL NOT NULL,
    code_version TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    group_id INTEGER PRIMARY KEY,
    n_trials INTEGER NOT NULL,
    seconds REAL NOT NULL,
    executor TEXT NOT NULL,
    finished_at REAL NOT NULL
);
"""


def code_version() -> str:
    """dropscale's version, plus the git commit when run from a checkout."""
    from dropscale import __version__

    head = Path(__file__).resolve().parents[3] / ".git"
    try:
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            ref = (head / ref[5:]).read_text().strip()
        return f"{__version__}+g{ref[:10]}"
    except OSError:
        return __version__


class Ledger:
    """Open (creating if needed) the ledger of the study in ``folder``.

    Args:
        folder: the study's output folder.
        config: the study; its definition is stored on first use and
            compared afterwards. ``None`` opens an existing ledger read-only
            in spirit (for reports).
        force_new: when the stored definition differs, move the old ledger
            aside (``ledger-<time>.sqlite``) instead of refusing.

    Raises:
        ValueError: the folder holds a different study (what differs is
            listed) and ``force_new`` is false; or no ledger when ``config``
            is ``None``.
    """

    def __init__(
        self,
        folder: Path,
        config: StudyConfig | None = None,
        *,
        force_new: bool = False,
    ) -> None:
        self.path = Path(folder) / LEDGER_NAME
        if config is None and not self.path.exists():
            raise ValueError(
                f"no study ledger in {str(folder)!r} (expected {LEDGER_NAME}); "
                "give the --out folder of a study"
            )
        self._db = self._connect()
        stored = self.definition()
        if config is None:
            return
        if stored is not None and stored != config.definition():
            if not force_new:
                diff = "; ".join(definition_diff(stored, config.definition()))
                self.close()
                raise ValueError(
                    f"{str(folder)!r} holds a different study ({diff}); "
                    "choose another --out, or pass --force-new to start over "
                    "there (the old ledger is kept under a new name)"
                )
            self.close()
            aside = self.path.with_name(
                f"ledger-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
            )
            self.path.rename(aside)
            self._db = self._connect()
            stored = None
        if stored is None:
            with self._tx():
                self._put_meta("definition", json.dumps(config.definition()))
                self._put_meta("definition_hash", config.definition_hash())
                self._put_meta("created_at", str(time.time()))
                self._put_meta("code_version", code_version())

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _put_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
        )

    def meta(self, key: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else row[0]

    def definition(self) -> dict[str, Any] | None:
        text = self.meta("definition")
        return None if text is None else json.loads(text)

    def config(self) -> StudyConfig:
        """The stored study (with default run settings)."""
        d = self.definition()
        if d is None:
            raise ValueError(f"{str(self.path)!r} holds no study definition")
        return StudyConfig.from_dict(d)

    def finished_keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM trials")}

    def pending(self, trials: Iterable[Trial]) -> list[Trial]:
        done = self.finished_keys()
        return [t for t in trials if t.key not in done]

    def record_group(
        self,
        results: list[TrialResult],
        *,
        seconds: float,
        executor: str,
        run: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a finished group of trials in one transaction.

        Each trial's ``config`` column holds its convention, ``p`` and seed,
        the study definition's hash and the run settings (``run``: executor,
        group size, threads, device) it was trained with.
        """
        now = time.time()
        version = code_version()
        base = {"definition_hash": self.meta("definition_hash"), **(run or {})}
        with self._tx():
            (gid,) = self._db.execute(
                "SELECT COALESCE(MAX(group_id), 0) + 1 FROM groups"
            ).fetchone()
            self._db.execute(
                "INSERT INTO groups VALUES (?, ?, ?, ?, ?)",
                (gid, len(results), seconds, executor, now),
            )
            for r in results:
                self._db.execute(
                    "INSERT OR REPLACE INTO trials VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.trial.key,
                        r.trial.scaling,
                        r.trial.p,
                        r.trial.seed,
                        gid,
                        r.batched,
                        json.dumps(
                            {
                                "scaling": r.trial.scaling,
                                "p": r.trial.p,
                                "seed": r.trial.seed,
                                **base,
                            }
                        ),
                        json.dumps(r.metrics),
                        json.dumps(r.sites),
                        r.seconds,
                        version,
                        now,
                    ),
                )

    def results(self) -> list[dict[str, Any]]:
        """Every recorded trial as a dict (trial fields, metrics, sites)."""
        rows = self._db.execute(
            "SELECT key, scaling, p, seed, group_id, batched, metrics, sites, "
            "seconds, code_version, finished_at FROM trials ORDER BY seed, p, rowid"
        ).fetchall()
        out = []
        for key, s, p, seed, gid, batched, metrics, sites, sec, ver, at in rows:
            out.append(
                {
                    "key": key,
                    "scaling": s,
                    "p": p,
                    "seed": seed,
                    "group_id": gid,
                    "batched": batched,
                    "metrics": json.loads(metrics),
                    "sites": json.loads(sites),
                    "seconds": sec,
                    "code_version": ver,
                    "finished_at": at,
                }
            )
        return out

    def timings(self) -> dict[str, float]:
        """Total trial-group seconds, number of groups and first/last finish."""
        n, total, first, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(seconds), 0), MIN(finished_at), "
            "MAX(finished_at) FROM groups"
        ).fetchone()
        return {
            "groups": n,
            "group_seconds": total,
            "first_finished": first or 0.0,
            "last_finished": last or 0.0,
        }

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._tx():
            for k, v in values.items():
                self._put_meta(k, v)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
