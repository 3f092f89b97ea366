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


def test_architecture_sweep_shows_the_silent_fraction_in_the_legend():
    fig, axes = plt.subplots(1, 3)
    runs = {"b = 1": dict(_run(1.0), S=0.123), "b = 2": _run(2.0)}
    slp.plot_architecture_sweep(axes, runs)
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["b = 1, S = 0.12", "b = 2"]


def test_kernel_norm_growth_normalizes_and_marks_the_half_time():
    from silentlib.plotting.sweeps import plot_kernel_norm_growth

    t = np.linspace(0, 4, 41)
    # 1 -> 10, linear: half at t = 16/9; 50 -> 250: half (125) at t = 1.5, after an early
    # transient above it (t = 0.1) that the settle time ignores
    jump = np.where(np.isclose(t, 0.1), 200.0, 50 * (1 + t))
    runs = {0.0: dict(t=t, kernel_norm=1 + 9 * t / 4), 1.0: dict(t=t, kernel_norm=jump)}
    fig, ax = plt.subplots()
    times = plot_kernel_norm_growth(ax, runs)
    np.testing.assert_allclose(times[0.0], 16 / 9)
    np.testing.assert_allclose(times[1.0], 1.5)
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) > 2]
    assert len(curves) == 2
    for ln in curves:  # t = 0 dropped, each curve ends at 1
        assert np.all(ln.get_xdata() > 0)
        np.testing.assert_allclose(ln.get_ydata()[-1], 1.0)
    np.testing.assert_allclose(curves[1].get_ydata()[0], 200 / 250)
    dots = [ln for ln in ax.lines if len(ln.get_xdata()) == 1]
    np.testing.assert_allclose(sorted(d.get_xdata()[0] for d in dots), [1.5, 16 / 9])
    assert [ln.get_label() for ln in curves] == [r"$\gamma = 0$", r"$\gamma = 1$"]


def test_kernel_norm_growth_refuses_bad_input():
    from silentlib.plotting.sweeps import plot_kernel_norm_growth

    fig, ax = plt.subplots()
    t = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="at least one run"):
        plot_kernel_norm_growth(ax, {})
    with pytest.raises(ValueError, match="level"):
        plot_kernel_norm_growth(ax, {0.0: dict(t=t, kernel_norm=t + 1)}, level=1.5)
    with pytest.raises(ValueError, match="positive"):
        plot_kernel_norm_growth(ax, {0.0: dict(t=t, kernel_norm=-t)})


def test_settle_time_is_the_last_crossing():
    from silentlib.plotting.sweeps import settle_time

    t = np.arange(6.0)
    assert settle_time(t, [0, 2, 0, 1, 3, 4], 2.0) == 3.5  # after the dip, between 1 and 3
    assert settle_time(t, [3, 3, 3, 3, 3, 3], 2.0) == 0.0
    assert settle_time(t, [0, 3, 3, 3, 3, 1], 2.0) == np.inf
    with pytest.raises(ValueError, match="same shape"):
        settle_time(t, [1, 2], 1.5)
