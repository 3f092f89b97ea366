"""``python -m silentlib bench --distributed N``: one kernel on one process and spread over N, timed
in the same run (:func:`run_distributed`).

N processes of one CPU thread each form a gloo process group on 127.0.0.1
(:func:`silentlib.ntk.distributed.launch`). Rank 0 times the kernel alone (``distributed=False``,
the others waiting idle in a barrier), then all N ranks time it together, from a barrier to the
all-reduce that gives every rank the whole kernel; the two alternate for ``repeats`` rounds (in
turn first), so that a slow spell of a shared machine falls on both, and the medians are kept.
Wall time, and the CPU seconds of rank 0 and of the busiest rank (on a machine whose cores other
processes hold, the wall time measures them as much as the kernel), are reported with the load
average before and after. Speed-up = one-process time / N-process time; parallel efficiency =
speed-up / N. The kernels of both are compared (largest relative difference).
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist

from ..models import MLP
from ..ntk import distributed, ntk


def run_distributed(n, *, P=16000, width=256, depth=3, out_dim=1, d_in=784, dtype="float32", repeats=3,
                    timeout=1800.0) -> dict:
    """Time one ReLU MLP's kernel (P inputs) on one process and on ``n`` (see the module); a dict of
    the settings, the median times and CPU seconds, the speed-ups, efficiencies and load averages."""
    if n < 2:
        raise ValueError(f"--distributed needs at least 2 processes, got {n}")
    load = os.getloadavg()
    ranks = distributed.launch(_rank, n, P, width, depth, out_dim, d_in, dtype, repeats, timeout=timeout)
    report = {"processes": n, "P": P, "width": width, "depth": depth, "outputs": out_dim, "d_in": d_in,
              "dtype": dtype, "repeats": repeats, "threads_per_process": 1, "load_before": load,
              "load_after": os.getloadavg(), **ranks[0]}
    report["busiest_cpu_seconds"] = max(r["cpu_seconds"] for r in ranks)
    report["speedup"] = report["one_seconds"] / report["many_seconds"]
    report["cpu_speedup"] = report["one_cpu_seconds"] / report["busiest_cpu_seconds"]
    report["efficiency"], report["cpu_efficiency"] = report["speedup"] / n, report["cpu_speedup"] / n
    return report


def _rank(P, width, depth, out_dim, d_in, dtype, repeats):
    """One rank's timings (rank 0's include the one-process kernel and the comparison)."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    model = MLP(d_in, width, depth, out_dim=out_dim, activation="relu").to(dt)
    x = torch.randn(P, d_in, dtype=dt)
    ntk(model, x[:64])                      # warm-up, both ways
    ntk(model, x[:64], distributed=False)
    rank, times = dist.get_rank(), {"one": [], "many": []}
    for r in range(repeats):
        for mode in ("one", "many") if r % 2 == 0 else ("many", "one"):
            dist.barrier()
            wall, cpu = time.perf_counter(), time.process_time()
            if mode == "many":
                K = ntk(model, x)
            elif rank == 0:
                alone = ntk(model, x, distributed=False)
            times[mode].append((time.perf_counter() - wall, time.process_time() - cpu))
            dist.barrier()
    result = {"many_seconds": statistics.median(t for t, _ in times["many"]),
              "cpu_seconds": statistics.median(c for _, c in times["many"])}
    if rank == 0:
        result.update(one_seconds=statistics.median(t for t, _ in times["one"]),
                      one_cpu_seconds=statistics.median(c for _, c in times["one"]),
                      max_rel_diff=float((K - alone).abs().max() / alone.abs().max()),
                      kernel_bytes=K.numel() * K.element_size())
    return result


def format_distributed(r) -> str:
    """The report of :func:`run_distributed` as lines of text."""
    return "\n".join([
        f"NTK of a ReLU MLP (P = {r['P']:,}, D = {r['d_in']}, width {r['width']}, depth {r['depth']}, "
        f"{r['outputs']} output(s), {r['dtype']}, {r['kernel_bytes'] / 2**20:.0f} MiB), one CPU thread per process, "
        f"medians of {r['repeats']} interleaved rounds",
        f"  {'1 process':>12}: {r['one_seconds']:8.2f} s wall {r['one_cpu_seconds']:8.2f} s CPU",
        f"  {str(r['processes']) + ' processes':>12}: {r['many_seconds']:8.2f} s wall {r['busiest_cpu_seconds']:8.2f} s CPU "
        f"(the busiest rank; gloo on 127.0.0.1, every rank gets the whole kernel)",
        f"  speed-up {r['speedup']:.2f}x, parallel efficiency {r['efficiency']:.0%} "
        f"(by CPU seconds: {r['cpu_speedup']:.2f}x, {r['cpu_efficiency']:.0%})",
        f"  largest relative difference of the kernels: {r['max_rel_diff']:.1e}",
        "  load average (1, 5, 15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f} on {} cores".format(
            *r["load_before"], *r["load_after"], os.cpu_count()),
    ])
