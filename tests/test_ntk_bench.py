"""The benchmark's comparisons: with neural-tangents (plain words when it cannot run, the rows when it can),
and of ntk's checks with a bare torch.func contraction.

neural-tangents is not part of requirements.txt (0.6.5 needs jax 0.4.23; see the README), so in the
book's environment --peer must say that it does not import and still print the table. No test
asserts a time."""
import importlib.util

import pytest
import torch

from silentlib import bench

from test_ntk import brute_force_ntk

HAS_PEER = importlib.util.find_spec("neural_tangents") is not None


@pytest.mark.skipif(HAS_PEER, reason="neural_tangents is installed here")
def test_peer_says_plainly_when_neural_tangents_does_not_import(capsys):
    nt, why = bench.load_peer()
    assert nt is None and "neural_tangents" in why
    threads = torch.get_num_threads()
    try:
        report = bench.main(["--sizes", "4", "--width", "8", "--d-in", "5", "--repeats", "1", "--device", "cpu",
                             "--dtype", "float64", "--peer", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "neural_tangents does not import in this environment" in out
    assert "neural-tangents==0.6.5" in out and "jax==0.4.23" in out      # how to get a working one
    assert "layerwise" in out and "NT s" not in out                      # the table, without peer columns
    assert all("peer" not in r for r in report["rows"])


def test_peer_cells_in_the_table():
    """format_table shows the peer's seconds and silentlib / peer where a row has them."""
    rows = bench.run_benchmark([3], device="cpu", dtype="float64", width=8, d_in=6, repeats=1)
    for r, t in zip(rows, (0.5, 0.25, 4.0)):
        r.update(peer="X", peer_status="ok", peer_seconds=t, peer_ratio=r["seconds"] / t, peer_max_rel_diff=1e-16)
    rows[2].update(peer_status="skip", peer_seconds=None, peer_ratio=None)
    table = bench.format_table(rows)
    assert "NT s" in table and "sl/NT" in table and "skip" in table
    line = table.splitlines()[-1]
    assert "0.5000" in line and "0.2500" in line


@pytest.mark.skipif(not HAS_PEER, reason="needs neural_tangents (a separate environment, see the README)")
def test_peer_rows_agree_with_silentlib():
    nt, why = bench.load_peer()
    assert nt is not None, why
    rows = bench.run_benchmark([6], device="cpu", dtype="float64", width=8, depth=3, d_in=5, out_dim=2,
                               repeats=1, peer=nt)
    for r in rows:
        assert r["peer_status"] == "ok" and r["peer_max_rel_diff"] < 1e-10, r


def test_side_by_side_timing_interleaves_the_calls():
    """median_times calls every function once per round, so a slow spell falls on all alike."""
    from silentlib.bench import timing
    calls = []
    results = timing.median_times([lambda: calls.append("a") or 1, lambda: calls.append("b") or 2],
                                  torch.device("cpu"), 3)
    # instant calls: rounds go on to MAX_ROUNDS, since they never reach MIN_SECONDS
    assert calls == ["a", "b"] * timing.MAX_ROUNDS
    assert [out for _, out in results] == [1, 2] and all(sec >= 0 for sec, _ in results)


def test_timing_stops_after_repeats_once_the_calls_took_long_enough(monkeypatch):
    from silentlib.bench import timing
    monkeypatch.setattr(timing, "MIN_SECONDS", 0.0)
    calls = []
    timing.median_times([lambda: calls.append("a")], torch.device("cpu"), 3)
    assert len(calls) == 3


def test_a_failing_peer_is_reported_and_silentlib_still_timed():
    """timed: the peer's exception comes back in place of its time; silentlib's time is still taken."""
    from silentlib.bench import peer as bench_peer
    from silentlib.bench import timing

    def broken():
        raise RuntimeError("out of memory in XLA")
    sec, out, peer = timing.timed(lambda: 7, broken, torch.device("cpu"), 2)
    assert out == 7 and sec >= 0 and isinstance(peer, RuntimeError)
    row = {"method": "vp", "P": 4, "seconds": sec}
    broken.implementation = "NTK_VECTOR_PRODUCTS"
    assert bench_peer.peer_due(row, broken, {}, 1.0)
    bench_peer.record_peer(row, peer, torch.ones(1), {})
    assert row["peer_status"] == "failed: RuntimeError" and row["peer_ratio"] is None


def test_share_of_matmul_is_against_the_higher_of_the_two_throughputs():
    """run_grid measures the matmul throughput before and after the grid and takes the higher one as
    every row's reference, so that a slow spell during one measurement cannot push %mm over 100."""
    from silentlib.bench import grid, report
    rep = {"matmul_flop_rate": 1e11, "versions": {}, "grid": "reduced (CPU)",
           "rows": [{"flop_rate": 1.5e11, "peak_fraction": 1.5}, {"flop_rate": None, "peak_fraction": None}]}
    grid._rate_after(rep, 2e11)
    assert rep["matmul_flop_rate"] == 2e11 and rep["matmul_flop_rates"] == [1e11, 2e11]
    assert rep["rows"][0]["peak_fraction"] == 0.75 and rep["rows"][1]["peak_fraction"] is None
    rep["rows"] = []
    assert "the higher of 0.100 (before the grid) and 0.200 (after)" in report.format_report(rep)


def test_checks_overhead_rows_and_report():
    """bench's cost of the checks: auto, the bare torch.func contraction and the checks alone, timed side by
    side on the two CNNs (small here), with kernels that agree; the report prints them."""
    from silentlib.bench import report
    rows = bench.checks_overhead(device="cpu", dtype="float64", P_cnn=3, P_wrn=2, widen=1, repeats=1)
    assert [r["model"] for r in rows] == ["3-layer CNN (32 channels)", "WideResNet(widen=1, block_size=1)"]
    for r in rows:
        assert r["method"] == "jacobian" and r["max_rel_diff"] < 1e-10
        assert 0 < r["checks_seconds"] < r["auto_seconds"] and r["bare_seconds"] > 0
        assert r["overhead"] == pytest.approx(r["auto_seconds"] / r["bare_seconds"] - 1)
    text = bench.format_overhead(rows)
    assert "bare vmap(jacrev) + einsum" in text and "% of auto" in text and "P = 3" in text
    rep = {"matmul_flop_rate": 1e11, "versions": {}, "grid": "reduced (CPU)", "rows": [],
           "tracking": {"P": 1, "width": 1, "n_steps": 1, "n_records": 1, "plain_seconds": 1.0,
                        "tracked_seconds": 1.0, "overhead": 0.0}, "generic": [], "checks": rows}
    assert text in report.format_report(rep)


def test_bare_contraction_is_the_definition():
    """The baseline itself is the NTK: vmap(jacrev) + einsum against plain autograd, example by example."""
    torch.manual_seed(0)
    model = bench.cnn3(channels=4, out_dim=3, side=6).double()
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    K = brute_force_ntk(model, x, x)
    assert float((bench.bare_ntk(model, x) - K).abs().max() / K.abs().max()) < 1e-12
