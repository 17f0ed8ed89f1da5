"""The data cache: where fetched data sets live, and their checksums.

The cache folder is ``$DROPSCALE_DATA`` when that is set, otherwise
``$XDG_CACHE_HOME/dropscale`` (``~/.cache/dropscale`` when ``XDG_CACHE_HOME``
is unset). Each data set gets one sub-folder, and every file fetched into it
is listed with its SHA-256 in that folder's ``SHA256SUMS`` (the format of
``sha256sum``), so a later run can tell a complete copy from a damaged one.

Files are written under a temporary name in the destination folder and
renamed into place, so an interrupted fetch never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dropscale._io import atomic_write

__all__ = [
    "CHECKSUM_FILE",
    "atomic_write_bytes",
    "cache_dir",
    "dataset_dir",
    "file_digest",
    "read_checksums",
    "verify_checksums",
    "write_checksums",
]

CHECKSUM_FILE = "SHA256SUMS"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The root of the data cache (not created here)."""
    env = os.environ.get("DROPSCALE_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dropscale"


def dataset_dir(name: str, root: Path | str | None = None) -> Path:
    """The cache sub-folder of data set ``name`` (under ``root`` if given)."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"data set name must be a plain folder name, got {name!r}")
    return (Path(root) if root is not None else cache_dir()) / name


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    atomic_write(path, data)


def write_checksums(folder: Path | str, names: Iterable[str]) -> dict[str, str]:
    """Hash the files ``names`` in ``folder`` and write ``folder/SHA256SUMS``.

    Returns the mapping name -> SHA-256 that was written.
    """
    folder = Path(folder)
    sums = {n: file_digest(folder / n) for n in sorted(names)}
    text = "".join(f"{digest}  {name}\n" for name, digest in sums.items())
    atomic_write_bytes(folder / CHECKSUM_FILE, text.encode("ascii"))
    return sums


def read_checksums(folder: Path | str) -> dict[str, str]:
    """The mapping name -> SHA-256 from ``folder/SHA256SUMS``.

    Raises:
        FileNotFoundError: the folder has no checksum file.
        ValueError: a line that is not ``<64 hex digits>  <name>``.
    """
    path = Path(folder) / CHECKSUM_FILE
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text("ascii").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ValueError(
                f"{path}: line {lineno} is not '<sha256>  <file name>': {line!r}"
            )
        out[name] = digest
    return out


def verify_checksums(
    folder: Path | str, expected: Mapping[str, str] | None = None
) -> list[str]:
    """Names of the listed files that are missing or whose SHA-256 differs.

    ``expected`` defaults to the folder's own ``SHA256SUMS``; an empty list
    means every file is present and intact.
    """
    folder = Path(folder)
    sums = read_checksums(folder) if expected is None else dict(expected)
    bad = []
    for name, digest in sorted(sums.items()):
        path = folder / name
        if not path.is_file() or file_digest(path) != digest:
            bad.append(name)
    return bad
