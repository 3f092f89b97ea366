"""Timing of the three exact NTK methods (``python -m silentlib bench``).

Times :func:`silentlib.ntk` with ``method="layerwise"``, ``"jacobian"`` and
``"vp"`` on the training-set kernel K(x, x) of a depth-3 ReLU MLP on
MNIST-sized inputs (D = 784, random inputs: the cost does not depend on the
values) for several numbers of inputs P, after a warm-up call per method, with
CUDA synchronized around every timed call. Each method's time is reported with
its ratio to the layerwise time measured in the same run, and the kernels'
largest relative deviation from the layerwise one (they compute the same
matrix). Ratios are only comparable within one run on one device.

    python -m silentlib bench --sizes 100,200,400 --device cuda --dtype float32
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from .models import MLP
from .ntk import METHODS, ntk

DEFAULT_SIZES = (100, 200, 400)
BENCH_METHODS = ("layerwise", "jacobian", "vp")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def device_name(dev: torch.device) -> str:
    """A readable name for ``dev``: the GPU's name, or the CPU model."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return (platform.processor() or "CPU") + f" ({torch.get_num_threads()} threads)"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn, dev, repeats):
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_benchmark(sizes=DEFAULT_SIZES, *, device=None, dtype="float32", methods=BENCH_METHODS,
                  width=256, depth=3, d_in=784, repeats=3, seed=0, verbose=False):
    """Time ``ntk(model, x, method=m)`` for every P in ``sizes`` and m in ``methods``.

    Parameters
    ----------
    sizes : numbers of inputs P (the kernel is P x P).
    device : ``"cpu"``, ``"cuda"`` or None (CUDA when available).
    dtype : ``"float32"`` or ``"float64"``.
    methods : a subset of ("layerwise", "jacobian", "vp"); "layerwise" is always
        run (first) since the ratios refer to it.
    width, depth, d_in : the ReLU MLP (default: 784 -> 256 -> 256 -> 1).
    repeats : timed calls per (P, method); the best is kept.
    seed : seeds the model and inputs.

    Returns a list of dict rows, one per (P, method), with keys ``P``, ``method``,
    ``seconds``, ``ratio`` (seconds / layerwise seconds at the same P),
    ``max_rel_diff`` (max |K - K_layerwise| / max |K_layerwise|), ``device``,
    ``dtype``, ``torch``, ``n_params``.
    """
    sizes = [int(p) for p in sizes]
    if not sizes or any(p < 1 for p in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    unknown = [m for m in methods if m not in METHODS or m == "auto"]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {BENCH_METHODS}")
    methods = ["layerwise"] + [m for m in methods if m != "layerwise"]
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")

    gen = torch.Generator().manual_seed(seed)
    model = MLP(d_in, width, depth, activation="relu", sigma=1.0)
    model.reset_parameters(gen)
    model = model.to(device=dev, dtype=DTYPES[dtype])
    n_params = sum(p.numel() for p in model.parameters())
    x_all = torch.randn(max(sizes), d_in, generator=gen).to(device=dev, dtype=DTYPES[dtype])
    name, version = device_name(dev), torch.__version__

    # warm-up: allocators, kernels' first launch, torch.func tracing
    for m in methods:
        ntk(model, x_all[:8], method=m)
    _sync(dev)

    rows = []
    for P in sizes:
        x = x_all[:P]
        ref_t, ref = None, None
        for m in methods:
            sec, K = _time(lambda: ntk(model, x, method=m), dev, repeats)
            if m == "layerwise":
                ref_t, ref = sec, K
            diff = float((K - ref).abs().max() / ref.abs().max())
            rows.append({"P": P, "method": m, "seconds": sec, "ratio": sec / ref_t,
                         "max_rel_diff": diff, "device": name, "dtype": dtype,
                         "torch": version, "n_params": n_params})
            if verbose:
                print(f"  P={P:>6}  {m:<9}  {sec:9.4f} s", flush=True)
            del K
        del ref
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_table(rows) -> str:
    """The rows of :func:`run_benchmark` as a plain-text table with a header line."""
    if not rows:
        return "(no rows)"
    r0 = rows[0]
    lines = [f"exact NTK timing: ReLU MLP with {r0['n_params']:,} parameters, {r0['dtype']}, "
             f"device {r0['device']}, torch {r0['torch']}",
             f"{'P':>7}  {'method':<10} {'seconds':>10}  {'x layerwise':>11}  {'max rel diff':>12}"]
    for r in rows:
        lines.append(f"{r['P']:>7}  {r['method']:<10} {r['seconds']:>10.4f}  {r['ratio']:>11.2f}  "
                     f"{r['max_rel_diff']:>12.1e}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m silentlib bench",
                                     description="Time the exact NTK methods against P.")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated numbers of inputs P (default 100,200,400)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--methods", default=",".join(BENCH_METHODS),
                        help="comma-separated subset of layerwise,jacobian,vp")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--d-in", type=int, default=784)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per entry; the best is kept")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        rows = run_benchmark(sizes, device=args.device, dtype=args.dtype, methods=methods,
                             width=args.width, depth=args.depth, d_in=args.d_in,
                             repeats=args.repeats, verbose=True)
    except ValueError as err:
        parser.error(str(err))
    print(format_table(rows))
    return rows
