"""Kernel alignment, kernel regression and cosine similarity against hand-written formulas."""
import warnings

import numpy as np
import pytest
import torch

import silentlib as sl


def rng(seed=0):
    return np.random.default_rng(seed)


def test_alignment_one_for_target_outer_product():
    y = rng().normal(size=12)
    assert sl.kernel_alignment(np.outer(y, y), y) == pytest.approx(1.0, abs=1e-14)
    assert sl.kernel_alignment(3.7 * np.outer(y, y), y) == pytest.approx(1.0, abs=1e-14)
    assert sl.kernel_alignment(-np.outer(y, y), y) == pytest.approx(-1.0, abs=1e-14)


def test_alignment_identity_kernel():
    """A(I, y) = |y|^2 / (sqrt(P) |y|^2) = 1/sqrt(P)."""
    y = rng(1).normal(size=16)
    assert sl.kernel_alignment(np.eye(16), y) == pytest.approx(0.25, abs=1e-14)


def test_alignment_scalar_hand_sum():
    r = rng(2)
    X = r.normal(size=(9, 4))
    K, y = X @ X.T, r.normal(size=9)
    num = sum(y[i] * K[i, j] * y[j] for i in range(9) for j in range(9))
    den = np.sqrt(sum(K[i, j] ** 2 for i in range(9) for j in range(9))) * sum(v * v for v in y)
    assert sl.kernel_alignment(K, y) == pytest.approx(num / den, rel=1e-12)
    # tensors work too
    assert sl.kernel_alignment(torch.tensor(K), torch.tensor(y)) == pytest.approx(num / den, rel=1e-12)


def test_alignment_multi_output_hand_sum():
    r = rng(3)
    P, C = 6, 3
    A = r.normal(size=(P * C, P * C))
    K = (A @ A.T).reshape(P, C, P, C).transpose(0, 2, 1, 3)   # (P, P, C, C), PSD
    y = r.normal(size=(P, C))
    num = den_k = 0.0
    for i in range(P):
        for j in range(P):
            for a in range(C):
                for b in range(C):
                    num += y[i, a] * K[i, j, a, b] * y[j, b]
                    den_k += K[i, j, a, b] ** 2
    expected = num / (np.sqrt(den_k) * np.sum(y ** 2))
    assert sl.kernel_alignment(K, y) == pytest.approx(expected, rel=1e-12)
    # and the Kronecker-structured case K_scalar ⊗ yy-like: alignment in [-1, 1]
    assert -1 <= sl.kernel_alignment(K, y) <= 1


def test_alignment_multi_output_maximal_for_flattened_outer_product():
    y = rng(4).normal(size=(5, 2))
    K = np.einsum("ia,jb->ijab", y, y)
    assert sl.kernel_alignment(K, y) == pytest.approx(1.0, abs=1e-14)


def test_regression_interpolates_training_targets():
    r = rng(5)
    X = r.normal(size=(10, 25))
    K = np.exp(-0.1 * ((X[:, None] - X[None]) ** 2).sum(-1))     # RBF, full rank
    y = r.normal(size=10)
    pred = sl.kernel_regression(K, K, y)
    np.testing.assert_allclose(pred, y, atol=1e-8)
    Y = r.normal(size=(10, 3))
    K4 = np.einsum("ij,ab->ijab", K, np.eye(3))
    np.testing.assert_allclose(sl.kernel_regression(K4, K4, Y), Y, atol=1e-8)


def test_regression_matches_explicit_formula_on_test_points():
    r = rng(6)
    X, Xt = r.normal(size=(8, 20)), r.normal(size=(5, 20))
    K, Kc = X @ X.T, Xt @ X.T
    y = r.normal(size=8)
    expected = Kc @ np.linalg.solve(K, y)
    np.testing.assert_allclose(sl.kernel_regression(K, Kc, y), expected, rtol=1e-9, atol=1e-12)


def test_ridge():
    r = rng(7)
    X, Xt = r.normal(size=(8, 6)), r.normal(size=(4, 6))
    K, Kc = X @ X.T, Xt @ X.T
    y = r.normal(size=8)
    lam = 0.3
    expected = Kc @ np.linalg.solve(K + lam * np.eye(8), y)
    np.testing.assert_allclose(sl.kernel_regression(K, Kc, y, ridge=lam), expected, rtol=1e-10)
    # with a ridge the training targets are no longer interpolated
    assert np.abs(sl.kernel_regression(K, K, y, ridge=lam) - y).max() > 1e-3
    with pytest.raises(ValueError, match="ridge"):
        sl.kernel_regression(K, Kc, y, ridge=-1.0)


def test_multi_output_equals_per_output_for_kronecker_kernel():
    r = rng(8)
    X, Xt = r.normal(size=(7, 12)), r.normal(size=(5, 12))
    K, Kc = X @ X.T, Xt @ X.T
    C = 3
    Y = r.normal(size=(7, C))
    K4 = np.einsum("ij,ab->ijab", K, np.eye(C))
    Kc4 = np.einsum("ij,ab->ijab", Kc, np.eye(C))
    joint = sl.kernel_regression(K4, Kc4, Y)
    assert joint.shape == (5, C)
    for a in range(C):
        np.testing.assert_allclose(joint[:, a], sl.kernel_regression(K, Kc, Y[:, a]), rtol=1e-9, atol=1e-12)


def test_singular_kernel_gives_min_norm_interpolant():
    """Linear kernel with P > D (rank D): prediction = x_test . w_min, w_min the min-norm least-squares weights."""
    r = rng(9)
    P, D = 20, 5
    X, Xt = r.normal(size=(P, D)), r.normal(size=(6, D))
    K, Kc = X @ X.T, Xt @ X.T
    y = r.normal(size=P)                       # not in the span: least squares
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(sl.kernel_regression(K, Kc, y), Xt @ w, rtol=1e-8, atol=1e-10)
    # y in the span: interpolated exactly
    y2 = X @ r.normal(size=D)
    np.testing.assert_allclose(sl.kernel_regression(K, K, y2), y2, rtol=1e-8, atol=1e-10)
    # duplicated training points (exactly singular Gram matrix, P < D)
    X3 = np.vstack([X[:3], X[:1]])
    X3 = np.hstack([X3, r.normal(size=(4, 10))])
    X3[3] = X3[0]
    K3 = X3 @ X3.T
    y3 = np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(sl.kernel_regression(K3, K3, y3), y3, atol=1e-8)


@pytest.mark.parametrize("smallest", [1e-2, 1e-9, 1e-13, 1e-17])
def test_ridgeless_regression_is_the_pseudo_inverse_at_every_condition(smallest):
    """Whichever solver runs (Cholesky when well conditioned, else the eigendecomposition), the
    prediction is that of the pseudo-inverse with eigenvalues under P eps lambda_max dropped, built
    here from a known spectrum."""
    r = rng(11)
    P = 60
    U = np.linalg.qr(r.normal(size=(P, P)))[0]
    lam = np.geomspace(1.0, smallest, P)
    K, Kc, y = (U * lam) @ U.T, r.normal(size=(7, P)), r.normal(size=P)
    keep = lam > P * np.finfo(float).eps
    expected = Kc @ (U[:, keep] @ ((U[:, keep].T @ y) / lam[keep]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.kernels.SingularKernelWarning)
        got = sl.kernel_regression(K, Kc, y)
    cond = min(1 / smallest, 1 / (P * np.finfo(float).eps))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e3 * cond * np.finfo(float).eps * np.abs(expected).max())


def test_cosine_similarity():
    r = rng(10)
    A, B = r.normal(size=(4, 4)), r.normal(size=(4, 4))
    expected = np.sum(A * B) / np.sqrt(np.sum(A * A) * np.sum(B * B))
    assert sl.cosine_similarity(A, B) == pytest.approx(expected, rel=1e-12)
    assert sl.cosine_similarity(A, 2.5 * A) == pytest.approx(1.0, abs=1e-14)
    assert sl.cosine_similarity(A, -A) == pytest.approx(-1.0, abs=1e-14)
    beta = r.normal(size=5)
    W = r.normal(size=(8, 5))
    M = W.T @ W
    bb = np.outer(beta, beta)
    expected = beta @ M @ beta / (np.linalg.norm(M) * (beta @ beta))
    assert sl.cosine_similarity(M, bb) == pytest.approx(expected, rel=1e-12)


def test_alignment_of_a_tensor_is_computed_where_it_lives_and_agrees():
    rng = np.random.default_rng(3)
    for K_shape, y_shape in (((6, 6), (6,)), ((5, 5, 3, 3), (5, 3))):
        K, y = rng.normal(size=K_shape), rng.normal(size=y_shape)
        assert sl.kernel_alignment(torch.as_tensor(K), y) == pytest.approx(sl.kernel_alignment(K, y), rel=1e-12)
    with pytest.raises(ValueError, match="expected a"):
        sl.kernel_alignment(torch.zeros(4, 4), np.ones(3))
    with pytest.raises(ValueError, match="undefined"):
        sl.kernel_alignment(torch.zeros(3, 3), np.ones(3))


def test_top_direction_angles_of_the_two_layer_kernel():
    """M = W^T W + |a|^2 I: its top eigenvector is W's top right-singular vector; the angle to it
    is 0, to an orthogonal direction 90, to a direction at 30 degrees 30 (sign-free)."""
    D, N = 4, 6
    e = np.eye(D)
    W = 3.0 * np.outer(rng(2).normal(size=N), e[1]) + 0.01 * rng(3).normal(size=(N, D))
    a = 0.1 * rng(4).normal(size=N)
    v30 = np.cos(np.pi / 6) * e[1] + np.sin(np.pi / 6) * e[2]
    out = sl.kernels.top_direction_angles(W, a, {"e1": -e[1], "e0": e[0], "30": v30})
    assert out["e1"] == pytest.approx(0.0, abs=0.5)
    assert out["e0"] == pytest.approx(90.0, abs=0.5)
    assert out["30"] == pytest.approx(30.0, abs=0.5)
    many = sl.kernels.top_direction_angles(np.stack([W, W[:, ::-1]]), np.stack([a, a]), {"e1": e[1]})
    assert many["e1"].shape == (2,) and many["e1"][0] == pytest.approx(0.0, abs=0.5)
    assert many["e1"][1] == pytest.approx(90.0, abs=0.5)          # columns reversed: top direction e_2
    with pytest.raises(ValueError, match="4 entries"):
        sl.kernels.top_direction_angles(W, a, {"short": e[1, :3]})
    with pytest.raises(ValueError, match="expected W"):
        sl.kernels.top_direction_angles(W, a[:3], {"e1": e[1]})
