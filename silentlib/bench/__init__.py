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
training, the generic methods on the paper's Wide-ResNet with 10 outputs, and what
:func:`~silentlib.ntk.ntk`'s checks cost on two CNNs against a bare torch.func contraction. ::

    python -m silentlib bench                       # the reduced grid on a CPU, the full grid on a GPU
    python -m silentlib bench --full --json out.json
    python -m silentlib bench --sizes 100,200,400   # one MLP, a scan over P
    python -m silentlib bench --distributed 2       # one kernel on 1 and on 2 processes: the speed-up
    python -m silentlib bench --training            # training: the old loop, gd, the flow, together

The package by concept: :mod:`~silentlib.bench.timing` (the timed cases, :func:`~silentlib.bench.timing.run_benchmark`),
:mod:`~silentlib.bench.grid` (:func:`~silentlib.bench.grid.run_grid`, tracking, the Wide-ResNet),
:mod:`~silentlib.bench.peer` (neural-tangents side by side), :mod:`~silentlib.bench.distributed`
(one kernel on one process and on several), :mod:`~silentlib.bench.training` (training the chapters'
sweeps several ways), :mod:`~silentlib.bench.report` (tables), :mod:`~silentlib.bench.overhead`
(the checks' cost) and :mod:`~silentlib.bench.cli` (the command).
"""
from __future__ import annotations

from .cli import main
from .grid import CPU_GRID, FULL_GRID, generic_models, run_grid, tracking_overhead, versions
from .overhead import bare_ntk, checks_overhead, cnn3, format_overhead
from .peer import PEER_IMPLEMENTATIONS, PEER_INSTALL, load_peer, peer_kernel_fns
from .report import format_report, format_table
from .timing import (BENCH_METHODS, DEFAULT_SIZES, DTYPES, layerwise_flops, matmul_throughput,
                     run_benchmark)
from .training import format_training, loop_train, run_training_bench

