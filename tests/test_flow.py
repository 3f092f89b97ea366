"""optimizer="flow" (silentlib.flow): the adaptive integrator against the closed-form flow of a linear
model and against scipy's DOP853 on a tanh network; its records, tolerances and failures."""
import math

import numpy as np
import pytest
import scipy.integrate
import torch
from torch import nn

import silentlib as sl
from silentlib import flow
from silentlib.ensemble import Ensemble


def linear_problem(P=8, D=20, Q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(P, D, generator=g), torch.randn(P, generator=g), torch.randn(Q, D, generator=g)


def closed_form_residual(x, r0, t):
    """f = w.x under gradient flow: the residual r(t) = exp(-t X X^T / P) r0, by eigendecomposition."""
    lam, U = np.linalg.eigh((x @ x.T).numpy() / x.shape[0])
    return np.stack([U @ (np.exp(-tk * lam) * (U.T @ r0)) for tk in t])


@pytest.mark.parametrize("rtol,bound", [(None, 3e-6), (1e-10, 1e-9)])
def test_linear_model_follows_the_closed_form_flow(rtol, bound):
    x, y, xt = linear_problem()
    torch.manual_seed(0)
    model = sl.MLP(20, 1, 1)
    r0 = (model(x) - y).detach().numpy()
    tr = sl.train(model, x, y, lr=0.01, t_max=40.0, optimizer="flow", rtol=rtol, x_test=xt, n_records=40)
    exact = closed_form_residual(x, r0, tr.t)
    err = np.abs(tr.predictions - y.numpy() - exact).max() / np.abs(r0).max()
    assert err < bound, err
    if rtol is None:       # the default tolerance is not needlessly tight either
        assert err > 1e-12
    # the kernel of a linear model never moves; the loss is that of the recorded predictions
    np.testing.assert_allclose(tr.kernels, np.broadcast_to((x @ x.T).numpy(), tr.kernels.shape), rtol=1e-12)
    np.testing.assert_allclose(tr.loss, 0.5 * ((tr.predictions - y.numpy()) ** 2).sum(1) / 8, rtol=1e-10)


def test_records_fall_on_the_gradient_descent_grid():
    x, y, _ = linear_problem(P=6, D=5, seed=1)
    kw = dict(lr=0.03, t_max=7.0, n_records=25, track_ntk=False)
    gd = sl.train(sl.MLP(5, 4, 2, activation="tanh"), x, y, **kw)
    fl = sl.train(sl.MLP(5, 4, 2, activation="tanh"), x, y, optimizer="flow", **kw)
    np.testing.assert_array_equal(fl.t, gd.t)
    np.testing.assert_array_equal(fl.steps, gd.steps)
    assert fl.optimizer == "flow" and fl.lr == 0.03


def reference_flow(model, x, y, t):
    """The same network's gradient flow by scipy's DOP853 at rtol 1e-12, with plain autograd gradients."""
    params = list(model.parameters())
    sizes = [p.numel() for p in params]

    def field(_, z):
        with torch.no_grad():
            for p, v in zip(params, torch.as_tensor(z).split(sizes)):
                p.copy_(v.view_as(p))
        loss = 0.5 * (model(x) - y).pow(2).sum() / x.shape[0]
        return -torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).numpy()

    z0 = torch.cat([p.detach().reshape(-1) for p in params]).numpy()
    sol = scipy.integrate.solve_ivp(field, (0, t[-1]), z0, t_eval=t, method="DOP853", rtol=1e-12, atol=1e-14)
    assert sol.success
    return sol.y.T, sizes


def test_tanh_network_follows_an_independent_integrator():
    """Parameters, predictions and tracked kernels at every record against DOP853 (scipy) at rtol 1e-12."""
    torch.manual_seed(3)
    x, y = torch.randn(10, 4), torch.randn(10)
    model = sl.MLP(4, 6, 3, activation="tanh", sigma=0.8)
    ref_model = sl.MLP(4, 6, 3, activation="tanh")
    ref_model.load_state_dict(model.state_dict())
    tr = sl.train(model, x, y, lr=0.05, t_max=20.0, optimizer="flow", n_records=30,
                  observe={"theta": lambda m: torch.cat([p.reshape(-1) for p in m.parameters()])})
    ref, sizes = reference_flow(ref_model, x, y, tr.t)
    scale = np.abs(ref).max()
    assert np.abs(tr.observables["theta"] - ref).max() / scale < 1e-6
    assert tr.loss[-1] < 0.5 * tr.loss[0]          # it did learn
    # the kernel recorded at t_k is the NTK of the reference parameters at t_k
    for k in (5, 15, len(tr.t) - 1):
        with torch.no_grad():
            for p, v in zip(ref_model.parameters(), torch.as_tensor(ref[k]).split(sizes)):
                p.copy_(v.view_as(p))
        K = sl.ntk(ref_model, x).numpy()
        assert np.abs(tr.kernels[k] - K).max() / np.abs(K).max() < 1e-5


def test_tighter_tolerance_more_gradients_smaller_error():
    x, y, _ = linear_problem(P=6, D=12, seed=4)
    counts, errors = [], []
    for rtol in (1e-4, 1e-8):
        torch.manual_seed(4)
        model = sl.MLP(12, 1, 1)
        r0 = (model(x) - y).detach().numpy()
        ens = Ensemble([model], x, y)
        t = np.linspace(0, 10, 6)
        preds = []
        evals = flow.integrate(ens, [t], lambda b: preds.append(model(x).detach().numpy()), rtol=rtol)
        ens.release()
        counts.append(evals[0])
        errors.append(np.abs(np.array(preds) - y.numpy() - closed_form_residual(x, r0, t)).max())
    assert counts[1] > counts[0] and errors[1] < 1e-3 * errors[0]


def test_default_tolerances():
    theta = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    rtol, atol = flow.tolerances(theta)
    assert rtol == flow.RTOL
    np.testing.assert_allclose(atol.numpy().ravel(), flow.ATOL_SHARE * rtol * np.array([math.sqrt(12.5), 1.0]))
    assert flow.tolerances(theta.float())[0] == pytest.approx(1e3 * torch.finfo(torch.float32).eps)
    with pytest.raises(ValueError, match="rtol"):
        flow.tolerances(theta, rtol=0.0)
    with pytest.raises(ValueError, match="atol"):
        flow.tolerances(theta, atol=-1.0)


class SqrtWeight(nn.Module):
    """f(x) = sqrt(w) x: the flow drives w to 0 (targets of the wrong sign), where the gradient is singular."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return torch.sqrt(self.w) * x[:, 0]


def test_a_singular_flow_raises():
    x = torch.ones(4, 1)
    with pytest.raises(FloatingPointError, match="t = "):
        sl.train(SqrtWeight(), x, -torch.ones(4), lr=0.01, t_max=10.0, optimizer="flow", track_ntk=False)
