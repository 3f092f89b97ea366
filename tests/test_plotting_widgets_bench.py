"""plotting (house style, normalizations, correlations), widgets (headless slider), bench (rows, CLI)."""
import json
import sys

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from silentlib import plotting, widgets  # noqa: E402
import silentlib as sl  # noqa: E402
from silentlib import bench, config, stats  # noqa: E402
from silentlib.bench import format_table, run_benchmark  # noqa: E402
from silentlib.bench import main as cli_bench  # noqa: E402
from silentlib.__main__ import main as cli  # noqa: E402

from helpers import load_module  # noqa: E402


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
    assert stats.correlation(nn, 3 * nn + 1) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        plotting.plot_prediction_scatter(ax, nn, {"bad": nn[:5]})


def test_nonlinear_run_scatters_the_trajectorys_kernel_predictions():
    """The scatter's correlations are those of traj.kernel_predictions() with the network; labels other
    than the trajectory's own are refused."""
    gen = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(12, 3, generator=gen), torch.randn(7, 3, generator=gen)
    y = torch.sign(x[:, 0])
    model = sl.MLP(3, 16, 2, activation="relu", sigma=0.5)
    model.reset_parameters(torch.Generator().manual_seed(1))
    traj = sl.train(model, x, y, lr=0.5, t_max=20.0, n_records=5, x_test=x_test, progress=False)
    fig, (a, b) = plt.subplots(1, 2)
    corr = plotting.plot_nonlinear_run(a, b, traj, y)
    kr = traj.kernel_predictions()
    net = traj.test_predictions[-1]
    assert corr["$K_0$"] == pytest.approx(stats.correlation(net, kr["K0"]), rel=1e-12)
    assert corr[r"$K_\infty$"] == pytest.approx(stats.correlation(net, kr["Kinf"]), rel=1e-12)
    assert plotting.plot_nonlinear_run(a, None, traj) == {}
    with pytest.raises(ValueError, match="labels the trajectory was trained on"):
        plotting.plot_nonlinear_run(a, b, traj, -y)


def test_scale_note(monkeypatch):
    fig = plt.figure()
    monkeypatch.setenv("SILENT_SCALE", "paper")
    assert plotting.scale_note(fig).get_text().startswith("paper scale (")
    monkeypatch.setenv("SILENT_SCALE", "fast")
    assert plotting.scale_note(fig).get_text().startswith("fast scale (")


def test_slider_builds_widgets_and_draws_once(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv("SILENT_STATIC", raising=False)      # a live notebook
    calls = []

    def draw(s=0.0, sigma=0.0, depth=0, act=None, n=None):
        calls.append((s, sigma, depth, act, n))
        plt.subplots()

    w = widgets.slider(draw, alt="a test figure", s=(0.5, 5.0, 0.5, 1.0), sigma=("log", 1e-3, 1.0, 0.1),
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
        widgets.slider(draw, alt="a test figure", sigma=("log", 0.0, 1.0, 0.1))
    with pytest.raises(ValueError, match="alt"):
        widgets.slider(draw, alt="draw", sigma=("log", 0.01, 1.0, 0.1))      # a name, not a description


def test_slider_without_ipywidgets(monkeypatch):
    monkeypatch.delenv("SILENT_STATIC", raising=False)      # a live kernel without ipywidgets
    monkeypatch.setitem(sys.modules, "ipywidgets", None)   # import fails
    calls = []
    assert widgets.slider(lambda a, b: calls.append((a, b)), alt="a test figure", a=(0, 10, 1, 3),
                          b=("log", 1e-2, 1.0, 0.5)) is None
    assert calls == [(3, 0.5)]


def test_slider_static_when_headless(monkeypatch):
    """Headless: no ipywidgets, an HTML slider over frames drawn on the grid, the default first."""
    monkeypatch.setenv("SILENT_STATIC", "1")
    monkeypatch.delenv("SILENT_SLIDER_FRAMES", raising=False)   # the default budget (conftest lowers it)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)    # must not be needed (nor built) headless
    calls = []

    def draw(a, b):
        calls.append((a, b))
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, a], linestyle="-" if b == "x" else ":")
        ax.set_ylim(0, 10)
        plt.show()                                          # as the chapters do: must not display

    out = widgets.slider(draw, alt="A line up to height a", a=(0, 10, 1, 3), b=["x", "y"])
    assert isinstance(out, widgets.StaticSlider)
    assert out.grid == {"a": list(range(11)), "b": ["x", "y"]}
    assert calls[0] == (3, "x") and sorted(calls) == sorted((a, b) for a in range(11) for b in "xy")
    assert len(out.frames) == 22 and all(len(f) == 1 and f[0][:8] == b"\x89PNG\r\n\x1a\n" for f in out.frames)
    assert out.frames[out.default] == out.frames[3 * 2 + 0]          # C order over (a, b)
    assert len({f[0] for f in out.frames}) == 22                      # every grid point its own drawing
    html = out._repr_html_()
    assert html.count('<input type="range"') == 2 and 'max="10"' in html and 'value="3"' in html
    assert 'data-silent-slider="22"' in html and "<script>" in html and widgets.SLIDER_JS in html
    assert "ipywidgets" not in html and "require(" not in html       # no third-party JavaScript
    assert 'alt="A line up to height a, at a = 3, b = x"' in html     # what it shows, at the sliders' values
    assert plt.get_fignums() == []                                    # every frame's figure closed


def test_slider_grid_bounded(monkeypatch):
    """Grids keep every step while they fit, else are coarsened to at most max_frames, defaults kept."""
    monkeypatch.delenv("SILENT_SLIDER_FRAMES", raising=False)
    assert widgets.MAX_FRAMES == 40
    assert widgets.grid(t=(0.0, 5.0, 0.25, 2.0))["t"] == [k * 0.25 for k in range(21)]
    g = widgets.grid(sigma=("log", 1e-6, 0.3, 1e-3), s=(0.25, 4.0, 0.25, 1.0), N=(1, 100, 1, 10),
                     D=(1, 100, 1, 25), extra=(), max_frames=40)
    sizes = [len(v) for v in g.values()]
    assert 30 <= np.prod(sizes) <= 40 and g["extra"] == [()] and max(sizes) - min(sizes[:4]) <= 1
    for name, default in (("sigma", 1e-3), ("s", 1.0), ("N", 10), ("D", 25)):
        assert default in g[name], (name, g[name])
    assert g["sigma"][0] == 1e-6 and g["sigma"][-1] == pytest.approx(0.3) and g["s"][-1] == 4.0
    g = widgets.grid(L=(2, 6, 1, 3), sigma2=("log", 1e-6, 1e-1, 1e-3), max_frames=40)
    assert g["L"] == [2, 3, 4, 5, 6] and len(g["sigma2"]) == 8 and 1e-3 in g["sigma2"]
    assert widgets.grid(sigma=[0.03, 0.1, 0.3, 1.0], depth=[2, 3]) == {"sigma": [0.03, 0.1, 0.3, 1.0], "depth": [2, 3]}
    monkeypatch.setenv("SILENT_SLIDER_FRAMES", "6")
    assert widgets.grid(t=(0.0, 5.0, 0.25, 2.0)) == {"t": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}
    with pytest.raises(ValueError, match="max_frames"):
        widgets.grid(a=[1, 2], b=[1, 2], c=[1, 2], max_frames=4)


def test_book_build_and_tests_run_sliders_static(monkeypatch):
    """The book's Sphinx extension (and the test session) set SILENT_STATIC for the chapters' kernels."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert "headless: _ext" in (root / "_config.yml").read_text()
    module = load_module(root / "_ext" / "headless.py")
    monkeypatch.delenv("SILENT_STATIC", raising=False)
    module.setup(None)
    assert __import__("os").environ.get("SILENT_STATIC") == "1"


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


def test_layerwise_flop_count_by_hand():
    model = sl.MLP(3, 4, 2)                 # 3 -> 4 -> 1, no bias
    # forward 2*5*(3*4 + 4*1) = 160; backward through layer 2 only: 2*5*1*1*4 = 40;
    # per pair of inputs: layer 1 2*3 + 2*4, layer 2 2*4 + 2*1 = 24
    assert bench.layerwise_flops(model, 5, 1, 5) == 160 + 40 + 25 * 24
    # blocks of 2, 2, 1: the pairs on and above the diagonal, 4+4+2 + 4+2 + 1 = 17
    assert bench.layerwise_flops(model, 5, 1, 2) == 160 + 40 + 17 * 24


def test_baselines_that_do_not_fit_are_reported_oom_and_slow_ones_skipped(monkeypatch):
    rows = run_benchmark([4, 8], device="cpu", dtype="float64", width=8, d_in=6, repeats=1, max_seconds=1e-9)
    by = {(r["P"], r["method"]): r for r in rows}
    assert by[(4, "jacobian")]["status"] == "ok" and by[(8, "jacobian")]["status"] == "skip"
    assert by[(8, "vp")]["predicted"] > 0 and by[(8, "layerwise")]["status"] == "ok"
    monkeypatch.setattr(config, "free_memory", lambda dev: 30_000)   # the layerwise method blocks, the rest cannot
    rows = run_benchmark([30], device="cpu", dtype="float64", width=40, d_in=6, repeats=1)
    by = {r["method"]: r for r in rows}
    assert by["layerwise"]["status"] == "ok" and by["layerwise"]["block_size"] < 30
    assert by["jacobian"]["status"] == "OOM" and by["vp"]["status"] == "OOM"
    assert "OOM" in format_table(rows)


def test_tracking_and_generic_rows():
    t = bench.tracking_overhead(device="cpu", dtype="float64", P=20, width=16, n_steps=30, n_records=5)
    assert t["plain_seconds"] > 0 and t["tracked_seconds"] > 0 and t["final_loss"] < 1
    assert t["overhead"] == pytest.approx(t["tracked_seconds"] / t["plain_seconds"] - 1)
    g = bench.generic_models(device="cpu", dtype="float64", P=3, widen=1)
    assert [r["method"] for r in g] == ["jacobian", "vp"]
    assert g[0]["kernel_shape"] == [3, 3, 10, 10] and g[1]["max_rel_diff_to_jacobian"] < 1e-10


def test_cli_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    report = cli_bench(["--sizes", "3,5", "--width", "8", "--d-in", "5", "--repeats", "1", "--device", "cpu",
                        "--dtype", "float64", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["versions"]["torch"] == torch.__version__
    assert [(r["P"], r["method"]) for r in data["rows"]] == [(r["P"], r["method"]) for r in report["rows"]]
    assert all(r["status"] == "ok" for r in data["rows"])
