"""The whole benchmark (:func:`run_grid`): the MLP grid, NTK tracking during training, the Wide-ResNet."""
from __future__ import annotations

import platform
import time

import numpy as np
import torch

from .. import __version__, config
from ..models import MLP, WideResNet
from ..ntk import ntk, ntk_plan
from ..train import train
from .overhead import checks_overhead
from .timing import BENCH_METHODS, DTYPES, matmul_throughput, median_time, run_benchmark, sync
from .timing import device as _device  # the functions' keyword arguments are named ``device``

# (widths, depths, outputs, sizes) of the grid; the reduced one is for CPUs
FULL_GRID = [((1000, 4096), (2, 3, 5), 1, (500, 1000, 4000, 8000, 20000)),
             ((1000, 4096), (2, 3, 5), 10, (500, 1000, 2000))]
CPU_GRID = [((512,), (3,), 1, (100, 200, 400)),
            ((1000,), (2,), 1, (250, 500, 1000)),
            ((256,), (2,), 10, (50, 100, 200))]


def versions() -> dict:
    """The versions of silentlib, torch, numpy, Python and CUDA, recorded with every report."""
    return {"silentlib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}


def tracking_overhead(*, device=None, dtype="float32", P=1000, width=1000, n_steps=10000,
                      n_records=100, seed=0) -> dict:
    """Seconds of the same training run (784 -> width -> 1 ReLU MLP, full-batch GD) with and
    without ``track_ntk``, and the overhead of tracking as a fraction of the untracked time."""
    dev = _device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(P, 784, generator=gen) / 784 ** 0.5   # inputs of unit norm on average
    y = torch.sign(x @ torch.randn(784, generator=gen))
    out = {"P": P, "width": width, "depth": 2, "n_steps": n_steps, "n_records": n_records}
    for track in (False, True):
        model = MLP(784, width, 2, activation="relu", sigma=0.1)
        model.reset_parameters(torch.Generator().manual_seed(seed))
        model = model.to(device=dev, dtype=DTYPES[dtype])
        lr = 0.5
        train(model, x[:8], y[:8], lr=lr, t_max=lr * 2, n_records=2, device=dev)   # warm-up
        sync(dev)
        t0 = time.perf_counter()
        tr = train(model, x, y, lr=lr, t_max=lr * n_steps, n_records=n_records, track_ntk=track,
                   device=dev, progress=False)
        sync(dev)
        out["tracked_seconds" if track else "plain_seconds"] = time.perf_counter() - t0
        out["final_loss"] = float(tr.loss[-1] / tr.loss[0])
    out["overhead"] = out["tracked_seconds"] / out["plain_seconds"] - 1
    return out


def generic_models(*, device=None, dtype="float32", P=100, widen=4, repeats=1, seed=0) -> list:
    """The paper's Wide-ResNet (Figure 1d: width multiplier ``widen``, block size 1) with 10 outputs on
    P CIFAR-sized inputs: ``jacobian`` and ``vp`` as planned by :func:`~silentlib.ntk.ntk_plan`."""
    dev = _device(device)
    torch.manual_seed(seed)
    model = WideResNet(widen=widen, block_size=1, channels=3, out_dim=10).to(device=dev, dtype=DTYPES[dtype])
    x = torch.randn(P, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dev, DTYPES[dtype])
    n_params = sum(p.numel() for p in model.parameters())
    rows, ref = [], None
    for m in ("jacobian", "vp"):
        plan = ntk_plan(model, x, method=m)
        sec, K = median_time(lambda: ntk(model, x, method=m), dev, repeats)
        diff = None if ref is None else float((K - ref).abs().max() / ref.abs().max())
        ref = K if ref is None else ref
        rows.append({"model": f"WideResNet(widen={widen}, block_size=1), 10 outputs", "P": P, "method": m,
                     "n_params": n_params, "seconds": sec, "block_size": plan.block_size,
                     "groups": len(plan.groups or [None]), "kernel_shape": list(K.shape),
                     "working_GiB": plan.working_bytes / 2**30, "max_rel_diff_to_jacobian": diff})
    return rows


def _rate_after(report, later):
    """Take the higher of the matmul throughputs measured before and after the grid (a slow spell of a
    shared machine lowers one of them) as the reference of every row's share of it (``peak_fraction``)."""
    report["matmul_flop_rates"] = [report["matmul_flop_rate"], later]
    report["matmul_flop_rate"] = peak = max(report["matmul_flop_rates"])
    for row in report["rows"]:
        if row.get("flop_rate"):
            row["peak_fraction"] = row["flop_rate"] / peak


def run_grid(*, full, device=None, dtype="float32", repeats=3, max_seconds=None, verbose=True, peer=None,
             extras=True, methods=BENCH_METHODS) -> dict:
    """The whole benchmark: matmul throughput (before and after the grid), the MLP grid for ``methods``
    (with neural-tangents side by side when ``peer`` is its module), and unless ``extras`` is False
    tracking overhead, the Wide-ResNet and the cost of ntk's checks on two CNNs
    (:func:`~silentlib.bench.overhead.checks_overhead`)."""
    dev = _device(device)
    gpu = dev.type == "cuda"
    grid = FULL_GRID if full or gpu else CPU_GRID
    max_seconds = max_seconds or (60.0 if gpu else 20.0)
    peak = matmul_throughput(dev, DTYPES[dtype])
    report = {"device": config.device_name(dev, detailed=True), "dtype": dtype, "versions": versions(),
              "tf32": False, "matmul_flop_rate": peak, "grid": "full" if grid is FULL_GRID else "reduced (CPU)",
              "rows": []}
    if verbose:
        print(f"{report['device']}, {dtype}, {report['versions']}; matmul {peak / 1e12:.3f} TFLOP/s", flush=True)
    for widths, depths, C, sizes in grid:
        for N in widths:
            for L in depths:
                report["rows"] += run_benchmark(sizes, device=dev, dtype=dtype, methods=methods, width=N,
                                                depth=L, out_dim=C, repeats=repeats, max_seconds=max_seconds,
                                                peak=peak, verbose=verbose, peer=peer)
    _rate_after(report, matmul_throughput(dev, DTYPES[dtype]))
    if not extras:
        return report
    # P = N = 1000 with 100 records; a CPU runs fewer steps (each takes ~20 ms there)
    report["tracking"] = tracking_overhead(device=dev, dtype=dtype, n_steps=10000 if gpu or full else 1000,
                                           width=1000, P=1000)
    report["generic"] = generic_models(device=dev, dtype=dtype, P=100 if gpu or full else 12,
                                       widen=4, repeats=1 if not gpu else 2)
    report["checks"] = checks_overhead(device=dev, dtype=dtype, P_wrn=100 if gpu or full else 12, widen=4,
                                       repeats=repeats)
    return report
