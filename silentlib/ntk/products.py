"""The matrix products the kernels are made of, exact in their dtype, and the threads they run on.

On the CPU, float32 products go through oneDNN: torch's MKL takes its AVX2 path on AMD CPUs,
oneDNN uses AVX-512 where the CPU has it (twice the throughput on this project's machines).
"""
from __future__ import annotations

import contextlib
import os
import time

import torch


def gram(A, B):
    """A @ B.T for (n, k) and (m, k) matrices, exact in their dtype (oneDNN for float32 on a CPU)."""
    if A.dtype == torch.float32 and A.device.type == "cpu" and ONEDNN:
        return onednn_mm_t(A, B)
    return A @ B.T


def onednn_mm_t(A, B, bias=None):
    """A @ B.T (+ bias) by oneDNN's inner product (float32 CPU tensors, IEEE float32 arithmetic)."""
    return torch.ops.mkldnn._linear_pointwise(A.contiguous(), B.contiguous(), bias, "none", [], "")


def linear(m, h):
    """nn.Linear m applied to h (B, n_in), through :func:`gram`'s fast product on the CPU."""
    if h.device.type == "cpu" and h.dtype == torch.float32 and ONEDNN:
        return onednn_mm_t(h, m.weight, m.bias)
    return m(h)


def _onednn_works():
    """Whether oneDNN's inner product is available here and agrees with a float64 product."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(7, 5, generator=gen), torch.randn(3, 5, generator=gen)
        exact = (a.double() @ b.double().T).float()
        return bool(torch.allclose(onednn_mm_t(a, b), exact, rtol=1e-5, atol=1e-5))
    except Exception:  # an older torch without the op, or a build without oneDNN
        return False


ONEDNN = _onednn_works()


# ---------------------------------------------------------------------------- threads

#: Seconds over which the CPU time other processes use is sampled on a first call; later calls use
#: the time since the last sample, or within this time of it the last estimate.
SAMPLE_SECONDS = 0.05
_last = {"sample": None, "others": None}  # (wall, busy seconds of all cores, own CPU seconds); estimate


def _cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _sample():
    """(wall, busy seconds of every core since boot, CPU seconds of this process), or None without
    /proc/stat (macOS, Windows)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_busy():
    """Cores' worth of CPU time that other processes used since the last sample (over
    :data:`SAMPLE_SECONDS` on a first call); None where /proc/stat is not available."""
    last, estimate = _last["sample"], _last["others"]
    if last is not None and estimate is not None and time.monotonic() - last[0] < SAMPLE_SECONDS:
        return estimate  # without reading /proc/stat (tens of microseconds, a call's overhead)
    now = _sample()
    if now is None:
        return None
    if last is None:
        time.sleep(SAMPLE_SECONDS)
        _last["sample"], now = now, _sample()
    (w0, b0, o0), (w1, b1, o1) = _last["sample"], now
    _last["sample"] = now
    _last["others"] = max(0.0, (b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-9)
    return _last["others"]


def threads_for(requested):
    """The CPU threads to use for ``requested`` torch threads: as many as there are cores left
    free by other processes (rounded, at least one), never more than requested."""
    others = others_busy() if requested > 1 else None
    if others is None:
        return requested
    return max(1, min(requested, int(_cores() - others + 0.5)))


@contextlib.contextmanager
def cpu_threads(device):
    """Within the block, torch computes on the CPU with :func:`threads_for` its thread count.

    On a machine whose cores other processes keep busy, OpenMP's threads wait for each other at
    every barrier while one of them is descheduled (GNU OpenMP spins, then sleeps; its wait policy
    is fixed when torch loads): two threads on two busy cores can be many times slower than one.
    So while the cores are taken, the block runs on fewer threads (one on a two-core machine), and
    torch's setting is restored afterwards. Nothing changes on a GPU, with one thread, or where
    /proc/stat is not available.
    """
    requested = torch.get_num_threads()
    use = threads_for(requested) if torch.device(device).type == "cpu" else requested
    if use == requested:
        yield requested
        return
    torch.set_num_threads(use)
    try:
        yield use
    finally:
        torch.set_num_threads(requested)
