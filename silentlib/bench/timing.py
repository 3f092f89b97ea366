"""The timed cases of the benchmark: one MLP, a scan over P, every method (:func:`run_benchmark`)."""
from __future__ import annotations

import functools
import math
import statistics
import time

import numpy as np
import torch

from .. import config
from ..config import check_int, exact_matmul
from ..models import MLP
from ..ntk import METHODS, ntk, ntk_plan
from ..ntk.products import gram

BENCH_METHODS = ("layerwise", "jacobian", "vp")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_SIZES = (100, 200, 400)

#: The clock of every timing: wall time, or with ``--cpu-time`` time.process_time, the CPU seconds of
#: every thread of the process.
CLOCK = time.perf_counter


def sync(dev):
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device(device=None):
    """``device`` as a torch device (default :func:`silentlib.config.device`); ``ValueError`` for a
    CUDA device without CUDA."""
    dev = torch.device(device) if device is not None else config.device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return dev


#: Timed rounds go on past ``repeats`` until they have taken this many seconds (at most
#: :data:`~silentlib.bench.timing.MAX_ROUNDS` rounds), so that the median of a few-millisecond call
#: rests on many calls and a slow spell of a shared machine lasting a few of them does not decide it.
MIN_SECONDS = 1.0
#: The most timed rounds of one entry.
MAX_ROUNDS = 50


def median_time(fn, dev, repeats):
    """Median time by :data:`CLOCK` of at least ``repeats`` calls, and the last result (see
    :func:`median_times`).

    The median rather than the best: on a shared machine the best of a few calls rewards luck."""
    return median_times([fn], dev, repeats)[0]


def median_times(fns, dev, repeats):
    """[(median seconds, last result)] of each of ``fns``, timed in rounds that call every function
    once in turn: ``repeats`` rounds, more until they have taken
    :data:`~silentlib.bench.timing.MIN_SECONDS`, one if a call takes over 2 s.

    Interleaved, so that a slow spell of a shared machine falls on every function alike instead of on
    whichever was being timed then: the ratios of the medians are what side-by-side timing means."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    start = CLOCK()
    for done in range(1, MAX_ROUNDS + 1):
        for k, fn in enumerate(fns):
            sync(dev)
            t0 = CLOCK()
            outs[k] = fn()
            sync(dev)
            times[k].append(CLOCK() - t0)
        if max(t[-1] for t in times) > 2.0 or (done >= repeats and CLOCK() - start >= MIN_SECONDS):
            break
    return [(statistics.median(t), out) for t, out in zip(times, outs)]


def matmul_throughput(dev, dtype, n=None, repeats=3) -> float:
    """FLOP/s of an n x n matrix product on ``dev`` in ``dtype`` (no TF32): 2 n^3 / median time.

    The product is the one :func:`silentlib.ntk` computes with (on a CPU in float32, oneDNN's,
    which on AMD CPUs is about twice torch's ``@``)."""
    n = n or (8192 if dev.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    with exact_matmul():
        gram(a, b)
        sec, _ = median_time(lambda: gram(a, b), dev, repeats)
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


def baseline(model, x, method, dev, repeats, peer_fn=None):
    """Time one unblocked baseline (interleaved with ``peer_fn`` when given, see :func:`timed`);
    ("OOM", None, None) when its single block does not fit."""
    try:
        ntk_plan(model, x, method=method, block_size=x.shape[0])
        return timed(lambda: ntk(model, x, method=method, block_size=x.shape[0]), peer_fn, dev, repeats)
    except ValueError as err:
        if "free" not in str(err):  # not a memory refusal
            raise
    except torch.OutOfMemoryError:
        pass
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return "OOM", None, None


def timed(fn, peer_fn, dev, repeats):
    """(median seconds, last result, peer) of ``fn``, or (None, None, peer) for ``fn`` None.

    ``peer`` is None without ``peer_fn``; else neural-tangents' (median seconds, last result) from the
    same rounds, after one untimed call that compiles it for this shape, or the exception that call raised
    (out of memory, an unsupported JAX)."""
    peer = None
    if peer_fn is not None:
        try:
            peer_fn()
        except Exception as err:  # the peer's own failure
            peer, peer_fn = err, None
    fns = [f for f in (fn, peer_fn) if f is not None]
    results = iter(median_times(fns, dev, repeats) if fns else [])
    ours = next(results) if fn is not None else (None, None)
    return (*ours, next(results) if peer_fn is not None else peer)


def _checked_methods(sizes, dtype, methods, repeats):
    """(sizes, methods with layerwise first) after checking the arguments of :func:`run_benchmark`."""
    sizes = [check_int("sizes", p) for p in sizes]
    if not sizes:
        raise ValueError("sizes must be a non-empty list of positive integers, got []")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    unknown = [m for m in methods if m not in METHODS or m == "auto"]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {BENCH_METHODS}")
    check_int("repeats", repeats)
    return sizes, ["layerwise"] + [m for m in methods if m != "layerwise"]


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
        The ``neural_tangents`` module (see :func:`~silentlib.bench.peer.load_peer`) to time its three
        implementations side by side, or None.
    max_seconds
        Skip a baseline whose time extrapolated (as P^2) from the previous size exceeds this.
    peak
        The device's matrix-product FLOP/s, for the ``peak_fraction`` column.

    Returns
    -------
    list of dict
        A list of dict rows, one per (P, method), with keys ``P``, ``width``, ``depth``,
        ``C``, ``method``, ``status`` ("ok", "OOM" or "skip"), ``seconds`` (None unless ok),
        ``ratio`` (seconds / layerwise seconds at the same P), ``max_rel_diff``
        (``max |K - K_layerwise| / max |K_layerwise|``), ``flops``, ``flop_rate`` and ``peak_fraction`` (layerwise only),
        ``block_size``, ``device``, ``dtype``, ``torch``, ``n_params``; with ``peer``, also ``peer``
        (the neural-tangents implementation), ``peer_status``, ``peer_seconds``, ``peer_ratio`` (seconds /
        peer_seconds, measured in the same run) and ``peer_max_rel_diff`` (to the layerwise kernel).
    """
    from .peer import peer_kernel_fns
    from .report import row_line
    sizes, methods = _checked_methods(sizes, dtype, methods, repeats)
    case = _Case(device, dtype, width, depth, out_dim, d_in, max(sizes), seed, repeats, max_seconds, peak)
    case.peer_fns = peer_kernel_fns(peer, case.model) if peer is not None else None
    case.warm_up(methods)
    rows = []
    for P in sizes:
        case.ref = None
        for m in methods:
            rows.append(case.time(P, m))
            if verbose:
                print(row_line(rows[-1]), flush=True)
        case.ref = None
        if case.dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


class _Case:
    """One MLP on random inputs, timed method by method; ``last`` keeps each method's latest
    (P, seconds) for the extrapolation that skips slow baselines."""

    def __init__(self, device_, dtype, width, depth, out_dim, d_in, P_max, seed, repeats, max_seconds, peak):
        self.dev = device(device_)
        gen = torch.Generator().manual_seed(seed)
        model = MLP(d_in, width, depth, out_dim=out_dim, activation="relu", sigma=1.0)
        model.reset_parameters(gen)
        self.model = model.to(device=self.dev, dtype=DTYPES[dtype])
        self.x_all = torch.randn(P_max, d_in, generator=gen).to(device=self.dev, dtype=DTYPES[dtype])
        self.shape = {"width": width, "depth": depth, "C": out_dim}
        self.where = {"device": config.device_name(self.dev, detailed=True), "dtype": dtype,
                      "torch": torch.__version__, "n_params": sum(p.numel() for p in self.model.parameters())}
        self.repeats, self.max_seconds, self.peak = repeats, max_seconds, peak
        self.last, self.ref, self.ref_t, self.peer_fns = {}, None, None, None

    def warm_up(self, methods):
        """Allocators, first kernel launches, torch.func tracing."""
        ntk(self.model, self.x_all[:8], method="layerwise")
        for m in methods[1:]:
            baseline(self.model, self.x_all[:8], m, self.dev, 1)
        sync(self.dev)

    def time(self, P, m):
        """The row of method m at P inputs (layerwise first: the reference of the others), timed in
        rounds interleaved with neural-tangents' counterpart when the peer is on."""
        from .peer import peer_due, record_peer
        x = self.x_all[:P]
        row = {"P": P, **self.shape, "method": m, "status": "ok", "seconds": None, "ratio": None,
               "max_rel_diff": None, "flops": None, "flop_rate": None, "peak_fraction": None,
               "block_size": None, **self.where}
        peer_fn = None
        if self.peer_fns is not None and peer_due(row, self.peer_fns[m], self.last, self.max_seconds):
            peer_fn = functools.partial(self.peer_fns[m], x)
        predicted = self.last[m][1] * (P / self.last[m][0]) ** 2 if m in self.last else 0
        if m == "layerwise":
            block = ntk_plan(self.model, x, method=m).block_size
            sec, K, peer = timed(lambda: ntk(self.model, x, method=m), peer_fn, self.dev, self.repeats)
            self.ref_t, self.ref = sec, K
            flops = layerwise_flops(self.model, P, row["C"], block)
            row.update(block_size=block, flops=flops, flop_rate=flops / sec,
                       peak_fraction=flops / sec / self.peak if self.peak else None)
        elif predicted > self.max_seconds:
            row.update(status="skip", predicted=predicted)
            sec = K = None
            peer = timed(None, peer_fn, self.dev, self.repeats)[2]
        else:
            sec, K, peer = baseline(self.model, x, m, self.dev, self.repeats, peer_fn)
            if sec == "OOM":
                row["status"], sec = "OOM", None
            else:
                row["block_size"] = P
        if sec is not None:
            self.last[m] = (P, sec)
            row.update(seconds=sec, ratio=sec / self.ref_t,
                       max_rel_diff=float((K - self.ref).abs().max() / self.ref.abs().max()))
        if peer_fn is not None:
            record_peer(row, peer, self.ref, self.last)
        return row
