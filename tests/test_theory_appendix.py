"""Closed forms of Appendices F, G and H.2 (silentlib.theory) against independent computations:
direct linear algebra, Monte Carlo over random subspaces and initializations, and training."""
import copy
import math

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib import theory as th


def _task(rng, D, alpha):
    beta = rng.standard_normal(D)
    beta /= np.linalg.norm(beta)
    wp = rng.standard_normal(D)
    wp -= beta * (beta @ wp)
    wp /= np.linalg.norm(wp)
    return beta, alpha * beta + math.sqrt(1 - alpha ** 2) * wp


@pytest.mark.parametrize("A", [0.0, 0.7, 3.0, np.inf])
def test_transfer_weights_is_the_kernel_interpolant(A):
    rng = np.random.default_rng(1)
    D, P = 12, 5
    X = rng.standard_normal((P, D))
    beta, w = _task(rng, D, 0.6)
    M = (1e7 if np.isinf(A) else A) * np.outer(beta, beta) + np.eye(D)
    direct = M @ X.T @ np.linalg.solve(X @ M @ X.T, X @ w)
    assert np.allclose(th.transfer_weights(A, X, beta, w), direct, atol=1e-5)


def test_transfer_error_is_the_large_D_average():
    rng = np.random.default_rng(2)
    D, P, A = 300, 150, 2.0
    for alpha in (0.0, 0.8, -1.0):
        errs = []
        for _ in range(6):
            beta, w = _task(rng, D, alpha)
            X = rng.standard_normal((P, D))
            errs.append(np.sum((th.transfer_weights(A, X, beta, w) - w) ** 2))
        assert abs(np.mean(errs) - th.transfer_error(A, alpha, P / D)) < 0.04
    assert th.transfer_error(0.0, 0.5, 0.3) == pytest.approx(0.7)
    # at alpha = 0 the spike can only hurt, draw by draw
    beta, w = _task(rng, 30, 0.0)
    X = rng.standard_normal((10, 30))
    e = [np.sum((th.transfer_weights(A_, X, beta, w) - w) ** 2) for A_ in (0.0, 1.0, 5.0)]
    assert e[0] <= e[1] <= e[2]


def test_finetune_weights_matches_training_a_pretrained_net():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    D, N, s = 16, 20, 1.5
    beta, w = _task(rng, D, -0.4)
    X1 = torch.tensor(rng.standard_normal((64, D)))
    net = sl.MLP(D, N, 2, sigma=1e-3)
    sl.train(net, X1, X1 @ torch.tensor(s * beta), lr=0.05, t_max=40, n_records=3,
             track_ntk=False, keep_kernels=False)
    X2 = sl.data.linear_teacher(6, D, seed=4).x
    ft = copy.deepcopy(net)
    sl.train(ft, X2, X2 @ torch.tensor(w), lr=0.05, t_max=200, n_records=3,
             track_ntk=False, keep_kernels=False)
    w_net = (ft.linears[0].weight.T @ ft.linears[1].weight[0]).detach().numpy()
    w_th = th.finetune_weights(X2.numpy(), beta, w, s)
    assert np.linalg.norm(w_net - w_th) < 0.02 * np.linalg.norm(w)
    assert th.finetune_error(0.3, 0.4, 1.0) == pytest.approx(2 * 0.6 * 0.7)


def test_kernel_interpolant_identity_and_invariant_spans():
    rng = np.random.default_rng(5)
    D, P = 10, 4
    X, y = rng.standard_normal((P, D)), rng.standard_normal(P)
    B = rng.standard_normal((D, D))
    M = B @ B.T + np.eye(D)
    w_id, w_star = th.kernel_interpolant_linear(M, X, y)
    assert np.allclose(w_id, M @ X.T @ np.linalg.solve(X @ M @ X.T, y))
    assert np.allclose(w_star, X.T @ np.linalg.solve(X @ X.T, y))
    assert np.linalg.norm(w_id - w_star) > 1e-2  # a generic M is not min-norm
    v = X.T @ rng.standard_normal(P)  # a spike inside the data span
    w_inv, _ = th.kernel_interpolant_linear(5 * np.outer(v, v) + np.eye(D), X, y)
    assert np.allclose(w_inv, w_star)


def test_min_norm_deviation_against_monte_carlo():
    rng = np.random.default_rng(6)
    D, P, N, sigma, q, s = 40, 16, 30, 0.02, 0.3, 1.0
    X = sl.data.linear_teacher(P, D, seed=7).x.numpy()
    Pi = np.linalg.pinv(X) @ X
    beta = Pi @ rng.standard_normal(D)
    beta /= np.linalg.norm(beta)
    dev2 = []
    for _ in range(150):
        W0 = rng.standard_normal((N, D)) * sigma / math.sqrt(D)
        a = rng.standard_normal(N)
        a *= math.sqrt(q) / np.linalg.norm(a)
        W = W0 @ (np.eye(D) - np.outer(beta, beta)) + np.outer(a, beta)  # after Phase I
        M = W.T @ W + (a @ a) * np.eye(D)
        w_K, w_star = th.kernel_interpolant_linear(M, X, s * X @ beta)
        dev2.append(np.sum((w_K - w_star) ** 2) / np.sum(w_star ** 2))
    pred = th.min_norm_deviation(sigma, P, D, q)
    assert abs(math.sqrt(np.mean(dev2)) / pred - 1) < 0.05


def test_imbalance_moments_against_monte_carlo():
    rng = np.random.default_rng(8)
    widths, sigma = (7, 12, 30, 1), 0.5
    mom = th.imbalance_moments(widths, sigma)
    assert len(mom) == 2
    diag, off = [[], []], [[], []]
    for _ in range(2000):
        Ws = [rng.standard_normal((b, a)) * sigma / math.sqrt(a) for a, b in zip(widths, widths[1:])]
        for l in range(2):
            G = Ws[l] @ Ws[l].T - Ws[l + 1].T @ Ws[l + 1]
            diag[l].append(np.trace(G) / G.shape[0])
            off[l].append(G[0, 1])
    for l in range(2):
        m = mom[l]
        assert abs(np.mean(diag[l]) - m["mean"]) < 4 * m["sd_mean_diag"] / math.sqrt(2000)
        assert np.std(diag[l]) == pytest.approx(m["sd_mean_diag"], rel=0.06)
        assert np.std(off[l]) == pytest.approx(m["rms_off"], rel=0.06)
    assert mom[0]["mean"] == pytest.approx(sigma ** 2 * (1 - 30 / 12))
    assert th.imbalance_moments((5, 8, 8, 1), 1.0)[0]["mean"] == 0.0


def test_appendix_functions_reject_bad_input():
    X = np.ones((3, 2))
    with pytest.raises(ValueError):
        th.transfer_weights(1.0, X, np.array([1.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError):
        th.transfer_error(1.0, 1.5, 0.5)
    with pytest.raises(ValueError):
        th.imbalance_moments((3, 4), 0.1)
