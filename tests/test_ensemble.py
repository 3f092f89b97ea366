"""train_many (silentlib.ensemble): networks trained together equal, to rounding, the same networks
trained one by one; Adam against torch.optim.Adam; what is refused; CPU threads (silentlib.threads)."""
import copy

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib import threads as thr
from silentlib.ensemble import Ensemble

FIELDS = ("t", "loss", "alignment", "kernel_norm", "predictions", "kernels", "test_predictions", "K0", "Kinf",
          "K0_test", "Kinf_test", "steps", "kernel_direction")


def sweep(activation="tanh", out_dim=1, sigmas=(0.3, 0.8, 1.5)):
    torch.manual_seed(0)
    return [sl.MLP(5, 7, 3, out_dim=out_dim, activation=activation, sigma=s) for s in sigmas]


def assert_same(a, b, rtol=1e-10):
    for name in FIELDS:
        u, v = getattr(a, name), getattr(b, name)
        if u is None:
            assert v is None, name
            continue
        scale = max(np.abs(v).max(), 1e-300)
        assert u.shape == v.shape and np.abs(u - v).max() <= rtol * scale, name
    for k in a.observables:
        np.testing.assert_allclose(a.observables[k], b.observables[k], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("optimizer,out_dim,keep", [("gd", 1, True), ("flow", 1, True), ("adam", 1, False),
                                                    ("gd", 2, True), ("flow", 2, False)])
def test_together_equals_one_by_one(optimizer, out_dim, keep):
    g = torch.Generator().manual_seed(1)
    x, xt = torch.randn(9, 5, generator=g), torch.randn(4, 5, generator=g)
    y = torch.randn(9, out_dim, generator=g).squeeze(-1)
    lrs, t_maxs = [0.05, 0.02, 0.04], [3.0, 5.0, 1.2]          # each network its own step and length
    kw = dict(optimizer=optimizer, x_test=xt, n_records=12, keep_kernels=keep,
              observe={"w1": lambda m: m.linears[0].weight.norm()})
    together, alone = sweep(out_dim=out_dim), sweep(out_dim=out_dim)
    trs = sl.train_many(together, x, y, lr=lrs, t_max=t_maxs, **kw)
    for model, ref, tr, lr, t_max in zip(together, alone, trs, lrs, t_maxs):
        tr1 = sl.train(ref, x, y, lr=lr, t_max=t_max, **kw)
        assert_same(tr, tr1)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        assert tr.loss[-1] < tr.loss[0]
    # the models own their parameters again (no view into the ensemble's tensor)
    ptrs = {p.untyped_storage().data_ptr() for m in together for p in m.parameters()}
    assert len(ptrs) == sum(len(list(m.parameters())) for m in together)


def test_adam_is_torchs_adam():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 5, generator=g), torch.randn(12, generator=g)
    torch.manual_seed(7)
    model = sl.MLP(5, 16, 3, activation="relu", sigma=0.5)
    ref = copy.deepcopy(model)
    lr, n = 1e-2, 200
    sl.train(model, x, y, lr=lr, t_max=lr * n, optimizer="adam", track_ntk=False, n_records=3)
    opt = torch.optim.Adam(ref.parameters(), lr=lr)
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (ref(x) - y).pow(2).sum() / 12).backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_gradient_descent_matches_a_plain_loop_together():
    """Two networks together, against the textbook loop p <- p - lr grad, written out."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, generator=g)
    models = sweep(activation="relu", sigmas=(0.5, 1.0))
    refs = copy.deepcopy(models)
    sl.train_many(models, x, y, lr=[0.1, 0.05], t_max=[2.0, 2.0], track_ntk=False)
    for ref, lr in zip(refs, (0.1, 0.05)):
        for _ in range(round(2.0 / lr)):
            ref.zero_grad()
            (0.5 * (ref(x) - y).pow(2).sum() / 6).backward()
            with torch.no_grad():
                for p in ref.parameters():
                    p -= lr * p.grad
    for m, ref in zip(models, refs):
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_refuses_networks_of_another_architecture():
    x, y = torch.randn(6, 5), torch.randn(6)
    with pytest.raises(ValueError, match=r"models\[1\] does not compute"):
        sl.train_many([sl.MLP(5, 7, 3, activation="tanh"), sl.MLP(5, 7, 3, activation="relu")], x, y,
                      lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match=r"models\[1\]\.0\.weight"):
        sl.train_many([sl.MLP(5, 7, 2), sl.MLP(5, 8, 2)], x, y, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match="trainable parameters"):
        sl.train_many([sl.MLP(5, 7, 2), sl.MLP(5, 7, 3)], x, y, lr=0.1, t_max=1.0)
    m = sl.MLP(5, 7, 2)
    with pytest.raises(ValueError, match="distinct"):
        sl.train_many([m, m], x, y, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match=r"one per model \(2\)"):
        sl.train_many([sl.MLP(5, 7, 2), sl.MLP(5, 7, 2)], x, y, lr=[0.1, 0.2, 0.3], t_max=1.0)


def test_training_restores_torchs_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(thr, "threads_for", lambda n: 1)        # busy cores: one thread, no timing
    x, y = torch.randn(6, 5), torch.randn(6)
    sl.train(sl.MLP(5, 7, 2), x, y, lr=0.1, t_max=1.0, n_records=3)
    assert set(calls) == {1, 2} and calls[-1] == 2


def test_step_threads_times_both_counts_and_keeps_the_faster(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    now = {"t": 0.0, "threads": 2}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: now.update(threads=n))
    monkeypatch.setattr(thr.time, "perf_counter", lambda: now["t"])
    monkeypatch.setattr(thr, "threads_for", lambda n: 2)
    for slow, fast in ((2, 1), (1, 2)):
        st = thr.StepThreads("cpu")
        for _ in range(2 * thr.TRIALS + 3):
            st.tick()
            now["t"] += 5.0 if now["threads"] == slow else 1.0      # this step's duration
        assert st.chosen == fast and now["threads"] == fast
        with st.paused():
            assert now["threads"] == 2
        assert now["threads"] == fast
    assert not thr.StepThreads("cuda").on


def test_threads_left_alone_at_one(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    st = thr.StepThreads("cpu")
    assert not st.on


class WithSpare(torch.nn.Module):
    """A network with a trainable parameter its output does not use (its gradient is zero)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(5, 1)
        self.spare = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.lin(x).squeeze(-1)


@pytest.mark.parametrize("make", [lambda: sweep("relu", out_dim=2)[0], WithSpare])
def test_a_single_model_s_own_gradient_is_the_functional_one(make):
    """One bound model at its own parameters takes its own forward (no functional_call); at other
    parameters (an integrator's stage) the functional path. Both give the same loss and gradient."""
    torch.manual_seed(1)
    model = make()
    x = torch.randn(9, 5)
    y = torch.randn(9, 2) if isinstance(model, sl.MLP) else torch.randn(9)
    ens = Ensemble([model], x, y)
    own = ens.loss_and_grad(ens.theta)
    functional = ens.loss_and_grad(ens.theta.clone())
    assert ens.evaluations == 2
    torch.testing.assert_close(own[0], functional[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(own[1], functional[1], rtol=1e-13, atol=1e-15)
    if isinstance(model, WithSpare):
        spare = ens.names.index("spare")
        start = sum(ens.sizes[:spare])
        used = torch.ones(ens.theta.shape[1], dtype=torch.bool)
        used[start:start + 3] = False
        assert torch.all(own[1][0, ~used] == 0) and torch.all(own[1][0, used] != 0)
    ens.release()
