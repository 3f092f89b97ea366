"""Tests of silentlib.silence: the one operational measure of "silent" used across the book."""
import math

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib.data import linear_teacher
from silentlib.silence import SILENT_AT, kernel_direction_change, silent_fraction


def test_direction_change_is_blind_to_scale_and_one_for_orthogonal_kernels():
    Kf = np.diag([1.0, 0.0])
    Ks = np.stack([3.0 * Kf, np.diag([0.0, 2.0]), np.eye(2)])
    d = kernel_direction_change(Ks, Kf)
    np.testing.assert_allclose(d, [0.0, 1.0, 1 - 1 / math.sqrt(2)], atol=1e-15)


def test_direction_change_refuses_mismatched_and_zero_kernels():
    with pytest.raises(ValueError, match=r"\(n,\) \+ \(2, 2\)"):
        kernel_direction_change(np.zeros((3, 3, 3)), np.eye(2))
    with pytest.raises(ValueError, match="zero"):
        kernel_direction_change(np.zeros((1, 2, 2)), np.eye(2))


def test_silent_fraction_by_hand():
    t = [0.0, 1.0, 2.0, 3.0]
    loss = [1.0, 0.95, 0.85, 0.1]         # falls by 10% at t = 1.5
    d = [0.5, 0.1, 0.0, 0.0]              # d(1.5) = 0.05 of d(0) = 0.5
    assert silent_fraction(t, loss, d) == pytest.approx(0.9)
    assert silent_fraction(t, loss, d, loss_drop=0.5) == pytest.approx(1 - 0.0 / 0.5)


def test_silent_fraction_is_nan_when_undefined_and_checks_its_inputs():
    assert math.isnan(silent_fraction([0, 1], [1.0, 0.99], [0.5, 0.0]))      # the loss never fell by 10%
    assert math.isnan(silent_fraction([0, 1], [1.0, 0.1], [0.0, 0.0]))       # the kernel never turned
    with pytest.raises(ValueError, match="loss_drop"):
        silent_fraction([0, 1], [1.0, 0.1], [0.5, 0.0], loss_drop=1.5)
    with pytest.raises(ValueError, match=r"\(n,\) arrays"):
        silent_fraction([0, 1], [1.0, 0.1, 0.0], [0.5, 0.0])


def _run(x, y, sigma, **kw):
    torch.manual_seed(1)
    model = sl.MLP(x.shape[1], 50, 2, sigma=sigma)
    return model, sl.train(model, x, y, lr=0.05, t_max=kw.pop("t_max", 40.0), progress=False, **kw)


def test_whitened_small_init_is_silent_and_anisotropic_inputs_are_not():
    task = linear_teacher(P=30, D=30, n_test=0, seed=2)
    _, tr = _run(task.x, task.y, 1e-3)
    assert tr.kernel_direction[-1] == pytest.approx(0.0, abs=1e-12)   # the last record is K_inf
    assert tr.silence() > 0.99 >= SILENT_AT
    g = torch.Generator().manual_seed(3)
    X = torch.randn(100, 20, generator=g) * torch.logspace(0, -1.5, 20)
    beta = torch.randn(20, generator=g)
    _, tr_aniso = _run(X, 5 * X @ (beta / beta.norm()), 1e-3, t_max=400.0)
    assert tr_aniso.silence() < 0.5


def test_kernels_not_kept_give_the_same_direction_and_leave_the_model_trained():
    task = linear_teacher(P=20, D=10, n_test=0, seed=4)
    m1, kept = _run(task.x, task.y, 0.1)
    m2, replayed = _run(task.x, task.y, 0.1, keep_kernels=False)
    np.testing.assert_allclose(replayed.kernel_direction, kept.kernel_direction, atol=1e-12)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert replayed.silence() == pytest.approx(kept.silence(), abs=1e-12)


def test_silence_needs_tracked_kernels():
    task = linear_teacher(P=10, D=5, n_test=0, seed=5)
    _, tr = _run(task.x, task.y, 0.1, track_ntk=False)
    assert tr.kernel_direction is None
    with pytest.raises(ValueError, match="track_ntk"):
        tr.silence()
