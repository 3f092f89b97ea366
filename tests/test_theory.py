"""Tests of silentlib.theory: closed forms against independent ODE solutions, and theory against training.

Every network run is small (D = 10, N = 20, P <= 40, float64, one torch thread) and
takes a few seconds at most; each is run once per module through a fixture.
"""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import silentlib as sl
from silentlib import theory as th
from silentlib.data import linear_teacher, whiten


D, N, P = 10, 20, 40


def qr_ode(t, s, q0, r0):
    """Reference: the (q, r) ODE dq/dt = 2(s - r) r, dr/dt = 2(s - r) q integrated numerically."""
    sol = scipy.integrate.solve_ivp(lambda _, z: [2 * (s - z[1]) * z[1], 2 * (s - z[1]) * z[0]],
                                    (0, t[-1]), [q0, r0], t_eval=t, method="DOP853", rtol=1e-12, atol=1e-16)
    assert sol.success
    return sol.y


# --------------------------------------------------------------------------- pure theory
@pytest.mark.parametrize("s,q0,r0", [(1.0, 1e-4, 0.0), (1.3, 2e-4, 5e-5), (0.7, 3e-3, -2e-3),
                                     (2.0, 1e-3, 1e-3), (1.0, 0.05, 0.01)])
def test_two_layer_qr_solves_the_qr_ode(s, q0, r0):
    t = np.linspace(0.0, 15.0, 301)
    q_ref, r_ref = qr_ode(t, s, q0, r0)
    q, r = th.two_layer_qr(t, s, q0, r0)
    assert np.max(np.abs(q - q_ref)) < 1e-9 * s
    assert np.max(np.abs(r - r_ref)) < 1e-9 * s
    # conserved q^2 - r^2 and the limits r -> s, q -> sqrt(s^2 + kappa^2)
    kappa2 = q0 ** 2 - r0 ** 2
    np.testing.assert_allclose(q ** 2 - r ** 2, kappa2, rtol=1e-8, atol=1e-14)
    q_end, r_end = th.two_layer_qr(200.0, s, q0, r0)
    assert abs(r_end - s) < 1e-12 and abs(q_end - math.sqrt(s * s + kappa2)) < 1e-12


def test_two_layer_qr_reduces_to_phase1_early_and_differs_late():
    s, q0, r0 = 1.0, 1e-4, 2e-5
    t1, t2 = th.phase_times(s, (q0 + r0) / 2)
    t = np.linspace(0, 0.5 * t2, 50)
    q, r = th.two_layer_qr(t, s, q0, r0)
    qa, ra = th.two_layer_phase1(t, s, q0, r0)
    # r stays below about s * sqrt(q0/s) here, so the relative correction is a few percent at most
    assert np.max(np.abs(q / qa - 1)) < 0.02 and np.max(np.abs(r[1:] / ra[1:] - 1)) < 0.02
    assert np.max(np.abs(q[:10] / qa[:10] - 1)) < 1e-3
    qa_late, ra_late = th.two_layer_phase1(2 * t2, s, q0, r0)
    assert ra_late > 10 * s                       # the linearization runs away; the full solution saturates
    assert th.two_layer_qr(2 * t2, s, q0, r0)[1] < s


def test_paper_c5_formula_agrees_to_leading_order():
    s, q0 = 1.0, 1e-4
    t = np.linspace(0, 10, 200)
    den = np.expm1(2 * s * t) + 2 * s / q0
    r_paper, q_paper = 2 * s * np.sinh(2 * s * t) / den, 2 * s * np.cosh(2 * s * t) / den
    q, r = th.two_layer_qr(t, s, q0)
    assert np.max(np.abs(r - r_paper)) < 10 * q0 and np.max(np.abs(q - q_paper)) < 10 * q0


def test_u_squared_is_the_logistic_of_q_plus_r():
    s, q0, r0 = 1.5, 2e-4, -5e-5
    u0sq = (q0 + r0) / 2
    t = np.linspace(0, 10, 101)
    c = th.u_squared(t, s, u0sq)
    ref = scipy.integrate.solve_ivp(lambda _, c: 2 * c * (s - c), (0, 10), [u0sq], t_eval=t,
                                    rtol=1e-12, atol=1e-16).y[0]
    np.testing.assert_allclose(c, ref, rtol=1e-8)
    q, r = th.two_layer_qr(t, s, q0, r0)
    assert np.max(np.abs((q + r) / 2 - c)) < 10 * q0
    t1, t2 = th.phase_times(s, u0sq)
    # t1 is the e-folding time of Phase I's growth q0 cosh(2st) + r0 sinh(2st), independent of sigma
    q_a, _ = th.two_layer_phase1(np.array([9 * t1, 10 * t1]), s, q0, r0)
    assert q_a[1] / q_a[0] == pytest.approx(math.e, rel=1e-6)
    assert th.u_squared(t2, s, u0sq) == pytest.approx(s / 2, rel=1e-12)


def test_two_layer_loss_normalized():
    s, q0, r0 = 1.0, 1e-4, 3e-5
    t = np.array([0.0, 2.0, 6.0, 30.0])
    loss = th.two_layer_loss(t, s, q0, r0)
    r = th.two_layer_qr(t, s, q0, r0)[1]
    np.testing.assert_allclose(loss, (s - r) ** 2 / (s - r0) ** 2)
    assert loss[0] == pytest.approx(1.0) and loss[-1] < 1e-20


def test_two_layer_q0_formula():
    assert th.two_layer_q0(0.1, 20, 10) == pytest.approx(0.5 * 0.01 * 3)
    # empirical mean over random initializations of the library's MLP
    torch.manual_seed(0)
    beta = torch.zeros(D)
    beta[0] = 1.0
    qs = [th.two_layer_qr_of(sl.MLP(D, N, 2, sigma=0.1), beta) for _ in range(400)]
    q_mean, r_mean = np.mean(qs, axis=0)
    assert q_mean == pytest.approx(th.two_layer_q0(0.1, N, D), rel=0.06)
    assert abs(r_mean) < 0.06 * q_mean


def _w_of_c_L4(c, s, c0):
    """Exact time to go from c0 to c under dc/dt = 4 c^{3/2} (s - c): with w = sqrt(c),
    dw/dt = 2 w^2 (s - w^2) and int dw / (w^2 (s - w^2)) = -1/(s w) + artanh(w/sqrt s)/s^{3/2}."""
    F = lambda c: -1 / (s * np.sqrt(c)) + np.arctanh(np.sqrt(c / s)) / s ** 1.5
    return (F(c) - F(c0)) / 2


def test_deep_linear_scale_closed_forms():
    s, c0 = 1.2, 1e-5
    t = np.linspace(0, 8, 41)
    np.testing.assert_allclose(th.deep_linear_scale(t, s, 2, c0), s * np.exp(2 * s * t) / (np.expm1(2 * s * t) + s / c0),
                               rtol=1e-12)
    np.testing.assert_allclose(th.deep_linear_scale(t, s, 1, c0), s - (s - c0) * np.exp(-t), rtol=1e-12)
    # L = 4: the implicit exact solution t(c)
    c = np.geomspace(2e-5, 0.999 * s, 40)
    tc = _w_of_c_L4(c, s, c0)
    np.testing.assert_allclose(th.deep_linear_scale(tc, s, 4, c0), c, rtol=1e-7)
    # unsorted input keeps its order
    np.testing.assert_allclose(th.deep_linear_scale(tc[::-1], s, 4, c0), c[::-1], rtol=1e-7)
    # the relaxation tail after c ~ s (where the integration stops) continues the solution smoothly
    c_tail = _w_of_c_L4(np.array([s * (1 - 1e-7), s * (1 - 1e-11)]), s, c0)
    np.testing.assert_allclose(s - th.deep_linear_scale(c_tail, s, 4, c0), [s * 1e-7, s * 1e-11], rtol=1e-4)


def test_deep_linear_scale_long_plateaus():
    """Tiny c0 at depth 4-6 (the chapter's slider corners): plateau, rise at t_half, then c = s."""
    for L, c0 in ((4, 1e-12), (5, 1e-9), (6, 1e-9)):
        t_half = th.half_loss_time(1.0, L, c0)
        loss = th.deep_linear_loss(np.array([0.5 * t_half, t_half, 3 * t_half]), 1.0, L, c0)
        assert loss[0] > 0.99 and abs(loss[1] - 0.5) < 1e-3 and loss[2] < 1e-12, (L, c0, loss)


def test_half_loss_time():
    s, c0 = 1.2, 1e-5
    ch = s - (s - c0) / math.sqrt(2)
    assert th.half_loss_time(s, 4, c0) == pytest.approx(_w_of_c_L4(ch, s, c0), rel=1e-9)
    for L in (2, 3, 5):
        t_half = th.half_loss_time(s, L, c0)
        ref, _ = scipy.integrate.quad(lambda c: 1 / (L * c ** (2 - 2 / L) * (s - c)), c0, ch,
                                      points=np.geomspace(c0, ch, 30)[1:-1], limit=500, epsrel=1e-11)
        assert t_half == pytest.approx(ref, rel=1e-8)
        assert th.deep_linear_loss(t_half, s, L, c0) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("L", [3, 4, 6])
def test_half_loss_time_asymptotic(L):
    s = 0.8
    for u0 in (1e-2, 1e-3):
        exact = th.half_loss_time(s, L, u0 ** L)
        lead = th.half_loss_time_asymptotic(s, L, u0, constant=False)
        assert lead == pytest.approx(u0 ** (2 - L) / (s * (L - 2)))
        full = th.half_loss_time_asymptotic(s, L, u0)
        # the constant makes the error vanish as u0 -> 0 (it is O(u0^2)); the leading term alone is O(1) off
        assert abs(full - exact) < 20 * u0 ** 2 * s ** (2 / L - 2) + 1e-13 * exact   # + float64 rounding of t ~ 1e11
        assert abs(lead - exact) > 0.1 * s ** (2 / L - 2)
    s, u0 = 1.0, 1e-3
    assert th.half_loss_time_asymptotic(s, 2, u0) == pytest.approx(th.half_loss_time(s, 2, u0 ** 2), rel=1e-5)


def test_final_alignment_formula_against_constructed_kernels():
    rng = np.random.default_rng(1)
    for (P_, D_) in [(30, 12), (8, 20)]:
        X = whiten(rng.standard_normal((P_, D_)))
        Vt = np.linalg.svd(X, full_matrices=False)[2][: min(P_, D_)]
        beta = Vt.T @ rng.standard_normal(Vt.shape[0])
        beta /= np.linalg.norm(beta)
        y = 1.7 * X @ beta
        for L in (1, 2, 3, 5):
            K = X @ ((L - 1) * np.outer(beta, beta) + np.eye(D_)) @ X.T
            assert sl.kernel_alignment(K, y) == pytest.approx(th.final_alignment(L, min(P_, D_)), rel=1e-10)
    assert th.final_alignment(2, 30) == pytest.approx(0.3482, abs=1e-4)   # NOTES.md, D = 30, P = 100


def test_mode_times_formula():
    s = np.array([3.0, 2.0, 1.0])
    t = th.mode_times(s, 1e-4)
    np.testing.assert_allclose(t, np.log(s / 1e-4 - 1) / (2 * s))
    for a in range(3):
        assert th.u_squared(t[a], s[a], 1e-4) == pytest.approx(s[a] / 2)
    assert np.all(np.diff(t) > 0)


def _balanced_rank_one_mlp(D_, N_, L, u, seed):
    rng = np.random.default_rng(seed)
    rs = [rng.standard_normal(D_)] + [rng.standard_normal(N_) for _ in range(L - 1)]
    rs = [r / np.linalg.norm(r) for r in rs] + [np.ones(1)]
    model = sl.MLP(D_, N_, L, sigma=1.0)
    with torch.no_grad():
        for l, lin in enumerate(model.linears):
            lin.weight.copy_(torch.as_tensor(u * np.outer(rs[l + 1], rs[l])))
    return model, rs[0]


@pytest.mark.parametrize("L", [2, 3, 4])
def test_deep_linear_ntk_matches_empirical_ntk(L):
    u = 1.3
    model, r1 = _balanced_rank_one_mlp(7, 9, L, u, seed=L)
    rng = np.random.default_rng(10 + L)
    x1, x2 = rng.standard_normal((5, 7)), rng.standard_normal((6, 7))
    K = sl.ntk(model, torch.as_tensor(x1), torch.as_tensor(x2)).numpy()
    Kth = th.deep_linear_ntk(x1, x2, u, r1, L)
    assert np.max(np.abs(K - Kth)) < 1e-10 * np.max(np.abs(Kth))
    assert np.allclose(th.deep_linear_ntk(x1, None, u, r1, L), th.deep_linear_ntk(x1, x1, u, r1, L))


def test_gradient_flow_kernel_solution_constant_kernel():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    K = A @ A.T / 6 + 0.1 * np.eye(6)
    Kt = rng.standard_normal((4, 6))
    y, f0, ft0 = rng.standard_normal(6), rng.standard_normal(6) * 0.1, rng.standard_normal(4) * 0.1
    T, eta = 3.0, 0.5
    f, ft = th.gradient_flow_kernel_solution(lambda t: K, lambda t: Kt, y, f0, ft0, np.linspace(0, T, 4), eta)
    decay = scipy.linalg.expm(-eta * K * T)
    np.testing.assert_allclose(f, y - decay @ (y - f0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ft, ft0 + Kt @ np.linalg.solve(K, (np.eye(6) - decay) @ (y - f0)), rtol=1e-6, atol=1e-8)
    path, path_t = th.gradient_flow_kernel_solution(lambda t: K, None, y, f0, None, np.linspace(0, T, 4), eta,
                                                    return_path=True)
    assert path.shape == (4, 6) and path_t is None and np.allclose(path[0], f0)


def test_silent_schedule_gives_the_final_kernel_predictor_as_sigma_to_0():
    """Theorem 1 (eq. 3): under the silent schedule the learned test function tends to k_inf^T K_inf^{-1} y."""
    P_, D_, Q, L = 8, 10, 5, 3
    rng = np.random.default_rng(3)
    X, Xt = whiten(rng.standard_normal((P_, D_)), 0.0, x_test=rng.standard_normal((Q, D_)))
    beta = rng.standard_normal(D_)
    beta /= np.linalg.norm(beta)
    y = X @ beta
    torch.manual_seed(0)
    relu = sl.MLP(D_, 50, 2, activation="relu", sigma=1.0)
    K0 = sl.ntk(relu, torch.as_tensor(X)).numpy()
    K0t = sl.ntk(relu, torch.as_tensor(Xt), torch.as_tensor(X)).numpy()
    M = np.outer(beta, beta) + np.eye(D_)
    Ki, Kit = X @ M @ X.T, Xt @ M @ X.T
    nrm0, nrmi = np.linalg.norm(K0), np.linalg.norm(Ki)
    target = sl.kernel_regression(Ki, Kit, y)
    lazy = sl.kernel_regression(K0, K0t, y)
    assert np.linalg.norm(lazy - target) > 0.1 * np.linalg.norm(target)   # the two kernels really differ
    errors = []
    for sigma in (0.3, 0.1, 0.03):
        tau = sigma ** (2 - L)     # the paper's Phase-I duration for depth L
        sched = th.silent_schedule(K0 / nrm0, Ki / nrmi, sigma, L, tau)
        sched_t = th.silent_schedule(K0t / nrm0, Kit / nrmi, sigma, L, tau)
        grid = np.concatenate([np.linspace(0, tau, 5), tau + np.linspace(0, 40 + 4 * math.log(1 / sigma), 40)[1:]])
        assert np.allclose(sched(tau), sched(tau + 1e-12), rtol=1e-6)   # continuous at tau
        f, ft = th.gradient_flow_kernel_solution(sched, sched_t, y, np.zeros(P_), np.zeros(Q), grid, eta=nrmi)
        np.testing.assert_allclose(f, y, atol=1e-5)
        errors.append(np.linalg.norm(ft - target) / np.linalg.norm(target))
    # Theorem 1: error O(sigma^{2L-2} tau) = O(sigma^L) = O(sigma^3): a factor ~27 per factor 3 in sigma
    print("relative errors", errors)
    assert errors[0] > 10 * errors[1] > 100 * errors[2] and errors[2] < 1e-3


@pytest.mark.parametrize("call", [
    lambda: th.two_layer_q0(0.0, 10, 10), lambda: th.two_layer_q0(0.1, -1, 10),
    lambda: th.two_layer_phase1(1.0, -1.0, 1e-3), lambda: th.two_layer_qr(1.0, 1.0, 0.0),
    lambda: th.two_layer_qr(1.0, 1.0, 1e-3, 2e-3), lambda: th.two_layer_qr(-1.0, 1.0, 1e-3),
    lambda: th.two_layer_qr(1.0, 1.0, 1e-3, -1e-3), lambda: th.u_squared(1.0, 1.0, 0.0),
    lambda: th.phase_times(1.0, 0.6), lambda: th.mode_times([1.0, -1.0], 1e-3),
    lambda: th.deep_linear_scale(1.0, 1.0, 0, 1e-3), lambda: th.deep_linear_scale(1.0, 1.0, 2.5, 1e-3),
    lambda: th.deep_linear_scale(1.0, 1.0, 3, -1e-3), lambda: th.half_loss_time(1.0, 3, 1.0),
    lambda: th.half_loss_time_asymptotic(0.0, 3, 1e-2), lambda: th.final_alignment(0, 5),
    lambda: th.final_alignment(2, 0), lambda: th.deep_linear_ntk(np.ones((2, 3)), None, 1.0, np.ones(3), 2),
    lambda: th.silent_schedule(np.eye(2), np.eye(3), 0.1, 2, 1.0),
    lambda: th.silent_schedule(np.eye(2), np.eye(2), 0.1, 2, 0.0),
    lambda: th.gradient_flow_kernel_solution(lambda t: np.eye(2), None, np.ones(2), np.zeros(2), None, [0.0]),
    lambda: th.two_layer_qr_of(sl.MLP(3, 4, 3), np.array([1.0, 0, 0])),
    lambda: th.two_layer_qr_of(sl.MLP(3, 4, 2), np.array([1.0, 1.0, 0])),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- theory vs training
S = 1.0


@pytest.fixture(scope="module")
def teacher():
    return linear_teacher(P, D, s=S, seed=0)


@pytest.fixture(scope="module")
def two_layer_run(teacher):
    torch.manual_seed(0)
    model = sl.MLP(D, N, 2, sigma=0.01)
    q0, r0 = th.two_layer_qr_of(model, teacher.beta)
    t2 = th.phase_times(S, (q0 + r0) / 2)[1]
    observe = {"q": lambda m: th.two_layer_qr_of(m, teacher.beta)[0], "r": lambda m: th.two_layer_qr_of(m, teacher.beta)[1]}
    tr = sl.train(model, teacher.x, teacher.y, lr=0.005, t_max=2 * t2 + 3, n_records=120, observe=observe)
    return tr, q0, r0


def test_two_layer_net_follows_qr_theory(teacher, two_layer_run):
    """q(t), r(t) of a trained net (from its weights, and read off its NTK and predictions) follow
    two_layer_qr within 0.02 s over the whole trajectory (lr = 0.005: gradient descent ~ gradient flow)."""
    tr, q0, r0 = two_layer_run
    X, b = teacher.x.numpy(), teacher.beta.numpy()
    q_w, r_w = tr.observables["q"], tr.observables["r"]
    q, r = th.two_layer_qr(tr.t, S, q0, r0)
    assert np.max(np.abs(r_w - r)) < 0.02 * S
    assert np.max(np.abs(q_w - q)) < 0.02 * S
    # whitened, P >= D: w_eff = X^T f / P, so r = beta . w_eff; K = X M X^T, so q = beta^T M beta / 2 = (Xb)^T K (Xb) / (2 P^2)
    r_meas = tr.predictions @ (X @ b) / P
    q_meas = np.einsum("i,nij,j->n", X @ b, tr.kernels, X @ b) / (2 * P * P)
    q_helper, r_helper = th.two_layer_qr_from_trajectory(tr, teacher.x, teacher.beta)
    np.testing.assert_allclose(q_helper, q_meas, rtol=1e-9)
    np.testing.assert_allclose(r_helper, r_meas, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(r_meas, r_w, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(q_meas, q_w, rtol=1e-8)
    assert np.max(np.abs(r_meas - r)) < 0.02 * S
    assert np.max(np.abs(q_meas - q)) < 0.02 * S
    assert r_meas[-1] == pytest.approx(S, abs=1e-4)
    assert tr.loss[-1] / tr.loss[0] < 1e-8


def test_two_layer_final_kernel_is_rank_one_plus_isotropic(teacher, two_layer_run):
    """K_inf = u^2 X (beta beta^T + I) X^T with u^2 -> s (eq. 8): relative Frobenius error < 1e-3."""
    tr, _, _ = two_layer_run
    X, b = teacher.x.numpy(), teacher.beta.numpy()
    Kth = S * X @ (np.outer(b, b) + np.eye(D)) @ X.T
    assert np.linalg.norm(tr.Kinf - Kth) / np.linalg.norm(Kth) < 1e-3
    # final alignment L / sqrt(L^2 + r - 1) with L = 2, r = D, within 2%
    assert sl.kernel_alignment(tr.Kinf, teacher.y) == pytest.approx(th.final_alignment(2, D), rel=0.02)


DEEP_L3_SIGMAS = (0.02, 0.04, 0.08)


@pytest.fixture(scope="module")
def deep_runs(teacher):
    runs = {}
    for L, sigma in [(3, s) for s in DEEP_L3_SIGMAS] + [(4, 0.2)]:
        torch.manual_seed(1)        # the same draw for every sigma: the initial weights scale exactly with sigma
        model = sl.MLP(D, N, L, sigma=sigma)
        t_max = 1.3 * th.half_loss_time_asymptotic(S, L, sigma) + 10
        runs[L, sigma] = sl.train(model, teacher.x, teacher.y, lr=0.02, t_max=t_max, track_ntk=False,
                                  n_records=400)
    return runs


@pytest.mark.parametrize("L,sigma", [(3, 0.04), (3, 0.08), (4, 0.2)])
def test_deep_linear_net_follows_scale_ode(teacher, deep_runs, L, sigma):
    """c(t) = beta . w_eff(t) follows deep_linear_scale shifted to the same half-loss time, within 0.02 s."""
    tr = deep_runs[L, sigma]
    X, b = teacher.x.numpy(), teacher.beta.numpy()
    c = tr.predictions @ (X @ b) / P
    t_half = tr.time_to_loss_fraction(0.5)
    c0 = 1e-7                        # any small start: solutions differ only by a time shift
    shift = t_half - th.half_loss_time(S, L, c0)
    assert shift < 0                 # the net's start is effectively far larger than c0
    c_theory = th.deep_linear_scale(tr.t - shift, S, L, c0)
    assert np.max(np.abs(c - c_theory)) < 0.02 * S
    assert c[-1] == pytest.approx(S, abs=1e-3)


def test_deep_linear_half_loss_time_sigma_exponent(deep_runs):
    """t_half ~ sigma^{-(L-2)}: for L = 3 the log-log slope over sigma in [0.02, 0.08] is -1 within 10%;
    subtracting the O(1) constant C_3 s^{-4/3} of half_loss_time_asymptotic, within 3%."""
    sig = np.array(DEEP_L3_SIGMAS)
    t_half = np.array([deep_runs[3, s].time_to_loss_fraction(0.5) for s in sig])
    slope = np.polyfit(np.log(sig), np.log(t_half), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)
    C = th.half_loss_time_asymptotic(S, 3, 1.0) - th.half_loss_time_asymptotic(S, 3, 1.0, constant=False)
    assert C < 0
    slope_c = np.polyfit(np.log(sig), np.log(t_half - C), 1)[0]
    assert slope_c == pytest.approx(-1.0, abs=0.03)


def test_deep_linear_final_alignment(teacher, deep_runs):
    """The final NTK of the L = 3 net has alignment L / sqrt(L^2 + D - 1) within 2%."""
    tr = deep_runs[3, 0.04]
    assert sl.kernel_alignment(tr.Kinf, teacher.y) == pytest.approx(th.final_alignment(3, D), rel=0.02)


def test_mode_times_match_multi_output_training():
    """Each mode strength z_a^T (A W) v_a of a C = 3 two-layer net crosses s_a/2 where mode_times says.

    Over seeds 0-5 the two strong modes come 0.5-1.4% late and the weakest 1-5% late (the theory
    is leading order in sigma^2, and the learned strong modes slow the weak one down): 3% and 8%."""
    C = 3
    T = linear_teacher(P, D, out_dim=C, singular_values=[3.0, 2.0, 1.0], seed=0)
    s, Z, V = th.teacher_modes(T.beta)
    np.testing.assert_allclose(s, [3.0, 2.0, 1.0])
    torch.manual_seed(0)
    model = sl.MLP(D, N, 2, out_dim=C, sigma=0.01)
    q0, r0 = th.two_layer_mode_qr_of(model, Z, V)
    t_theory = th.mode_times(s, (q0 + r0) / 2)
    tr = sl.train(model, T.x, T.y, lr=0.005, t_max=1.5 * t_theory.max(), track_ntk=False, n_records=400)
    B = np.einsum("npc,pd->ncd", tr.predictions, T.x.numpy()) / P          # A W at every record
    strength = np.einsum("ca,ncd,da->na", Z, B, V)
    t_meas = np.array([sl.crossing_time(tr.t, strength[:, a], s[a] / 2) for a in range(C)])
    np.testing.assert_allclose(t_meas[:2], t_theory[:2], rtol=0.03)
    np.testing.assert_allclose(t_meas[2], t_theory[2], rtol=0.08)
    assert np.all(np.diff(t_meas) > 0)   # strongest mode first
