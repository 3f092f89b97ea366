"""Timing of the exact NTK methods against each other and against the hardware (``python -m silentlib bench``).

For ReLU MLPs on MNIST-sized inputs (D = 784; random inputs, since the cost does
not depend on the values) the benchmark times :func:`silentlib.ntk.ntk` with

* ``layerwise`` -- the library's method for MLPs, blocked by :func:`~silentlib.ntk.ntk_plan`;
* ``jacobian`` -- torch.func per-example Jacobians (``vmap(jacrev)``) contracted over
  parameters, all inputs in one block, as one would write it by hand;
* ``vp`` -- NTK-vector products (``vjp`` then ``jvp``), all inputs in one block;

after a warm-up, with CUDA synchronized around every timed call. A baseline whose
single block would not fit in free memory is reported as ``OOM`` (refused by the
memory plan, or by the allocator); one whose time, extrapolated as P^2 from the
previous size, exceeds ``max_seconds`` is reported as ``skip``. Each time is given
as a ratio to the layerwise time measured in the same run; the layerwise FLOP/s are
compared with the float32 (or float64) matrix-product throughput of the same device,
also measured in the same run. The benchmark also times NTK tracking during
training and the generic methods on the paper's Wide-ResNet with 10 outputs. ::

    python -m silentlib bench                       # the reduced grid on a CPU, the full grid on a GPU
    python -m silentlib bench --full --json out.json
    python -m silentlib bench --sizes 100,200,400   # one MLP, a scan over P
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from . import __version__
from . import config
from .config import exact_matmul
from .models import MLP, WideResNet
from .ntk import METHODS, ntk, ntk_plan
from .ntk.products import gram as _gram
from .train import train

BENCH_METHODS = ("layerwise", "jacobian", "vp")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_SIZES = (100, 200, 400)

# (widths, depths, outputs, sizes) of the grid; the reduced one is for CPUs
FULL_GRID = [((1000, 4096), (2, 3, 5), 1, (500, 1000, 4000, 8000, 20000)),
             ((1000, 4096), (2, 3, 5), 10, (500, 1000, 2000))]
CPU_GRID = [((512,), (3,), 1, (100, 200, 400)),
            ((1000,), (2,), 1, (250, 500, 1000)),
            ((256,), (2,), 10, (50, 100, 200))]


def device_name(dev: torch.device) -> str:
    """A readable name for ``dev``: the GPU's name, or the CPU model and torch's thread count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def versions() -> dict:
    """The versions of silentlib, torch, numpy, Python and CUDA, recorded with every report."""
    return {"silentlib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


CLOCK = time.perf_counter  # ``--cpu-time``: time.process_time, the CPU seconds of every thread of the process


def _time(fn, dev, repeats):
    """Median time of ``repeats`` calls (one call if it takes over 2 s) by :data:`CLOCK`, and the last result.

    The median rather than the best: on a shared machine the best of a few calls rewards luck."""
    times, out = [], None
    for _ in range(repeats):
        _sync(dev)
        t0 = CLOCK()
        out = fn()
        _sync(dev)
        times.append(CLOCK() - t0)
        if times[-1] > 2.0:
            break
    return statistics.median(times), out


def matmul_throughput(dev, dtype, n=None, repeats=3) -> float:
    """FLOP/s of an n x n matrix product on ``dev`` in ``dtype`` (no TF32): 2 n^3 / median time.

    The product is the one :func:`silentlib.ntk` computes with (on a CPU in float32, oneDNN's,
    which on AMD CPUs is about twice torch's ``@``)."""
    n = n or (8192 if dev.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    with exact_matmul():
        _gram(a, b)
        sec, _ = _time(lambda: _gram(a, b), dev, repeats)
    return 2 * n ** 3 / sec


def layerwise_flops(model, P, C, block_size) -> int:
    """Multiply-adds x 2 of the plain layerwise formula for P inputs in blocks of ``block_size``.

    The nominal count, against which the FLOP/s and %mm columns are given: the method itself does
    fewer (diagonal blocks by a staircase of about 62.5 %, no product with the last layer's G = I),
    so %mm may exceed 100. Features: one forward pass (2 P sum_l n_in n_out) and the backward products g @ W_l for every layer
    but the first (2 P C n_out n_in). Kernel: the blocks on and above the diagonal, each costing
    sum_l 2 b1 b2 (n_in + bias) + 2 (b1 C)(b2 C) n_out.
    """
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    feats = sum(2 * P * l.in_features * l.out_features for l in lins)
    feats += sum(2 * P * C * l.out_features * l.in_features for l in lins[1:])
    per_pair = sum(2 * (l.in_features + (l.bias is not None)) + 2 * C * C * l.out_features for l in lins)
    sizes = [min(block_size, P - i) for i in range(0, P, block_size)]
    pairs = sum(sizes[k] * sizes[m] for k in range(len(sizes)) for m in range(k, len(sizes)))
    return feats + pairs * per_pair


def _baseline(model, x, method, dev, repeats):
    """Time one unblocked baseline; ("OOM", None) when its single block does not fit."""
    try:
        ntk_plan(model, x, method=method, block_size=x.shape[0])
        return _time(lambda: ntk(model, x, method=method, block_size=x.shape[0]), dev, repeats)
    except ValueError as err:
        if "free" not in str(err):  # not a memory refusal
            raise
    except torch.OutOfMemoryError:
        pass
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return "OOM", None


def run_benchmark(sizes=DEFAULT_SIZES, *, device=None, dtype="float32", methods=BENCH_METHODS,
                  width=256, depth=3, out_dim=1, d_in=784, repeats=3, seed=0, max_seconds=math.inf,
                  peak=None, verbose=False, peer=None):
    """Time ``ntk(model, x, method=m)`` for every P in ``sizes`` and m in ``methods``, for one MLP.

    Parameters
    ----------
    sizes
        Numbers of inputs P (the kernel is P x P), increasing.
    device
        ``"cpu"``, ``"cuda"`` or None (CUDA when available).
    dtype
        ``"float32"`` or ``"float64"``.
    methods
        A subset of ("layerwise", "jacobian", "vp"); "layerwise" always runs first.
    width, depth, out_dim, d_in
        The ReLU MLP (default: 784 -> 256 -> 256 -> 1).
    repeats
        Timed calls per entry; the median is kept.
    peer
        The ``neural_tangents`` module (see :func:`load_peer`) to time its three implementations
        side by side, or None.
    max_seconds
        Skip a baseline whose time extrapolated (as P^2) from the previous size exceeds this.
    peak
        The device's matrix-product FLOP/s, for the ``peak_fraction`` column.

    Returns a list of dict rows, one per (P, method), with keys ``P``, ``width``, ``depth``,
    ``C``, ``method``, ``status`` ("ok", "OOM" or "skip"), ``seconds`` (None unless ok),
    ``ratio`` (seconds / layerwise seconds at the same P), ``max_rel_diff``
    (``max |K - K_layerwise| / max |K_layerwise|``), ``flops``, ``flop_rate`` and ``peak_fraction`` (layerwise only),
    ``block_size``, ``device``, ``dtype``, ``torch``, ``n_params``; with ``peer``, also ``peer``
    (the neural-tangents implementation), ``peer_status``, ``peer_seconds``, ``peer_ratio`` (seconds /
    peer_seconds, measured in the same run) and ``peer_max_rel_diff`` (to the layerwise kernel).
    """
    sizes = [int(p) for p in sizes]
    if not sizes or any(p < 1 for p in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    unknown = [m for m in methods if m not in METHODS or m == "auto"]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {BENCH_METHODS}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    methods = ["layerwise"] + [m for m in methods if m != "layerwise"]
    dev = _device(device)

    gen = torch.Generator().manual_seed(seed)
    model = MLP(d_in, width, depth, out_dim=out_dim, activation="relu", sigma=1.0)
    model.reset_parameters(gen)
    model = model.to(device=dev, dtype=DTYPES[dtype])
    n_params = sum(p.numel() for p in model.parameters())
    x_all = torch.randn(max(sizes), d_in, generator=gen).to(device=dev, dtype=DTYPES[dtype])
    peer_fns = peer_kernel_fns(peer, model) if peer is not None else None
    ntk(model, x_all[:8], method="layerwise")  # warm-up: allocators, first kernel launches, torch.func tracing
    for m in methods[1:]:
        _baseline(model, x_all[:8], m, dev, 1)
    _sync(dev)

    rows, last = [], {}
    for P in sizes:
        x = x_all[:P]
        ref_t = ref = None
        for m in methods:
            row = {"P": P, "width": width, "depth": depth, "C": out_dim, "method": m, "status": "ok",
                   "seconds": None, "ratio": None, "max_rel_diff": None, "flops": None, "flop_rate": None,
                   "peak_fraction": None, "block_size": None, "device": device_name(dev), "dtype": dtype,
                   "torch": torch.__version__, "n_params": n_params}
            if m == "layerwise":
                block = ntk_plan(model, x, method=m).block_size
                sec, K = _time(lambda: ntk(model, x, method=m), dev, repeats)
                ref_t, ref = sec, K
                flops = layerwise_flops(model, P, out_dim, block)
                row.update(block_size=block, flops=flops, flop_rate=flops / sec,
                           peak_fraction=flops / sec / peak if peak else None)
            elif m in last and last[m][1] * (P / last[m][0]) ** 2 > max_seconds:
                row.update(status="skip", predicted=last[m][1] * (P / last[m][0]) ** 2)
                sec = K = None
            else:
                sec, K = _baseline(model, x, m, dev, repeats)
                if sec == "OOM":
                    row["status"], sec = "OOM", None
                else:
                    row["block_size"] = P
            if sec is not None:
                last[m] = (P, sec)
                row.update(seconds=sec, ratio=sec / ref_t,
                           max_rel_diff=float((K - ref).abs().max() / ref.abs().max()))
            if peer_fns is not None:
                _time_peer(row, peer_fns[m], x, ref, last, max_seconds, repeats)
            rows.append(row)
            if verbose:
                print(_row_line(row), flush=True)
            del K
        del ref
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# silentlib's method -> the neural-tangents implementation it is measured against
PEER_IMPLEMENTATIONS = {"layerwise": "STRUCTURED_DERIVATIVES", "jacobian": "JACOBIAN_CONTRACTION",
                        "vp": "NTK_VECTOR_PRODUCTS"}
#: The command that makes a separate environment in which neural-tangents 0.6.5 imports and runs.
PEER_INSTALL = ('python -m venv /tmp/ntvenv && /tmp/ntvenv/bin/pip install jax==0.4.23 jaxlib==0.4.23 '
                'neural-tangents==0.6.5 "numpy<2" "scipy<1.14" torch==2.13.0 matplotlib tqdm mlxtend, then '
                'PYTHONPATH=. /tmp/ntvenv/bin/python -m silentlib bench --peer')


def load_peer():
    """(the ``neural_tangents`` module, None), or (None, why it does not import here).

    neural-tangents 0.6.5 does not import on current JAX, and its structured derivatives fail on
    jax 0.4.26; it runs on jax 0.4.23 in a separate environment (:data:`PEER_INSTALL`)."""
    try:
        import neural_tangents
        from neural_tangents import stax  # noqa: F401
    except Exception as err:  # ImportError, or an incompatible JAX failing at import
        return None, f"{type(err).__name__}: {err}"
    return neural_tangents, None


def peer_kernel_fns(nt, model):
    """For silentlib's ReLU MLP ``model``, neural-tangents' three NTK implementations of the same network
    with the same weights (``stax.Dense`` in standard parameterization), jitted, as functions of a torch
    batch returning the kernel as a torch tensor shaped like :func:`silentlib.ntk`'s.

    ``vmap_axes=0`` (inputs independent, as :func:`silentlib.ntk` assumes) and ``trace_axes=()`` (the
    full C x C blocks). Float64 switches JAX to 64 bits."""
    import jax
    import jax.numpy as jnp
    from neural_tangents import stax

    dtype = next(model.parameters()).dtype
    if dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    lins = model.linears
    layers, params = [], []
    for i, lin in enumerate(lins):
        if i:
            layers.append(stax.Relu())
            params.append(())
        layers.append(stax.Dense(lin.out_features, b_std=None if lin.bias is None else 1.0,
                                 parameterization="standard"))
        W = jnp.asarray(lin.weight.detach().cpu().numpy().T)
        params.append((W, None if lin.bias is None else jnp.asarray(lin.bias.detach().cpu().numpy())))
    _, apply_fn, _ = stax.serial(*layers)
    C = lins[-1].out_features
    fns = {}
    for method, impl in PEER_IMPLEMENTATIONS.items():
        kernel = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0,
                                            implementation=getattr(nt.NtkImplementation, impl)))

        def fn(x, kernel=kernel):
            K = kernel(jnp.asarray(x.detach().cpu().numpy()), None, params).block_until_ready()
            K = torch.from_numpy(np.array(K))  # a writable copy
            return K[:, :, 0, 0] if C == 1 else K

        fn.implementation = impl
        fns[method] = fn
    return fns


def _time_peer(row, fn, x, ref, last, max_seconds, repeats):
    """Time neural-tangents' ``fn`` on x (compilation excluded: one call first) into ``row``."""
    key = "peer:" + row["method"]
    row.update(peer=fn.implementation, peer_status="ok", peer_seconds=None, peer_ratio=None,
               peer_max_rel_diff=None)
    if key in last and last[key][1] * (row["P"] / last[key][0]) ** 2 > max_seconds:
        row["peer_status"] = "skip"
        return
    try:
        fn(x)  # compiles for this shape
        sec, K = _time(lambda: fn(x), torch.device("cpu"), repeats)
    except Exception as err:  # the peer's own failure (out of memory, an unsupported JAX)
        row["peer_status"] = f"failed: {type(err).__name__}"
        return
    last[key] = (row["P"], sec)
    row.update(peer_seconds=sec, peer_max_rel_diff=float((K.to(ref) - ref).abs().max() / ref.abs().max()))
    if row["seconds"] is not None:
        row["peer_ratio"] = row["seconds"] / sec


def _device(device):
    dev = torch.device(device) if device is not None else config.device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return dev


def _row_line(r):
    what = f"{r['seconds']:10.4f} s  x{r['ratio']:8.1f}" if r["status"] == "ok" else f"{r['status']:>12}"
    if r["status"] == "skip":
        what += f" (~{r['predicted']:.0f} s)"
    rate = f"  {r['flop_rate'] / 1e12:7.3f} TFLOP/s" if r["flop_rate"] else ""
    if r["peak_fraction"]:
        rate += f" ({100 * r['peak_fraction']:.0f}% of matmul)"
    return f"  P={r['P']:>6} N={r['width']:>5} L={r['depth']} C={r['C']:>2}  {r['method']:<9} {what}{rate}"


def format_table(rows) -> str:
    """The rows of :func:`run_benchmark` as a table: one line per case, the three methods side by side
    (with neural-tangents' time and silentlib / neural-tangents for each method when it was timed)."""
    if not rows:
        return "(no rows)"
    r0 = rows[0]
    peer = any("peer" in r for r in rows)
    pcols = lambda: f" {'NT s':>8} {'sl/NT':>5}" if peer else ""
    clock = "CPU seconds of the process" if CLOCK is time.process_time else "wall seconds"
    lines = [f"exact NTK timing ({clock}, medians), ReLU MLPs with D = 784, {r0['dtype']}, device {r0['device']}, "
             f"torch {r0['torch']}"
             + (" | NT: neural-tangents (layerwise vs STRUCTURED_DERIVATIVES, jacobian vs JACOBIAN_CONTRACTION, "
                "vp vs NTK_VECTOR_PRODUCTS), jitted, compile time excluded" if peer else ""),
             f"{'P':>6} {'N':>5} {'L':>2} {'C':>3} {'params':>11} | {'layerwise s':>11} {'TFLOP/s':>8} "
             f"{'%mm':>4}{pcols()} | {'jacobian s':>10} {'x':>7}{pcols()} | {'vp s':>10} {'x':>7}{pcols()} | "
             f"{'max diff':>8}"]
    cases = {}
    for r in rows:
        cases.setdefault((r["P"], r["width"], r["depth"], r["C"]), {})[r["method"]] = r
    for (P, N, L, C), by in cases.items():
        lw = by["layerwise"]
        cells = []
        for m in ("jacobian", "vp"):
            r = by.get(m)
            if r is None:
                cells.append(f"{'-':>10} {'':>7}" + (f" {'-':>8} {'':>5}" if peer else ""))
                continue
            cell = f"{r['status']:>10} {'':>7}" if r["status"] != "ok" else f"{r['seconds']:>10.4f} {r['ratio']:>7.1f}"
            cells.append(cell + _peer_cells(r, peer))
        diffs = [r["max_rel_diff"] for r in by.values() if r["method"] != "layerwise" and r["max_rel_diff"] is not None]
        diffs += [r["peer_max_rel_diff"] for r in by.values() if r.get("peer_max_rel_diff") is not None]
        pct = f"{100 * lw['peak_fraction']:>4.0f}" if lw["peak_fraction"] else f"{'':>4}"
        lines.append(f"{P:>6} {N:>5} {L:>2} {C:>3} {lw['n_params']:>11,} | {lw['seconds']:>11.4f} "
                     f"{lw['flop_rate'] / 1e12:>8.3f} {pct}{_peer_cells(lw, peer)} | {cells[0]} | {cells[1]} | "
                     f"{max(diffs) if diffs else float('nan'):>8.1e}")
    return "\n".join(lines)


def _peer_cells(r, peer):
    if not peer:
        return ""
    if r.get("peer_seconds") is None:
        return f" {str(r.get('peer_status', '-'))[:8]:>8} {'':>5}"
    ratio = f"{r['peer_ratio']:>5.2f}" if r.get("peer_ratio") is not None else f"{'':>5}"
    return f" {r['peer_seconds']:>8.4f} {ratio}"


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
        _sync(dev)
        t0 = time.perf_counter()
        tr = train(model, x, y, lr=lr, t_max=lr * n_steps, n_records=n_records, track_ntk=track,
                   device=dev, progress=False)
        _sync(dev)
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
        sec, K = _time(lambda: ntk(model, x, method=m), dev, repeats)
        diff = None if ref is None else float((K - ref).abs().max() / ref.abs().max())
        ref = K if ref is None else ref
        rows.append({"model": f"WideResNet(widen={widen}, block_size=1), 10 outputs", "P": P, "method": m,
                     "n_params": n_params, "seconds": sec, "block_size": plan.block_size,
                     "groups": len(plan.groups or [None]), "kernel_shape": list(K.shape),
                     "working_GiB": plan.working_bytes / 2**30, "max_rel_diff_to_jacobian": diff})
    return rows


def run_grid(*, full, device=None, dtype="float32", repeats=3, max_seconds=None, verbose=True, peer=None,
             extras=True) -> dict:
    """The whole benchmark: matmul throughput, the MLP grid (with neural-tangents side by side when
    ``peer`` is its module), and unless ``extras`` is False tracking overhead and the Wide-ResNet."""
    dev = _device(device)
    gpu = dev.type == "cuda"
    grid = FULL_GRID if full or gpu else CPU_GRID
    max_seconds = max_seconds or (60.0 if gpu else 20.0)
    peak = matmul_throughput(dev, DTYPES[dtype])
    report = {"device": device_name(dev), "dtype": dtype, "versions": versions(), "tf32": False,
              "matmul_flop_rate": peak, "grid": "full" if grid is FULL_GRID else "reduced (CPU)", "rows": []}
    if verbose:
        print(f"{report['device']}, {dtype}, {report['versions']}; matmul {peak / 1e12:.3f} TFLOP/s", flush=True)
    for widths, depths, C, sizes in grid:
        for N in widths:
            for L in depths:
                report["rows"] += run_benchmark(sizes, device=dev, dtype=dtype, width=N, depth=L, out_dim=C,
                                                repeats=repeats, max_seconds=max_seconds, peak=peak,
                                                verbose=verbose, peer=peer)
    if not extras:
        return report
    # P = N = 1000 with 100 records; a CPU runs fewer steps (each takes ~20 ms there)
    report["tracking"] = tracking_overhead(device=dev, dtype=dtype, n_steps=10000 if gpu or full else 1000,
                                           width=1000, P=1000)
    report["generic"] = generic_models(device=dev, dtype=dtype, P=100 if gpu or full else 12,
                                       widen=4, repeats=1 if not gpu else 2)
    return report


def format_report(report) -> str:
    """The text report of :func:`run_grid`'s result: the table, NTK tracking and the Wide-ResNet."""
    lines = [format_table(report["rows"])]
    lines.insert(0, f"versions: {report['versions']}; TF32 off; {report['grid']} grid; "
                    f"float matmul throughput {report['matmul_flop_rate'] / 1e12:.3f} TFLOP/s "
                    "(%mm: layerwise FLOP/s as a share of it)")
    if "tracking" not in report:
        return "\n".join(lines)
    t = report["tracking"]
    lines.append(f"\nNTK tracking during training (P = {t['P']}, N = {t['width']}, L = 2, {t['n_steps']} GD steps, "
                 f"{t['n_records']} records): {t['plain_seconds']:.2f} s without, {t['tracked_seconds']:.2f} s with: "
                 f"+{100 * t['overhead']:.0f}%")
    for g in report["generic"]:
        diff = "" if g["max_rel_diff_to_jacobian"] is None else f", max rel diff to jacobian {g['max_rel_diff_to_jacobian']:.1e}"
        lines.append(f"{g['model']}, {g['n_params']:,} parameters, P = {g['P']}: {g['method']:<8} "
                     f"{g['seconds']:8.2f} s (blocks of {g['block_size']}, {g['groups']} parameter group(s), "
                     f"kernel {tuple(g['kernel_shape'])}{diff})")
    return "\n".join(lines)


def main(argv=None):
    """``python -m silentlib bench [options]`` (``--help`` lists them): run, print and return the report."""
    global CLOCK
    saved = CLOCK
    try:
        return _main(argv)
    finally:
        CLOCK = saved


def _main(argv):
    parser = argparse.ArgumentParser(prog="python -m silentlib bench",
                                     description="Time the exact NTK methods against each other and the hardware.")
    parser.add_argument("--full", action="store_true", help="the full grid also on a CPU (hours)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated P: time one MLP (--width, --depth, --outputs) instead of the grid")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--methods", default=",".join(BENCH_METHODS),
                        help="comma-separated subset of layerwise,jacobian,vp (with --sizes)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--outputs", type=int, default=1)
    parser.add_argument("--d-in", type=int, default=784)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per entry; the median is kept")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip a baseline predicted to take longer (default 20 on a CPU, 60 on a GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's); with --peer, 1 also makes JAX single-threaded")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--peer", action="store_true",
                        help="also time neural-tangents' three implementations side by side (needs neural_tangents "
                             "0.6.5 on jax 0.4.23, a separate environment; see the README)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the CPU seconds of the process (all its threads) instead of wall time: with "
                             "--threads 1, a comparison that other processes on a shared machine disturb less")
    parser.add_argument("--no-extras", action="store_true",
                        help="the grid only: no tracking overhead, no Wide-ResNet")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    peer = None
    if args.peer:
        if args.threads == 1 and "jax" not in sys.modules:  # XLA reads its flags when jax first loads
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        peer, why = load_peer()
        if peer is None:
            print(f"--peer: neural_tangents does not import in this environment ({why}), so the table has no "
                  f"neural-tangents columns. It needs its own environment: {PEER_INSTALL}", flush=True)
        else:
            import jax
            print(f"--peer: neural-tangents {getattr(peer, '__version__', '?')} on jax {jax.__version__}, "
                  f"devices {jax.devices()}", flush=True)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch has no CUDA device")
    try:
        if args.sizes is not None:
            try:
                sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            except ValueError:
                parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
            dev = _device(args.device)
            if peer is not None and dev.type != "cpu":
                parser.error("--peer compares on the CPU (the peer's environment has a CPU jaxlib); add --device cpu")
            rows = run_benchmark(sizes, device=dev, dtype=args.dtype, methods=methods, width=args.width,
                                 depth=args.depth, out_dim=args.outputs, d_in=args.d_in, repeats=args.repeats,
                                 max_seconds=args.max_seconds or math.inf,
                                 peak=matmul_throughput(dev, DTYPES[args.dtype]), verbose=True, peer=peer)
            report = {"device": rows[0]["device"], "dtype": args.dtype, "versions": versions(), "rows": rows}
            print(format_table(rows))
        else:
            if peer is not None and _device(args.device).type != "cpu":
                parser.error("--peer compares on the CPU (the peer's environment has a CPU jaxlib); add --device cpu")
            report = run_grid(full=args.full, device=args.device, dtype=args.dtype, repeats=args.repeats,
                              max_seconds=args.max_seconds, peer=peer, extras=not args.no_extras)
            print(format_report(report))
    except ValueError as err:
        parser.error(str(err))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return report
