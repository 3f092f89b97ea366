"""plot_architecture_sweep: what it draws and what it refuses."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from silentlib import plotting as slp


def _run(scale):
    t = np.linspace(0, 1, 11)
    return dict(t=t, loss=np.exp(-scale * t), alignment=0.1 + 0.5 * t,
                rel_err_K0=0.5 * scale, rel_err_Kinf=0.05 * scale)


def test_draws_one_curve_per_run_and_the_two_errors():
    fig, axes = plt.subplots(1, 3)
    runs = {"b = 1": _run(1.0), "b = 2": _run(2.0)}
    slp.plot_architecture_sweep(axes, runs)
    assert len(axes[0].lines) == 2 and len(axes[1].lines) == 2
    lines = axes[1].lines
    assert np.all(lines[0].get_xdata() > 0), "t = 0 must be dropped on the log axis"
    k0, kinf = (ln.get_ydata() for ln in axes[2].lines)
    np.testing.assert_allclose(k0, [0.5, 1.0])
    np.testing.assert_allclose(kinf, [0.05, 0.1])
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["b = 1", "b = 2"]
    # the loss is normalized to 1 at t = 0
    np.testing.assert_allclose(axes[0].lines[1].get_ydata(), np.exp(-2.0 * np.linspace(0.1, 1, 10)))


def test_refuses_wrong_axes_and_no_runs():
    fig, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="3 axes"):
        slp.plot_architecture_sweep(axes, {"a": _run(1.0)})
    fig, axes = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="at least one run"):
        slp.plot_architecture_sweep(axes, {})
