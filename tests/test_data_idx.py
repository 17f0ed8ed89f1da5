"""IDX reader, file search, loader and checked download (MNIST family).

Every file here is built by the test byte by byte with ``struct``, so the
expected arrays never come from the reader under test. The download tests
serve files from a loopback HTTP server the test starts.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from dropscale.data import cache
from dropscale.data import idx as idx_mod
from dropscale.data.idx import (
    IdxFormatError,
    IdxSpec,
    download_idx,
    find_idx_files,
    load_idx_dataset,
    read_idx,
)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(values: list, dims: tuple[int, ...], code: int, fmt: str) -> bytes:
    """Magic number, big-endian dims, then values packed one by one."""
    head = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + b"".join(struct.pack(">" + fmt, v) for v in values)


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def images_and_labels(n: int, rows: int, cols: int, seed: int):
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 256, size=(n, rows, cols)).tolist()
    labels = [i % 10 for i in range(n)]
    flat = [v for img in pix for row in img for v in row]
    return (
        pix,
        labels,
        idx_bytes(flat, (n, rows, cols), 0x08, "B"),
        idx_bytes(labels, (n,), 0x08, "B"),
    )


def make_set(folder: Path, n_train=30, n_test=20, rows=4, cols=3, gz=True):
    """Write the four files of a tiny MNIST-like set; return the raw arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        pix, labels, ib, lb = images_and_labels(n, rows, cols, seed)
        name_i = FILES[f"{split}_images"]
        name_l = FILES[f"{split}_labels"]
        if not gz:
            name_i, name_l = name_i[:-3], name_l[:-3]
        write(folder / name_i, ib, gz)
        write(folder / name_l, lb, gz)
        arrays[split] = (np.array(pix, dtype=np.uint8), np.array(labels))
    return arrays


# ------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_uint8_images_raw_and_gzip(tmp_path, gz):
    pix, _, ib, _ = images_and_labels(5, 4, 3, seed=0)
    arr = read_idx(write(tmp_path / "img", ib, gz))
    assert arr.dtype == np.uint8 and arr.shape == (5, 4, 3)
    assert arr.tolist() == pix


@pytest.mark.parametrize(
    "code,fmt,dtype,values",
    [
        (0x09, "b", np.int8, [-128, -1, 0, 127, 5, 6]),
        (0x0B, "h", np.int16, [-32768, -2, 0, 300, 32767, 7]),
        (0x0C, "i", np.int32, [-(2**31), -5, 0, 70000, 2**31 - 1, 8]),
        (0x0D, "f", np.float32, [-1.5, 0.25, 0.0, 3.0, 1e-3, 2.0]),
        (0x0E, "d", np.float64, [-1.5, 0.1, 0.0, 1e300, -2e-300, 9.0]),
    ],
)
def test_read_every_value_type_big_endian(tmp_path, code, fmt, dtype, values):
    arr = read_idx(write(tmp_path / "x", idx_bytes(values, (2, 3), code, fmt)))
    assert arr.dtype == dtype and arr.shape == (2, 3)
    np.testing.assert_array_equal(arr.ravel(), np.array(values, dtype=dtype))


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "shorter than the 4-byte"),
        (b"\x00\x00", "shorter than the 4-byte"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
        (b"PK\x03\x04" + b"\x00" * 8, "not an IDX file"),
        (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x00", "value type 0x0a"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
    ],
)
def test_bad_headers_name_file_and_problem(tmp_path, data, needle):
    path = write(tmp_path / "bad-file-idx", data)
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    assert needle in str(info.value)
    assert "bad-file-idx" in str(info.value)


def test_truncated_and_overlong_data(tmp_path):
    _, _, ib, _ = images_and_labels(5, 4, 3, seed=0)
    with pytest.raises(IdxFormatError, match=r"truncated: .*\(5, 4, 3\).*60 bytes"):
        read_idx(write(tmp_path / "short", ib[:-1]))
    with pytest.raises(IdxFormatError, match=r"too long: .*holds 62"):
        read_idx(write(tmp_path / "long", ib + b"xx"))


def test_truncated_gzip_is_named(tmp_path):
    _, _, ib, _ = images_and_labels(50, 8, 8, seed=0)
    gz = gzip.compress(ib)
    path = tmp_path / "cut.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(IdxFormatError, match=r"cut\.gz: truncated or corrupt gzip"):
        read_idx(path)


# ---------------------------------------------------------------- locating


def test_find_in_data_dir_mixed_raw_and_gzip(tmp_path):
    make_set(tmp_path / "a", gz=True)
    (tmp_path / "a" / FILES["test_labels"]).unlink()
    _, labels, _, lb = images_and_labels(20, 4, 3, seed=2)
    write(tmp_path / "a" / FILES["test_labels"][:-3], lb)
    found = find_idx_files("fashion-mnist", tmp_path / "a")
    assert found["test_labels"].name == "t10k-labels-idx1-ubyte"
    assert found["train_images"].name == "train-images-idx3-ubyte.gz"


def test_find_reports_missing_files_and_fixes(tmp_path):
    make_set(tmp_path / "a")
    (tmp_path / "a" / FILES["train_labels"]).unlink()
    with pytest.raises(FileNotFoundError) as info:
        find_idx_files("fashion-mnist", tmp_path / "a")
    msg = str(info.value)
    assert "lacks train-labels-idx1-ubyte[.gz]" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "dropscale data get fashion-mnist" in msg
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_idx_files("fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown IDX data set 'cifar'"):
        find_idx_files("cifar", tmp_path)


def test_search_order_cache_before_system(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_set(system / "fashion-mnist")
    monkeypatch.setattr(idx_mod, "SYSTEM_DATA_DIRS", (system,))
    monkeypatch.setenv("DROPSCALE_DATA", str(tmp_path / "cache"))
    found = find_idx_files("fashion-mnist")
    assert found["train_images"].parent == system / "fashion-mnist"
    make_set(tmp_path / "cache" / "fashion-mnist")
    found = find_idx_files("fashion-mnist")
    assert found["train_images"].parent == tmp_path / "cache" / "fashion-mnist"


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPSCALE_DATA", str(tmp_path / "d"))
    assert cache.cache_dir() == tmp_path / "d"
    monkeypatch.delenv("DROPSCALE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "dropscale"
    with pytest.raises(ValueError, match="plain folder name"):
        cache.dataset_dir("../evil")


# ------------------------------------------------------------------ loading


def test_load_standardises_with_training_scalars(tmp_path):
    arrays = make_set(tmp_path / "s", n_train=30, n_test=20)
    data = load_idx_dataset("fashion-mnist", tmp_path / "s")
    raw_tr = arrays["train"][0].reshape(30, -1) / 255.0
    raw_te = arrays["test"][0].reshape(20, -1) / 255.0
    mu, sigma = raw_tr.mean(), raw_tr.std()
    np.testing.assert_allclose(data.x_train.numpy(), (raw_tr - mu) / sigma, atol=1e-5)
    np.testing.assert_allclose(data.x_test.numpy(), (raw_te - mu) / sigma, atol=1e-5)
    assert data.y_train.tolist() == arrays["train"][1].tolist()
    assert data.n_classes == 10 and data.x_train.shape == (30, 12)


def test_subsets_depend_on_seed_only(tmp_path):
    make_set(tmp_path / "s", n_train=30, n_test=20)
    a = load_idx_dataset("fashion-mnist", tmp_path / "s", n_train=10, n_test=5, seed=3)
    b = load_idx_dataset("fashion-mnist", tmp_path / "s", n_train=10, n_test=5, seed=3)
    c = load_idx_dataset("fashion-mnist", tmp_path / "s", n_train=10, n_test=5, seed=4)
    assert a.x_train.shape == (10, 12) and a.x_test.shape == (5, 12)
    assert bool((a.x_train == b.x_train).all())
    assert not bool((a.y_train == c.y_train).all() and (a.x_train == c.x_train).all())
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        load_idx_dataset("fashion-mnist", tmp_path / "s", n_train=0)


def test_pairs_that_disagree_are_named(tmp_path):
    make_set(tmp_path / "s", n_train=30)
    _, _, _, lb = images_and_labels(29, 4, 3, seed=1)
    write(tmp_path / "s" / FILES["train_labels"], lb, gz=True)
    with pytest.raises(IdxFormatError, match="30 images but .* 29 labels"):
        load_idx_dataset("fashion-mnist", tmp_path / "s")
    write(
        tmp_path / "s" / FILES["train_labels"],
        idx_bytes([0] * 29 + [10], (30,), 0x08, "B"),
        gz=True,
    )
    with pytest.raises(IdxFormatError, match=r"label 10 is outside 0\.\.9"):
        load_idx_dataset("fashion-mnist", tmp_path / "s")
    write(
        tmp_path / "s" / FILES["train_images"],
        idx_bytes([0] * 30, (30,), 0x08, "B"),
        gz=True,
    )
    with pytest.raises(IdxFormatError, match=r"uint8 images of shape \(N, rows"):
        load_idx_dataset("fashion-mnist", tmp_path / "s")


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_labels_are_balanced():
    # The published set has 6,000 train and 1,000 test images per class.
    for name, per_class in (("train-labels", 6000), ("t10k-labels", 1000)):
        labels = read_idx(DEBIAN / f"{name}-idx1-ubyte.gz")
        assert labels.shape == (10 * per_class,)
        assert np.bincount(labels).tolist() == [per_class] * 10


# ----------------------------------------------------------------- download


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server for the folder ``tmp_path / 'served'``."""
    served = tmp_path / "served"
    served.mkdir()
    _Quiet.requests = []
    handler = partial(_Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def spec_for(folder: Path, **md5_override) -> IdxSpec:
    md5 = {
        r: hashlib.md5((folder / f).read_bytes()).hexdigest() for r, f in FILES.items()
    }
    md5.update(md5_override)
    return IdxSpec(
        name="tiny",
        title="Tiny",
        files=dict(FILES),
        md5=md5,
        base_url="http://127.0.0.1:9/unused/",
        classes=tuple(str(i) for i in range(10)),
    )


def test_download_verifies_and_skips_intact_files(tmp_path, server):
    served, url = server
    make_set(served)
    spec = spec_for(served)
    got = download_idx(spec, tmp_path / "dest", base_url=url)
    for role, path in got.items():
        assert path.read_bytes() == (served / FILES[role]).read_bytes()
    assert cache.verify_checksums(tmp_path / "dest") == []
    assert len(_Quiet.requests) == 4
    download_idx(spec, tmp_path / "dest", base_url=url)
    assert len(_Quiet.requests) == 4  # nothing fetched again
    data = load_idx_dataset(spec, tmp_path / "dest")
    assert data.x_train.shape == (30, 12)


def test_download_checksum_mismatch_keeps_nothing(tmp_path, server):
    served, url = server
    make_set(served)
    spec = spec_for(served, test_images="0" * 32)
    with pytest.raises(OSError) as info:
        download_idx(spec, tmp_path / "dest", base_url=url)
    msg = str(info.value)
    assert "checksum mismatch" in msg and "0" * 32 in msg
    real = hashlib.md5((served / FILES["test_images"]).read_bytes()).hexdigest()
    assert real in msg
    left = sorted(p.name for p in (tmp_path / "dest").iterdir())
    assert FILES["test_images"] not in left
    assert not any(n.endswith(".part") for n in left)


def test_download_missing_and_corrupt_files(tmp_path, server):
    served, url = server
    make_set(served)
    spec = spec_for(served)
    (served / FILES["test_labels"]).unlink()
    with pytest.raises(OSError, match="cannot download .*t10k-labels.*404"):
        download_idx(spec, tmp_path / "dest", base_url=url)
    # A file with the published checksum that is still not valid IDX.
    write(served / FILES["test_labels"], b"\x00\x00\x08\x01\x00\x00\x00\x05ab", gz=True)
    spec = spec_for(served)
    with pytest.raises(IdxFormatError, match="truncated"):
        download_idx(spec, tmp_path / "dest", base_url=url)
