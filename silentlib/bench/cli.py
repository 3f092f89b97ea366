"""``python -m silentlib bench [options]``: parse, run, print, and write the JSON report."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from . import timing
from .distributed import format_distributed, run_distributed
from .grid import run_grid, versions
from .overhead import checks_overhead, format_overhead
from .peer import PEER_INSTALL, load_peer
from .report import format_report, format_table
from .timing import BENCH_METHODS, DTYPES, matmul_throughput, run_benchmark
from .training import format_training, run_training_bench


def main(argv=None):
    """``python -m silentlib bench [options]`` (``--help`` lists them): run, print and return the report."""
    saved = timing.CLOCK
    try:
        return _main(argv)
    finally:
        timing.CLOCK = saved


def parser():
    """The command's options (an ``argparse.ArgumentParser``)."""
    p = argparse.ArgumentParser(prog="python -m silentlib bench",
                                description="Time the exact NTK methods against each other and the hardware.")
    p.add_argument("--full", action="store_true", help="the full grid also on a CPU (hours)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated P: time one MLP (--width, --depth, --outputs) instead of the grid")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--methods", default=",".join(BENCH_METHODS),
                   help="comma-separated subset of layerwise,jacobian,vp (with --sizes)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--outputs", type=int, default=1)
    p.add_argument("--d-in", type=int, default=784)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per entry at least (more until they take 1 s); the median is kept")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="skip a baseline predicted to take longer (default 20 on a CPU, 60 on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's); with --peer, 1 also makes JAX single-threaded")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--peer", action="store_true",
                   help="also time neural-tangents' three implementations side by side (needs neural_tangents "
                        "0.6.5 on jax 0.4.23, a separate environment; see the README)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time by the CPU seconds of the process (all its threads) instead of wall time: with "
                        "--threads 1, a comparison that other processes on a shared machine disturb less")
    p.add_argument("--no-extras", action="store_true",
                   help="the grid only: no tracking overhead, no Wide-ResNet, no cost of the checks")
    p.add_argument("--checks", action="store_true",
                   help="only the cost of ntk's checks: auto against a bare torch.func contraction on two CNNs")
    p.add_argument("--distributed", type=int, default=None, metavar="N",
                   help="time one MLP's kernel on one process and on N (gloo on 127.0.0.1, one CPU thread each; "
                        "P from --sizes, default 16000) and print the speed-up and parallel efficiency")
    p.add_argument("--training", action="store_true",
                   help="time training instead: the chapters' sweeps by the old loop, gd, the flow, and together "
                        "(fast sizes; --full: the paper's, tens of minutes on a CPU)")
    return p


def _load_peer(threads):
    """The neural_tangents module, or None after saying plainly why it does not import here."""
    if threads == 1 and "jax" not in sys.modules:  # XLA reads its flags when jax first loads
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
    return peer


def _methods(args):
    """The methods of ``--methods``."""
    return [m.strip() for m in args.methods.split(",") if m.strip()]


def _sizes_report(args, p, peer):
    """The report of ``--sizes``: one MLP, a scan over P."""
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    methods = _methods(args)
    dev = timing.device(args.device)
    rows = run_benchmark(sizes, device=dev, dtype=args.dtype, methods=methods, width=args.width,
                         depth=args.depth, out_dim=args.outputs, d_in=args.d_in, repeats=args.repeats,
                         max_seconds=args.max_seconds or math.inf,
                         peak=matmul_throughput(dev, DTYPES[args.dtype]), verbose=True, peer=peer)
    print(format_table(rows))
    return {"device": rows[0]["device"], "dtype": args.dtype, "versions": versions(), "rows": rows}


def _distributed_report(args, p):
    """The report of ``--distributed N``: one kernel on one process and on N."""
    if args.device == "cuda":
        p.error("--distributed times CPU processes (gloo); on GPUs, run a torchrun script (see the README)")
    size = {"P": int(args.sizes.split(",")[0])} if args.sizes else {}
    report = run_distributed(args.distributed, width=args.width, depth=args.depth, out_dim=args.outputs,
                             d_in=args.d_in, dtype=args.dtype, repeats=args.repeats, **size)
    print(format_distributed(report))
    return report


def _main(argv):
    p = parser()
    args = p.parse_args(argv)
    timing.CLOCK = time.process_time if args.cpu_time else time.perf_counter
    peer = _load_peer(args.threads) if args.peer else None
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: this torch has no CUDA device")
    try:
        if peer is not None and timing.device(args.device).type != "cpu":
            p.error("--peer compares on the CPU (the peer's environment has a CPU jaxlib); add --device cpu")
        if args.checks:
            rows = checks_overhead(device=args.device, dtype=args.dtype, repeats=args.repeats)
            print(format_overhead(rows))
            report = {"versions": versions(), "checks": rows}
        elif args.distributed is not None:
            report = _distributed_report(args, p)
        elif args.training:
            report = run_training_bench(full=args.full, device=args.device)
            print(format_training(report))
        elif args.sizes is not None:
            report = _sizes_report(args, p, peer)
        else:
            report = run_grid(full=args.full, device=args.device, dtype=args.dtype, repeats=args.repeats,
                              max_seconds=args.max_seconds, peer=peer, extras=not args.no_extras,
                              methods=_methods(args))
            print(format_report(report))
    except ValueError as err:
        p.error(str(err))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return report
