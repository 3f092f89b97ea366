"""Tests of silentlib.silence: the one operational measure of "silent" used across the book.

The ruler must call the paper's Figure 1(a, b) setting silent and a lazy run not silent at every
seed, and must be undefined (not a ratio of rounding errors) where every kernel gives the same
kernel machine."""
import math

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib.data import linear_teacher, mnist
from silentlib.silence import (SILENT_AT, done_by_drop, kernel_direction_change, machine_distance,
                               silent_fraction)


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


def test_machine_distance_by_hand():
    f = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])            # final machine (0, 2), |f_inf| = 2
    np.testing.assert_allclose(machine_distance(f), [math.sqrt(9 + 4) / 2, 0.5, 0.0])
    multi = np.zeros((2, 3, 2)); multi[1] = 1.0; multi[0, 0, 0] = 1.0   # (n, Q, C): all outputs together
    np.testing.assert_allclose(machine_distance(multi), [math.sqrt(5 / 6), 0.0])
    with pytest.raises(ValueError, match="n >= 2"):
        machine_distance(np.ones((1, 3)))
    with pytest.raises(ValueError, match="predicts 0"):
        machine_distance(np.array([[1.0, 1.0], [0.0, 0.0]]))


def test_done_by_drop_and_silent_fraction_by_hand():
    t = [0.0, 1.0, 2.0, 3.0]
    loss = [1.0, 0.95, 0.85, 0.1]         # falls by 10% at t = 1.5
    d = [0.5, 0.1, 0.0, 0.0]              # d(1.5) = 0.05 of d(0) = 0.5
    assert done_by_drop(t, loss, d) == pytest.approx(0.9)
    assert done_by_drop(t, loss, d, loss_drop=0.5) == pytest.approx(1.0)
    # machines: distances to the last are 1, 0.4, 0.2, 0 (|f_inf| = 1), so m(1.5) = 0.3 and S = 0.7
    machines = np.array([[0.0, 2.0], [0.0, 1.4], [0.0, 1.2], [0.0, 1.0]])
    assert silent_fraction(t, loss, machines) == pytest.approx(0.7)


def test_undefined_cases_are_nan_and_inputs_are_checked():
    assert math.isnan(done_by_drop([0, 1], [1.0, 0.99], [0.5, 0.0]))      # the loss never fell by 10%
    assert math.isnan(done_by_drop([0, 1], [1.0, 0.1], [0.0, 0.0]))       # nothing changed
    same = np.array([[1.0, 2.0], [1.0 + 1e-12, 2.0]])                     # the same machine up to rounding
    assert math.isnan(silent_fraction([0, 1], [1.0, 0.1], same))
    with pytest.raises(ValueError, match="loss_drop"):
        done_by_drop([0, 1], [1.0, 0.1], [0.5, 0.0], loss_drop=1.5)
    with pytest.raises(ValueError, match=r"\(n,\) arrays"):
        done_by_drop([0, 1], [1.0, 0.1, 0.0], [0.5, 0.0])


def _figure1ab(seed, sigma):
    """The paper's Figure 1(a, b) setting, small: a width-300 two-layer ReLU network on P = 200
    whitened MNIST zeros and ones (50 principal components), full-batch gradient descent."""
    d = mnist((0, 1), n_train=200, n_test=200, gamma=0.0, pca=50, seed=seed)
    torch.manual_seed(seed)
    net = sl.MLP(50, 300, 2, activation="relu", sigma=sigma)
    lr, t_max = (0.2, 60.0) if sigma < 1 else (0.02, 20.0)   # sigma = 1 has a 10x larger kernel
    return sl.train(net, d.x_train, d.y_train, lr=lr, t_max=t_max, x_test=d.x_test, n_records=40,
                    progress=False)


@pytest.mark.parametrize("seed", range(5))
def test_the_figure_1ab_setting_is_silent_and_its_lazy_twin_is_not(seed):
    rich, lazy = _figure1ab(seed, 1e-3), _figure1ab(seed, 1.0)
    assert rich.silence() >= SILENT_AT > 0.3 > lazy.silence()
    # and the verdicts mean what they say: the silent run is K_inf regression, the lazy one neither kernel's
    f_rich, kr = rich.test_predictions[-1], rich.kernel_predictions()
    assert np.linalg.norm(kr["Kinf"] - f_rich) < np.linalg.norm(kr["K0"] - f_rich) / 3
    f_lazy, kl = lazy.test_predictions[-1], lazy.kernel_predictions()
    assert np.linalg.norm(kl["Kinf"] - f_lazy) > 0.6 * np.linalg.norm(kl["K0"] - f_lazy)


def test_a_linear_network_on_more_points_than_dimensions_has_no_silent_fraction():
    # every kernel x^T M x' interpolates the same min-norm linear function when P >= D (chapter 10.2)
    task = linear_teacher(P=30, D=10, n_test=20, seed=2)
    torch.manual_seed(1)
    tr = sl.train(sl.MLP(10, 20, 2, sigma=1e-2), task.x, task.y, lr=0.05, t_max=40.0, x_test=task.x_test,
                  progress=False)
    assert machine_distance(tr.machine_predictions)[0] < 1e-9
    assert math.isnan(tr.silence())
    assert tr.kernel_direction[0] > 0.01           # although the kernel did turn in direction


def _run(x, y, sigma, **kw):
    torch.manual_seed(1)
    model = sl.MLP(x.shape[1], 50, 2, sigma=sigma)
    return model, sl.train(model, x, y, lr=0.05, t_max=kw.pop("t_max", 40.0), progress=False, **kw)


def test_machines_are_recorded_the_same_without_kept_kernels_and_leave_the_model_trained():
    task = linear_teacher(P=10, D=20, n_test=15, seed=4)       # P < D: the machines differ
    m1, kept = _run(task.x, task.y, 0.1, x_test=task.x_test)
    m2, replayed = _run(task.x, task.y, 0.1, x_test=task.x_test, keep_kernels=False)
    np.testing.assert_allclose(replayed.kernel_direction, kept.kernel_direction, atol=1e-12)
    np.testing.assert_allclose(replayed.machine_predictions, kept.machine_predictions, atol=1e-10)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert replayed.silence() == pytest.approx(kept.silence(), abs=1e-10)
    kr = kept.kernel_predictions()       # the first and last machines are K_0 and K_inf regression
    np.testing.assert_allclose(kept.machine_predictions[[0, -1]], np.stack([kr["K0"], kr["Kinf"]]), atol=1e-10)


def test_silence_needs_tracked_kernels_and_test_points():
    task = linear_teacher(P=10, D=5, n_test=4, seed=5)
    _, tr = _run(task.x, task.y, 0.1, track_ntk=False, x_test=task.x_test)
    assert tr.kernel_direction is None and tr.machine_predictions is None
    with pytest.raises(ValueError, match="track_ntk=True and x_test"):
        tr.silence()
    _, tr = _run(task.x, task.y, 0.1)
    with pytest.raises(ValueError, match="held-out points"):
        tr.silence()
