"""plotting (house style, normalizations, correlations), widgets (headless slider), bench (rows, CLI)."""
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from silentlib import plotting, widgets  # noqa: E402
from silentlib.bench import format_table, run_benchmark  # noqa: E402
from silentlib.__main__ import main as cli  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_style_applied_on_import():
    plotting.use_style()
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    assert cycle[:3] == [plotting.COLORS["loss"], plotting.COLORS["kernel_norm"], plotting.COLORS["alignment"]]
    assert not matplotlib.rcParams["axes.spines.top"]


def test_plot_dynamics_normalizes():
    t = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    loss = np.array([4.0, 3.0, 2.0, 1.0, 0.5])
    norm = np.array([1.0, 1.5, 2.0, 4.0, 8.0])
    align = np.array([0.1, 0.2, 0.5, 0.8, 0.9])
    fig, ax = plt.subplots()
    out = plotting.plot_dynamics(ax, t, loss=loss, alignment=align, kernel_norm=norm, theory_alignment=0.95)
    assert out is ax and ax.get_xscale() == "log"
    lines = {l.get_color(): l for l in ax.get_lines()}
    l_loss = lines[plotting.COLORS["loss"]]
    np.testing.assert_allclose(l_loss.get_xdata(), t[1:])            # t = 0 dropped on a log axis
    np.testing.assert_allclose(l_loss.get_ydata(), loss[1:] / 4.0)   # normalized at t = 0
    np.testing.assert_allclose(lines[plotting.COLORS["kernel_norm"]].get_ydata(), norm[1:] / 8.0)
    al = [l for l in ax.get_lines() if l.get_color() == plotting.COLORS["alignment"]]
    np.testing.assert_allclose(al[0].get_ydata(), align[1:])
    assert al[1].get_linestyle() == "--" and al[1].get_ydata()[0] == pytest.approx(0.95)
    fig, ax = plt.subplots()
    plotting.plot_dynamics(ax, t, loss=loss, normalize=False, log_time=False)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), loss)
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_dynamics(ax, t, loss=loss[:3])
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_dynamics(ax, t)


def test_prediction_scatter_correlations():
    r = np.random.default_rng(0)
    nn = r.normal(size=40)
    preds = {"K0": nn + r.normal(size=40), "Kinf": nn + 0.05 * r.normal(size=40)}
    fig, ax = plt.subplots()
    corr = plotting.plot_prediction_scatter(ax, nn, preds)
    for k, p in preds.items():
        assert corr[k] == pytest.approx(np.corrcoef(nn, p)[0, 1], rel=1e-12)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"{corr['Kinf']:.3f}" in s for s in labels)
    assert plotting.correlation(nn, 3 * nn + 1) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        plotting.plot_prediction_scatter(ax, nn, {"bad": nn[:5]})


def test_scale_note(monkeypatch):
    fig = plt.figure()
    monkeypatch.setenv("SILENT_SCALE", "paper")
    assert plotting.scale_note(fig).get_text().startswith("paper scale (")
    monkeypatch.setenv("SILENT_SCALE", "fast")
    assert plotting.scale_note(fig).get_text().startswith("fast scale (")


def test_slider_builds_widgets_and_draws_once():
    ipywidgets = pytest.importorskip("ipywidgets")
    calls = []

    def draw(s=0.0, sigma=0.0, depth=0, act=None, n=None):
        calls.append((s, sigma, depth, act, n))
        plt.subplots()

    w = widgets.slider(draw, s=(0.5, 5.0, 0.5, 1.0), sigma=("log", 1e-3, 1.0, 0.1),
                       depth=(1, 5, 1, 2), act=["relu", "linear"], n=7)
    assert isinstance(w, ipywidgets.interactive)
    assert calls == [(1.0, pytest.approx(0.1), 2, "relu", 7)]
    kinds = [type(c).__name__ for c in w.children]
    assert kinds[:4] == ["FloatSlider", "FloatLogSlider", "IntSlider", "Dropdown"]
    assert all(c.continuous_update is False for c in w.children[:3])
    w.children[2].value = 4
    assert calls[-1][2] == 4
    assert plt.get_fignums() == []            # headless: figures do not pile up
    with pytest.raises(ValueError, match="sigma"):
        widgets.slider(draw, sigma=("log", 0.0, 1.0, 0.1))


def test_slider_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)   # import fails
    calls = []
    assert widgets.slider(lambda a, b: calls.append((a, b)), a=(0, 10, 1, 3), b=("log", 1e-2, 1.0, 0.5)) is None
    assert calls == [(3, 0.5)]


def test_run_benchmark_rows():
    rows = run_benchmark([3, 5], device="cpu", dtype="float64", width=8, d_in=6, repeats=1)
    assert [(r["P"], r["method"]) for r in rows] == [(3, "layerwise"), (3, "jacobian"), (3, "vp"),
                                                     (5, "layerwise"), (5, "jacobian"), (5, "vp")]
    for r in rows:
        assert r["seconds"] > 0 and r["max_rel_diff"] < 1e-12
        assert r["n_params"] == 6 * 8 + 8 * 8 + 8
    assert rows[0]["ratio"] == 1.0
    assert "jacobian" in format_table(rows)
    with pytest.raises(ValueError, match="methods"):
        run_benchmark([3], methods=["auto"], device="cpu")


def test_cli(capsys):
    threads = torch.get_num_threads()
    try:
        assert cli(["bench", "--sizes", "4", "--width", "8", "--d-in", "5", "--repeats", "1",
                    "--device", "cpu", "--dtype", "float64", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "layerwise" in out and "vp" in out and torch.__version__ in out
    assert cli(["nope"]) == 2
