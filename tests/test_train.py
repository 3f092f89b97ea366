"""train(): gradient descent against closed forms for linear models, records, optimizers, errors."""
import copy
import math

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib.train import record_steps



def linear_problem(P=8, D=20, Q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, D, generator=g)
    y = torch.randn(P, generator=g)
    xt = torch.randn(Q, D, generator=g)
    return x, y, xt


def test_linear_model_converges_to_kernel_regression():
    """f = w.x has the constant NTK K = X X^T; GD from w0 converges (P < D) to
    f0 + kernel interpolation of the initial residual, and from w0 = 0 to kernel regression."""
    x, y, xt = linear_problem()
    torch.manual_seed(0)
    model = sl.MLP(20, 1, 1, sigma=1.0)
    f0_train, f0_test = model(x).detach().numpy(), model(xt).detach().numpy()
    K, Kc = (x @ x.T).numpy(), (xt @ x.T).numpy()
    lam = np.linalg.eigvalsh(K / 8)
    lr = 1.0 / lam.max()                       # stable: lr * max eig(K/P) = 1 < 2
    t_max = 60.0 / lam.min()                   # residual shrinks by e^-60 or better
    tr = sl.train(model, x, y, lr=lr, t_max=t_max, x_test=xt, n_records=30)
    expected = f0_test + sl.kernel_regression(K, Kc, y.numpy() - f0_train)
    np.testing.assert_allclose(tr.test_predictions[-1], expected, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(tr.predictions[-1], y.numpy(), atol=1e-10)
    # the NTK of a linear model never changes
    np.testing.assert_allclose(tr.kernels, np.broadcast_to(K, tr.kernels.shape), rtol=1e-12)
    np.testing.assert_allclose(tr.K0_test, Kc, rtol=1e-12)

    zero = sl.MLP(20, 1, 1)
    with torch.no_grad():
        zero.linears[0].weight.zero_()
    tr0 = sl.train(zero, x, y, lr=lr, t_max=t_max, x_test=xt, track_ntk=False)
    np.testing.assert_allclose(tr0.test_predictions[-1], sl.kernel_regression(K, Kc, y.numpy()),
                               rtol=1e-9, atol=1e-10)
    # the min-norm interpolant x_test . X^T (X X^T)^-1 y, written out
    w_star = x.T @ torch.linalg.solve(x @ x.T, y)
    np.testing.assert_allclose(tr0.test_predictions[-1], (xt @ w_star).numpy(), rtol=1e-9, atol=1e-10)


def test_discrete_residual_dynamics_of_linear_model():
    """For f = w.x, one GD step maps the residual r -> (I - lr K / P) r, so the record at
    step k holds (I - lr K/P)^k r_0: checks the loss normalization 1/(2P) and t = lr * step."""
    x, y, _ = linear_problem(P=6, D=10, seed=1)
    torch.manual_seed(1)
    model = sl.MLP(10, 1, 1)
    lr = 0.02
    tr = sl.train(model, x, y, lr=lr, t_max=5.0, track_ntk=False, n_records=20)
    K = (x @ x.T).numpy()
    step_map = np.eye(6) - lr * K / 6
    r0 = tr.predictions[0] - y.numpy()
    for k, r in zip(tr.steps, tr.predictions - y.numpy()):
        np.testing.assert_allclose(r, np.linalg.matrix_power(step_map, int(k)) @ r0, rtol=1e-9, atol=1e-12)


def test_one_step_is_plain_gradient_descent():
    x, y, _ = linear_problem(P=5, D=7, seed=2)
    torch.manual_seed(2)
    model = sl.MLP(7, 3, 2, activation="tanh")
    before = copy.deepcopy(model)
    lr = 0.1
    sl.train(model, x, y, lr=lr, t_max=lr, track_ntk=False)
    loss = 0.5 * ((before(x) - y) ** 2).sum() / 5
    grads = torch.autograd.grad(loss, list(before.parameters()))
    for p_after, p_before, g in zip(model.parameters(), before.parameters(), grads):
        torch.testing.assert_close(p_after, p_before - lr * g, rtol=1e-12, atol=1e-14)


def test_whitened_half_loss_time():
    """Whitened data (K / P = I): loss(t) = loss(0) (1 - lr)^(2 t / lr) -> e^(-2t); half at ln 2 / 2."""
    P, D = 6, 12
    g = torch.Generator().manual_seed(3)
    Qm, _ = torch.linalg.qr(torch.randn(D, P, generator=g))
    x = math.sqrt(P) * Qm.T                    # every singular value sqrt(P)
    y = torch.randn(P, generator=g)
    lr = 1e-3
    tr = sl.train(sl.MLP(D, 1, 1), x, y, lr=lr, t_max=2.0, track_ntk=False, n_records=200)
    exact = 0.5 * math.log(2) / (-math.log(1 - lr) / lr)   # (1-lr)^(2t/lr) = 1/2
    assert tr.time_to_loss_fraction(0.5) == pytest.approx(exact, rel=2e-3)
    assert exact == pytest.approx(math.log(2) / 2, rel=1e-3)


def test_time_grid():
    x, y, _ = linear_problem(P=4, D=6, seed=4)
    lr, t_max = 0.01, 30.0
    tr = sl.train(sl.MLP(6, 4, 2), x, y, lr=lr, t_max=t_max, n_records=60, track_ntk=False)
    n_steps = round(t_max / lr)
    assert tr.t[0] == 0.0 and tr.steps[0] == 0
    assert tr.t[-1] == pytest.approx(t_max, rel=1e-12) and tr.steps[-1] == n_steps
    np.testing.assert_allclose(tr.t, tr.steps * lr, rtol=1e-15)
    assert np.all(np.diff(tr.steps) > 0)
    assert 40 <= len(tr.t) <= 60
    # log-spaced: far from step 1 (where rounding to integers matters) the ratio of
    # successive record times is constant, (n_steps)^(1 / (number of intervals))
    late = tr.steps[tr.steps >= 100].astype(float)
    ratios = late[1:] / late[:-1]
    assert ratios.std() / ratios.mean() < 0.01
    assert ratios.mean() == pytest.approx(n_steps ** (1 / 58), rel=0.01)
    assert tr.lr == lr and tr.optimizer == "gd"


def test_every_record_grid_ends_at_the_last_step():
    """n_records = 2 once made a one-step grid: train(..., n_records=2) stopped after one step."""
    for n_steps in (1, 2, 7, 50, 12345):
        for n_records in (1, 2, 3, 10, 200):
            steps = record_steps(n_steps, n_records)
            assert steps[0] == 0 and steps[-1] == n_steps and np.all(np.diff(steps) > 0), (n_steps, n_records)
    x, y, _ = linear_problem(P=4, D=6, seed=4)
    tr = sl.train(sl.MLP(6, 4, 2), x, y, lr=0.01, t_max=0.5, n_records=2, track_ntk=False)
    assert list(tr.steps) == [0, 50] and tr.t[-1] == pytest.approx(0.5)


def test_records_match_recomputation():
    torch.manual_seed(5)
    P, D, C = 10, 6, 2
    x, Y, xt = torch.randn(P, D), torch.randn(P, C), torch.randn(4, D)
    model = sl.MLP(D, 16, 2, out_dim=C, activation="relu", sigma=1.0)
    init = copy.deepcopy(model)
    observe = {"w1_norm": lambda m: m.linears[0].weight.norm(),
               "a": lambda m: m.linears[1].weight.detach().clone()}
    tr = sl.train(model, x, Y, lr=0.05, t_max=5.0, x_test=xt, n_records=15, observe=observe)
    n = len(tr.t)
    assert tr.predictions.shape == (n, P, C) and tr.test_predictions.shape == (n, 4, C)
    assert tr.kernels.shape == (n, P, P, C, C)
    # loss from the recorded predictions
    loss = 0.5 * ((tr.predictions - Y.numpy()) ** 2).sum(axis=(1, 2)) / P
    np.testing.assert_allclose(tr.loss, loss, rtol=1e-12)
    assert tr.loss[-1] < tr.loss[0]
    # alignment and kernel norm from the recorded kernels, written out
    y = Y.numpy().reshape(-1)
    for k in range(n):
        Km = tr.kernels[k].transpose(0, 2, 1, 3).reshape(P * C, P * C)
        norm = np.sqrt((Km ** 2).sum())
        assert tr.kernel_norm[k] == pytest.approx(norm, rel=1e-12)
        assert tr.alignment[k] == pytest.approx(y @ Km @ y / (norm * (y @ y)), rel=1e-10)
    # initial and final kernels and predictions
    np.testing.assert_allclose(tr.K0, sl.ntk(init, x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(tr.kernels[0], tr.K0, rtol=1e-12)
    np.testing.assert_allclose(tr.K0_test, sl.ntk(init, xt, x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(tr.Kinf, sl.ntk(model, x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(tr.kernels[-1], tr.Kinf, rtol=1e-12)
    np.testing.assert_allclose(tr.Kinf_test, sl.ntk(model, xt, x).numpy(), rtol=1e-12)
    assert np.abs(tr.Kinf - tr.K0).max() > 1e-3          # the relu network's kernel moved
    np.testing.assert_allclose(tr.predictions[0], init(x).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(tr.test_predictions[-1], model(xt).detach().numpy(), rtol=1e-12)
    # observables
    assert tr.observables["w1_norm"].shape == (n,)
    assert tr.observables["a"].shape == (n, C, 16)
    assert tr.observables["w1_norm"][0] == pytest.approx(float(init.linears[0].weight.detach().norm()), rel=1e-12)
    np.testing.assert_allclose(tr.observables["a"][-1], model.linears[1].weight.detach().numpy(), rtol=1e-12)


def test_untracked_kernel():
    x, y, _ = linear_problem(P=5, D=4, seed=6)
    tr = sl.train(sl.MLP(4, 8, 2), x, y, lr=0.05, t_max=1.0, track_ntk=False)
    assert tr.kernels is None and np.all(np.isnan(tr.alignment)) and np.all(np.isnan(tr.kernel_norm))
    assert tr.K0.shape == (5, 5) and tr.Kinf.shape == (5, 5)
    assert tr.test_predictions is None and tr.K0_test is None


def test_adam_lowers_the_loss():
    torch.manual_seed(7)
    x, y = torch.randn(12, 5), torch.randn(12)
    model = sl.MLP(5, 32, 3, activation="relu", sigma=0.5)
    tr = sl.train(model, x, y, lr=1e-2, t_max=2.0, optimizer="adam", track_ntk=False)
    assert tr.optimizer == "adam"
    assert tr.loss[-1] < 0.2 * tr.loss[0]
    assert np.all(np.isfinite(tr.loss))


def test_divergence_raises_naming_the_step():
    x, y, _ = linear_problem(P=8, D=20, seed=8)
    model = sl.MLP(20, 1, 1)
    # lr * max eig(K/P) >> 2: the residual grows geometrically until it overflows
    with pytest.raises(FloatingPointError, match=r"step \d+"):
        sl.train(model, x, y, lr=50.0, t_max=50.0 * 2000, track_ntk=False, progress=False)


def test_seed_reproducibility():
    def run():
        torch.manual_seed(11)
        x, y = torch.randn(9, 4), torch.randn(9)
        model = sl.MLP(4, 12, 3, activation="tanh", sigma=0.8)
        return sl.train(model, x, y, lr=0.05, t_max=3.0, x_test=torch.randn(3, 4), seed=5, n_records=12)

    a, b = run(), run()
    for name in ("t", "loss", "alignment", "kernel_norm", "predictions", "kernels", "test_predictions",
                 "K0", "Kinf", "K0_test", "Kinf_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_crossing_time():
    t = np.array([0.0, 1.0, 2.0, 4.0])
    v = np.array([1.0, 0.8, 0.4, 0.1])
    assert sl.crossing_time(t, v, 0.6, decreasing=True) == pytest.approx(1.5)
    assert sl.crossing_time(t, 1 - v, 0.75, decreasing=False) == pytest.approx(3.0)   # 0.6 -> 0.9 over [2, 4]
    assert sl.crossing_time(t, v, 0.05, decreasing=True) == math.inf
    assert sl.crossing_time(t, v, 1.0, decreasing=True) == 0.0


def test_kernel_predictions_are_kernel_regression_with_the_recorded_kernels():
    torch.manual_seed(0)
    x, y, xt = torch.randn(12, 5), torch.randn(12), torch.randn(7, 5)
    model = sl.MLP(5, 16, 2, activation="relu", sigma=0.5)
    tr = sl.train(model, x, y, lr=0.05, t_max=1.0, x_test=xt, n_records=5)
    preds = tr.kernel_predictions()
    np.testing.assert_allclose(tr.y, y.numpy())
    # independent: explicit solves with kernels recomputed from scratch at the end
    Kinf, Kinf_test = sl.ntk(model, x).numpy(), sl.ntk(model, xt, x).numpy()
    np.testing.assert_allclose(preds["Kinf"], Kinf_test @ np.linalg.solve(Kinf, y.numpy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(preds["K0"], tr.K0_test @ np.linalg.solve(tr.K0, y.numpy()), rtol=1e-6, atol=1e-8)
    assert not np.allclose(preds["K0"], preds["Kinf"])
    tr_no_test = sl.train(model, x, y, lr=0.05, t_max=0.1, n_records=3)
    with pytest.raises(ValueError, match="x_test"):
        tr_no_test.kernel_predictions()
