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

A ledger that SQLite cannot read (truncated, overwritten, hand-edited into
something else) raises :class:`LedgerError`, one line naming the file, what
is wrong and the way out; it is never repaired or overwritten silently.

One process at a time works in a study folder: :func:`study_lock` holds an
exclusive ``flock`` on ``.dropscale.lock`` in it (the operating system drops
the lock when the holder exits, even by SIGKILL, so a stale lock cannot
block anyone). A second study or report there is refused, naming the pid.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from shlex import quote
from typing import Any, TypeVar

from dropscale.study.config import StudyConfig, Trial, definition_diff
from dropscale.study.trial import TrialResult

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LEDGER_NAME",
    "LOCK_NAME",
    "OUTPUT_NAMES",
    "Ledger",
    "LedgerError",
    "StudyBusyError",
    "code_version",
    "move_aside",
    "study_lock",
]

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".dropscale.lock"
#: The files a run derives from the ledger (plus every ``*.png`` figure).
OUTPUT_NAMES = ("results.csv", "report.md", "report.html", "study.json")
#: Definition keys without which no report can be built.
_REQUIRED = (
    "dataset",
    "dataset_options",
    "model",
    "model_options",
    "scalings",
    "ps",
    "seeds",
    "eval_scales",
    "mc_samples",
)
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


class LedgerError(ValueError):
    """The ledger cannot be used: unreadable, or holding something that is
    not a dropscale study. The message names the file, what is wrong and the
    way out, in one line."""


class StudyBusyError(ValueError):
    """Another process is running a study in the same output folder."""


_T = TypeVar("_T")


def _unreadable(folder: Path, detail: str, *, for_report: bool) -> LedgerError:
    fix = (
        "move it aside, or start over with `dropscale study --out "
        f"{quote(str(folder))} --force-new` (the old ledger and outputs go to "
        "previous-<time>/)"
        if for_report
        else "move it aside, or pass --force-new to start over there (the old "
        "ledger and outputs go to previous-<time>/), or choose another --out"
    )
    return LedgerError(
        f"{LEDGER_NAME} in {str(folder)!r} is not a readable dropscale ledger "
        f"({detail}); {fix}"
    )


_ACCESS_WORDS = ("locked", "readonly", "disk is full", "unable to open", "i/o")


def _guard(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn SQLite's exceptions inside ``method`` into one-line errors."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            text = str(e)
            if isinstance(e, sqlite3.OperationalError) and any(
                w in text.lower() for w in _ACCESS_WORDS
            ):
                raise LedgerError(
                    f"cannot use {LEDGER_NAME} in {str(self.folder)!r} "
                    f"(SQLite: {text}); check the folder's permissions and free "
                    "space"
                ) from None
            raise _unreadable(
                self.folder, f"SQLite: {text}", for_report=self.for_report
            ) from None

    return wrapper


def move_aside(folder: Path) -> Path | None:
    """Move the ledger (with its journal) and every derived output of the
    study in ``folder`` into a new ``previous-<time>/`` subfolder of it.

    Outputs move first and the ledger last, so a kill halfway leaves the
    ledger in place and the next ``--force-new`` moves the rest. Returns the
    subfolder, or ``None`` when there was nothing to move.
    """
    folder = Path(folder)
    outputs = [folder / n for n in OUTPUT_NAMES] + sorted(folder.glob("*.png"))
    ledger = [folder / f"{LEDGER_NAME}{x}" for x in ("-journal", "-wal", "-shm", "")]
    moving = [f for f in outputs + ledger if f.is_file()]
    if not moving:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder / f"previous-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"previous-{stamp}-{n}"
    dest.mkdir()
    for f in moving:
        os.replace(f, dest / f.name)
    log.warning(
        "moved the previous study's %s to %s",
        ", ".join(f.name for f in moving),
        dest,
    )
    return dest


_held: dict[Path, list[int]] = {}


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``folder`` (an existing folder) while inside.

    Re-entrant within one process (a study that rebuilds its report takes it
    once). The lock file ``.dropscale.lock`` stays in the folder and holds
    the pid of the last holder; the lock itself lives in the kernel and ends
    with the process.

    Raises:
        StudyBusyError: another process holds the lock.
        OSError: the lock file cannot be created.
    """
    key = Path(folder).resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    if fcntl is None:  # pragma: no cover - no flock on this platform
        yield
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OSError(
            f"cannot create the lock file {LOCK_NAME} in {str(folder)!r}: "
            f"{e.strerror or e}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise StudyBusyError(
            f"another dropscale study is running in {str(folder)!r} (pid {pid}); "
            "wait for it to finish (it rebuilds the report itself), or choose "
            "another --out"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)


class Ledger:
    """Open (creating if needed) the ledger of the study in ``folder``.

    Args:
        folder: the study's output folder.
        config: the study; its definition is stored on first use and
            compared afterwards. ``None`` opens an existing ledger read-only
            in spirit (for reports).
        force_new: when the stored definition differs, or the ledger cannot
            be read, move the old ledger and every output derived from it
            into ``previous-<time>/`` (see :func:`move_aside`) and start a
            new one instead of refusing.

    A new ledger (none there, or ``force_new``) never sits next to another
    study's outputs: any ``results.csv``, reports, ``study.json`` or PNG
    already in ``folder`` is moved into ``previous-<time>/`` first.

    Raises:
        ValueError: the folder holds a different study (what differs is
            listed) and ``force_new`` is false; or no ledger when ``config``
            is ``None``.
        LedgerError: the ledger is not a readable dropscale ledger (and
            ``force_new`` is false, or ``config`` is ``None``).
    """

    def __init__(
        self,
        folder: Path,
        config: StudyConfig | None = None,
        *,
        force_new: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LEDGER_NAME
        self.for_report = config is None
        if config is None and not self.path.exists():
            raise ValueError(
                f"no study ledger in {str(folder)!r} (expected {LEDGER_NAME}); "
                "give the --out folder of a study"
            )
        if config is not None and not self.path.exists():
            move_aside(self.folder)  # outputs of a study whose ledger is gone
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._connect()
            stored = self.definition()
            if config is not None and stored is not None:
                self.results()  # a broken trial is named now, not hours later
        except LedgerError:
            self.close()
            if config is None or not force_new:
                raise
            move_aside(self.folder)
            stored = None
            self._db = self._connect()
        if config is None:
            return
        if stored is not None and stored != config.definition():
            if not force_new:
                diff = "; ".join(definition_diff(stored, config.definition()))
                self.close()
                raise ValueError(
                    f"{str(folder)!r} holds a different study ({diff}); "
                    "choose another --out, or pass --force-new to start over "
                    "there (the old ledger and outputs go to previous-<time>/)"
                )
            self.close()
            move_aside(self.folder)
            self._db = self._connect()
            stored = None
        if stored is None:
            self._start(config)

    @_guard
    def _start(self, config: StudyConfig) -> None:
        with self._tx():
            self._put_meta("definition", json.dumps(config.definition()))
            self._put_meta("definition_hash", config.definition_hash())
            self._put_meta("created_at", str(time.time()))
            self._put_meta("code_version", code_version())

    @_guard
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            problems = [r[0] for r in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            db.executescript(_SCHEMA)
            _check_columns(db)
        except BaseException:
            db.close()
            raise
        return db

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _put_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
        )

    @_guard
    def meta(self, key: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else row[0]

    def definition(self) -> dict[str, Any] | None:
        """The stored study definition, checked and completed with the
        current defaults; ``None`` when none is stored yet.

        Raises:
            LedgerError: the stored text is not a study definition dropscale
                can read (broken JSON, missing keys, bad values).
        """
        text = self.meta("definition")
        if text is None:
            return None
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ValueError(f"a JSON {type(d).__name__}, not an object")
            missing = [k for k in _REQUIRED if k not in d]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            return StudyConfig.from_dict(d).definition()
        except (ValueError, TypeError) as e:
            raise _unreadable(
                self.folder,
                f"its study definition is unusable: {e}",
                for_report=self.for_report,
            ) from None

    def config(self) -> StudyConfig:
        """The stored study (with default run settings)."""
        d = self.definition()
        if d is None:
            raise ValueError(f"{str(self.path)!r} holds no study definition")
        return StudyConfig.from_dict(d)

    @_guard
    def finished_keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM trials")}

    def pending(self, trials: Iterable[Trial]) -> list[Trial]:
        done = self.finished_keys()
        return [t for t in trials if t.key not in done]

    @_guard
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

    @_guard
    def results(self) -> list[dict[str, Any]]:
        """Every recorded trial as a dict (trial fields, metrics, sites).

        Raises:
            LedgerError: a trial's metrics or sites are not the JSON the
                study wrote (the message names the trial and how to redo it).
        """
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
                    "metrics": self._json(key, "metrics", metrics, dict),
                    "sites": self._json(key, "sites", sites, list),
                    "seconds": sec,
                    "code_version": ver,
                    "finished_at": at,
                }
            )
        return out

    def _json(self, key: str, column: str, text: str, kind: type) -> Any:
        """Parse one trial's JSON column, refusing anything else in one line."""
        try:
            value = json.loads(text)
            if not isinstance(value, kind):
                raise ValueError(
                    f"a JSON {type(value).__name__}, not a {kind.__name__}"
                )
        except (ValueError, TypeError) as e:
            raise LedgerError(
                f"{LEDGER_NAME} in {str(self.folder)!r}: trial {key!r} has "
                f"unreadable {column} ({e}); delete that trial so the next run "
                f"redoes it (sqlite3 {quote(str(self.path))} "
                f"\"DELETE FROM trials WHERE key = '{key}'\"), or start over "
                "with --force-new"
            ) from None
        return value

    @_guard
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

    @_guard
    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._tx():
            for k, v in values.items():
                self._put_meta(k, v)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_COLUMNS = {
    "meta": ["key", "value"],
    "trials": [
        "key",
        "scaling",
        "p",
        "seed",
        "group_id",
        "batched",
        "config",
        "metrics",
        "sites",
        "seconds",
        "code_version",
        "finished_at",
    ],
    "groups": ["group_id", "n_trials", "seconds", "executor", "finished_at"],
}


def _check_columns(db: sqlite3.Connection) -> None:
    """Refuse tables whose columns are not the ones this module writes."""
    for table, want in _COLUMNS.items():
        got = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        if got != want:
            raise sqlite3.DatabaseError(
                f"table {table} has columns {', '.join(got)}; expected "
                f"{', '.join(want)}"
            )


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
