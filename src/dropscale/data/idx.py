"""The MNIST family in IDX format: MNIST, Fashion-MNIST and Kuzushiji-MNIST.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then
the values in C order. The magic number's first two bytes are zero, the third
names the value type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
float32, 0x0E float64) and the fourth the number of dimensions. Files may be
raw or gzip-compressed; compression is detected from the content, not the name.

Where the files are looked for, in order (the first folder holding all four
wins):

1. ``data_dir`` and ``data_dir/<name>`` when ``data_dir`` is given (then only
   there);
2. the data cache, ``cache_dir()/<name>`` (see :mod:`dropscale.data.cache`),
   where :func:`download_idx` puts them;
3. the system folder ``/usr/share/datasets/<name>``, where Debian's
   ``dataset-fashion-mnist`` package installs Fashion-MNIST.

Checksums: :func:`download_idx` checks every downloaded file against the MD5
published with the data set. Debian recompresses the files, so its copies have
other checksums; local files are therefore checked by structure (magic number,
dimensions, size against the header, label range), not by checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dropscale.data.cache import dataset_dir, file_digest, write_checksums
from dropscale.data.digits import Dataset

__all__ = [
    "IDX_SETS",
    "SYSTEM_DATA_DIRS",
    "IdxFormatError",
    "IdxSpec",
    "download_idx",
    "find_idx_files",
    "load_idx_dataset",
    "read_idx",
]

log = logging.getLogger(__name__)

# Value type byte of the magic number -> big-endian numpy dtype.
_IDX_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_ROLES = ("train_images", "train_labels", "test_images", "test_labels")

#: Folders searched after the cache; Debian installs data sets here.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


class IdxFormatError(ValueError):
    """An IDX file that is truncated, corrupt or not what the data set needs."""


@dataclass(frozen=True)
class IdxSpec:
    """One data set of the MNIST family: file names, checksums, source.

    ``files`` and ``md5`` map each role (``train_images``, ``train_labels``,
    ``test_images``, ``test_labels``) to the file name as published and to
    the MD5 of that published (gzip) file.
    """

    name: str
    title: str
    files: dict[str, str]
    md5: dict[str, str]
    base_url: str
    classes: tuple[str, ...]
    debian_package: str | None = None


def _standard_files() -> dict[str, str]:
    return {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }


IDX_SETS: dict[str, IdxSpec] = {
    "fashion-mnist": IdxSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        files=_standard_files(),
        md5={
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        debian_package="dataset-fashion-mnist",
    ),
    "mnist": IdxSpec(
        name="mnist",
        title="MNIST",
        files=_standard_files(),
        md5={
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        classes=tuple(str(d) for d in range(10)),
    ),
    "kmnist": IdxSpec(
        name="kmnist",
        title="Kuzushiji-MNIST",
        files=_standard_files(),
        md5={
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


def _spec(name: str | IdxSpec) -> IdxSpec:
    if isinstance(name, IdxSpec):
        return name
    try:
        return IDX_SETS[name]
    except KeyError:
        raise ValueError(
            f"unknown IDX data set {name!r}; available: {', '.join(IDX_SETS)}"
        ) from None


# ----------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise IdxFormatError(
            f"{path}: truncated or corrupt gzip data ({e}); "
            "delete the file and fetch it again"
        ) from None


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array of its header's shape.

    Raises:
        IdxFormatError: a bad magic number, an unknown value type, a header
            cut short, or data shorter or longer than the header says; the
            message names the file and the problem.
        OSError: the file cannot be read.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxFormatError(
            f"{path}: {len(data)} bytes, shorter than the 4-byte IDX magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(
            f"{path}: magic number 0x{magic:08x} does not start with two zero "
            "bytes, so this is not an IDX file"
        )
    if data[2] not in _IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in _IDX_TYPES)
        raise IdxFormatError(
            f"{path}: magic number 0x{magic:08x} names value type "
            f"0x{data[2]:02x}, which IDX does not define (known: {known})"
        )
    ndim = data[3]
    if ndim == 0:
        raise IdxFormatError(f"{path}: magic number 0x{magic:08x} gives 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, "
            f"the file has {len(data)}"
        )
    dims = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "too long"
        raise IdxFormatError(
            f"{path}: {what}: the header gives shape {dims} of {dtype.name} "
            f"({expected:,} bytes of data), the file holds {actual:,}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _check_pair(images: np.ndarray, labels: np.ndarray, paths, n_classes: int):
    img_path, lab_path = paths
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{img_path}: expected uint8 images of shape (N, rows, cols), got "
            f"{images.dtype.name} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxFormatError(
            f"{lab_path}: expected uint8 labels of shape (N,), got "
            f"{labels.dtype.name} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{img_path} holds {len(images):,} images but {lab_path} holds "
            f"{len(labels):,} labels; the two files do not belong together"
        )
    if len(labels) and int(labels.max()) >= n_classes:
        raise IdxFormatError(
            f"{lab_path}: label {int(labels.max())} is outside 0..{n_classes - 1}"
        )


# ----------------------------------------------------------------- locating


def _candidates(filename: str) -> tuple[str, ...]:
    raw = filename[:-3] if filename.endswith(".gz") else filename
    return (raw, raw + ".gz")


def _search_folders(spec: IdxSpec, data_dir: Path | str | None) -> list[Path]:
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_dir {str(root)!r} is not a folder; pass the folder that "
                f"holds the {spec.title} IDX files"
            )
        return [root, root / spec.name]
    return [dataset_dir(spec.name)] + [d / spec.name for d in SYSTEM_DATA_DIRS]


def find_idx_files(
    name: str | IdxSpec = "fashion-mnist", data_dir: Path | str | None = None
) -> dict[str, Path]:
    """Paths of the four files of data set ``name``: role -> path.

    Each file may be stored raw or with ``.gz``. The first folder in the search
    order (see the module docstring) that holds all four is used.

    Raises:
        FileNotFoundError: no folder holds all four; the message lists the
            folders searched, what each lacks, and how to get the files.
    """
    spec = _spec(name)
    lacking: list[str] = []
    for folder in _search_folders(spec, data_dir):
        found: dict[str, Path] = {}
        missing: list[str] = []
        for role in _ROLES:
            hit = next(
                (
                    folder / c
                    for c in _candidates(spec.files[role])
                    if (folder / c).is_file()
                ),
                None,
            )
            if hit is None:
                missing.append(_candidates(spec.files[role])[0] + "[.gz]")
            else:
                found[role] = hit
        if not missing:
            log.info("%s: using IDX files in %s", spec.name, folder)
            return found
        if found:
            lacking.append(f"{folder} lacks {', '.join(missing)}")
        else:
            lacking.append(f"{folder} has none")
    fixes = [f"run `dropscale data get {spec.name}` (downloads, checks MD5)"]
    if spec.debian_package:
        fixes.insert(0, f"`apt-get install {spec.debian_package}`")
    fixes.append("pass --data-dir FOLDER (data_dir=) holding the files")
    raise FileNotFoundError(
        f"{spec.title} IDX files not found: {'; '.join(lacking)}. "
        f"To fix: {', or '.join(fixes)}"
    )


# ----------------------------------------------------------------- loading


def _subset(n_total: int, n: int | None, rng: np.random.Generator, what: str):
    if n is None or n >= n_total:
        return slice(None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive integer or None, got {n!r}")
    return np.sort(rng.choice(n_total, size=n, replace=False))


def load_idx_dataset(
    name: str | IdxSpec = "fashion-mnist",
    data_dir: Path | str | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Train and test split of an MNIST-family data set as a :class:`Dataset`.

    Pixels ``v`` in 0..255 become ``x = (v / 255 - mu) / sigma`` with ``mu``
    and ``sigma`` the mean and std over all pixels of the (sub-sampled)
    training images, one scalar each, so an image keeps its spatial structure
    for a CNN. Inputs are flattened to (N, rows * cols).

    Args:
        name: ``"fashion-mnist"``, ``"mnist"``, ``"kmnist"`` or an :class:`IdxSpec`.
        data_dir: folder with the four files; default: search the cache and
            the system folder.
        n_train, n_test: keep a random subset of this size (``None``: all);
            the subset depends on ``seed`` only.
        seed: seed of the subsets.

    Raises:
        FileNotFoundError: the files are not found (the message says how to
            get them).
        IdxFormatError: a file is corrupt or the pair of files disagrees.
    """
    spec = _spec(name)
    paths = find_idx_files(spec, data_dir)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = read_idx(img_path), read_idx(lab_path)
        _check_pair(images, labels, (img_path, lab_path), len(spec.classes))
        keep = _subset(len(labels), n, rng, f"n_{split}")
        arrays[split] = (images[keep], labels[keep])
    x_tr = arrays["train"][0].reshape(len(arrays["train"][0]), -1)
    x_tr = x_tr.astype(np.float32) / 255.0
    mu, sigma = float(x_tr.mean()), float(x_tr.std())
    if not sigma > 0:
        raise IdxFormatError(f"{paths['train_images']}: every pixel has one value")
    x_te = arrays["test"][0].reshape(len(arrays["test"][0]), -1)
    x_te = x_te.astype(np.float32) / 255.0
    return Dataset(
        name=spec.name,
        x_train=torch.from_numpy((x_tr - mu) / sigma),
        y_train=torch.from_numpy(arrays["train"][1].astype(np.int64)),
        x_test=torch.from_numpy((x_te - mu) / sigma),
        y_test=torch.from_numpy(arrays["test"][1].astype(np.int64)),
        n_classes=len(spec.classes),
    )


# ----------------------------------------------------------------- download


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` to ``dest`` through a temporary file; keep it only if
    its MD5 is ``md5``."""
    tmp = dest.with_name(f".{dest.name}.part")
    h = hashlib.md5()
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as resp,
            open(tmp, "wb") as out,
        ):
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if got != md5:
            raise OSError(
                f"{url}: checksum mismatch: expected MD5 {md5}, got {got}; "
                "the file was not kept (the server sent something else; try "
                "again later or use another base_url)"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def download_idx(
    name: str | IdxSpec = "fashion-mnist",
    dest: Path | str | None = None,
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Download the four published files of ``name`` and verify each one.

    A file already present with the published MD5 is not fetched again. Each
    download must match its MD5 and parse as IDX before it is kept; then the
    folder's ``SHA256SUMS`` is written.

    Args:
        name: data set name or :class:`IdxSpec`.
        dest: destination folder; default ``cache_dir()/<name>``.
        base_url: where the files are (a URL ending in ``/``); default the
            data set's published location.
        timeout: seconds to wait for the server per request.

    Returns:
        role -> path of the verified file.

    Raises:
        OSError: a network error, or a checksum mismatch (named with both
            digests).
    """
    spec = _spec(name)
    folder = Path(dest) if dest is not None else dataset_dir(spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    base = base_url or spec.base_url
    if not base.endswith("/"):
        base += "/"
    out: dict[str, Path] = {}
    for role in _ROLES:
        filename, md5 = spec.files[role], spec.md5[role]
        path = folder / filename
        if path.is_file() and file_digest(path, "md5") == md5:
            log.info("%s: %s already present and verified", spec.name, filename)
        else:
            log.info("%s: fetching %s%s", spec.name, base, filename)
            try:
                _fetch(base + filename, path, md5, timeout)
            except OSError as e:
                if "checksum mismatch" in str(e):
                    raise
                raise OSError(f"cannot download {base + filename}: {e}") from e
        read_idx(path)
        out[role] = path
    write_checksums(folder, [p.name for p in out.values()])
    return out
