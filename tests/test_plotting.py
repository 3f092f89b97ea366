"""Statistics (correlation, power-law fits) and the plotters that draw computed theory curves:
each draws exactly the curves it is given, normalized as documented."""
import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from silentlib import plotting, stats, theory  # noqa: E402
from silentlib.plotting import dynamics, geometry, scaling, style  # noqa: E402


def test_correlation_and_its_undefined_cases():
    x = np.arange(10.0)
    assert stats.correlation(x, -2 * x + 5) == pytest.approx(-1.0)
    assert stats.correlation(x, x ** 3) == pytest.approx(np.corrcoef(x, x ** 3)[0, 1])
    for a, b, word in ((x, x[:5], "same size"), (x[:1], x[:1], "two values"),
                       (np.ones(4), x[:4], "constant"), (x, np.full(10, np.nan), "non-finite")):
        with pytest.raises(ValueError, match=word):
            stats.correlation(a, b)


def test_fit_power_law_recovers_slope_and_intercept():
    x = np.geomspace(0.01, 1.0, 7)
    slope, intercept = stats.fit_power_law(x, 3.0 * x ** -2.5)
    assert slope == pytest.approx(-2.5) and intercept == pytest.approx(np.log(3.0))
    with pytest.raises(ValueError, match="positive"):
        stats.fit_power_law(x, -x)
    with pytest.raises(ValueError, match="positive"):
        stats.fit_power_law(x[:1], x[:1])


def test_the_package_reexports_each_concept_module_and_applies_the_style():
    assert plotting.plot_dynamics is dynamics.plot_dynamics
    assert plotting.plot_time_power_law is scaling.plot_time_power_law
    assert plotting.plot_prediction_scatter is geometry.plot_prediction_scatter
    assert plotting.COLORS is style.COLORS and plotting.STYLE is style.STYLE
    assert matplotlib.rcParams["figure.dpi"] == style.STYLE["figure.dpi"]


def test_plot_theory_modes_draws_the_given_curves_and_the_loss():
    sv = np.array([2.0, 1.0])
    t = np.linspace(0, 10, 50)
    U = np.stack([theory.u_squared(t, s, 1e-3) for s in sv], axis=1)
    _, ax = plt.subplots()
    dynamics.plot_theory_modes(ax, t, U, sv, mode_times=theory.mode_times(sv, 1e-3))
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), U[:, 0] / 2.0)
    np.testing.assert_allclose(lines[-1].get_ydata(), np.sum((sv - U) ** 2, axis=1) / 5.0)
    assert len([ln for ln in lines if ln.get_linestyle() == ":"]) == 2      # one half-point line per mode
    with pytest.raises(ValueError, match="shape"):
        dynamics.plot_theory_modes(ax, t, U[:, :1], sv)


def test_plot_deep_scale_normalizes_the_loss_by_the_initial_scale():
    s, c0 = 1.0, 1e-3
    t = np.geomspace(1e-2, 30, 40)
    c = theory.deep_linear_scale(t, s, 3, c0)
    _, ax = plt.subplots()
    assert dynamics.plot_deep_scale(ax, t, c, s=s, c0=c0, t_half=5.0) == 5.0
    loss, c_over_s, vline = ax.get_lines()
    np.testing.assert_allclose(loss.get_ydata(), theory.deep_linear_loss(t, s, 3, c0))
    np.testing.assert_allclose(c_over_s.get_ydata(), c / s)
    assert list(vline.get_xdata()) == [5.0, 5.0] and ax.get_xscale() == "log"


def test_plot_half_loss_times_and_depth_alignment_draw_what_they_are_given():
    sigma2 = np.geomspace(1e-4, 1e-1, 6)
    times = {2: (np.arange(1.0, 7.0), np.arange(2.0, 8.0)), 3: (np.arange(3.0, 9.0), np.arange(4.0, 10.0))}
    _, ax = plt.subplots()
    scaling.plot_half_loss_times(ax, sigma2, times)
    ys = [list(ln.get_ydata()) for ln in ax.get_lines()]
    assert ys == [[1, 2, 3, 4, 5, 6], [2, 4, 6], [3, 4, 5, 6, 7, 8], [4, 6, 8]]   # circles: every other
    _, ax = plt.subplots()
    Ls = np.arange(1, 6)
    closed = [theory.final_alignment(int(L), 4) for L in Ls]
    scaling.plot_depth_alignment(ax, [2, 3], [0.7, 0.8], Ls, closed, rank=4)
    curve, points = ax.get_lines()
    np.testing.assert_allclose(curve.get_ydata(), closed)
    assert "r = 4" in curve.get_label() and list(points.get_ydata()) == [0.7, 0.8]
