"""Tests of silentlib.silence.summarize: one run's row of the closing chapter's table."""
import math

import numpy as np
import pytest
import torch

import silentlib as sl
from silentlib.data import linear_teacher
from silentlib.silence import summarize

KEYS = {"S", "m0", "d0", "rel_K0", "rel_Kinf", "corr_K0", "corr_Kinf", "rel_lin", "loss_end"}


def _run(sigma, t_max=30.0, width=8, **kw):
    # P < D and N < D: K0 is randomly anisotropic, so K0 and K_inf regression differ (chapter 6.4)
    task = linear_teacher(10, 20, s=1.0, n_test=50, seed=3)
    torch.manual_seed(4)
    net = sl.MLP(20, width, 2, sigma=sigma)
    return sl.train(net, task.x, task.y, lr=0.05, t_max=t_max, x_test=task.x_test, progress=False, **kw)


def test_small_init_linear_net_is_a_silent_kernel_machine_of_its_final_kernel():
    row = summarize(_run(1e-3))
    assert set(row) == KEYS
    assert row["S"] > 0.99 and row["m0"] > 0.1 and row["d0"] > 0.02
    assert row["rel_Kinf"] < 0.01 < 0.1 < row["rel_K0"]
    assert row["corr_Kinf"] > 0.9999 > row["corr_K0"]
    assert row["loss_end"] < 1e-8
    # f_0 is ~0 at small init: the linearized network is K_0 regression
    assert row["rel_lin"] == pytest.approx(row["rel_K0"], rel=1e-3)


def test_large_init_is_lazy_and_the_linearized_network_fits_best():
    row = summarize(_run(1.0, width=400))     # wide: the kernel barely turns
    assert row["d0"] < 0.02 and row["S"] < 0.3
    assert row["rel_lin"] < 0.5 * min(row["rel_K0"], row["rel_Kinf"])


def test_by_hand_against_the_trajectory():
    tr = _run(0.1)
    row = summarize(tr)
    kr = tr.kernel_predictions()
    f = tr.test_predictions[-1]
    assert row["rel_Kinf"] == pytest.approx(np.linalg.norm(kr["Kinf"] - f) / np.linalg.norm(f))
    assert row["S"] == tr.silence() or (math.isnan(row["S"]) and math.isnan(tr.silence()))
    assert row["d0"] == tr.kernel_direction[0]
    assert row["m0"] == pytest.approx(np.linalg.norm(kr["K0"] - kr["Kinf"]) / np.linalg.norm(kr["Kinf"]))


def test_summarize_needs_kernels_and_test_points():
    task = linear_teacher(10, 5, n_test=0, seed=5)
    tr = sl.train(sl.MLP(5, 4, 2, sigma=0.1), task.x, task.y, lr=0.05, t_max=1.0, progress=False)
    with pytest.raises(ValueError, match="x_test"):
        summarize(tr)
    with pytest.raises(ValueError, match="track_ntk=True, x_test"):
        summarize(_run(0.1, t_max=1.0, track_ntk=False))
