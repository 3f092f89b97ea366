"""NTKs past one device: the block pairs spread over the ranks of a ``torch.distributed`` process
group, and kernels written to disk (``out=``).

When a process group is initialized (``torchrun`` starts one process per GPU and node and sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``; the script calls ``torch.distributed.init_process_group``),
:func:`silentlib.ntk.ntk` splits the grid of block pairs (for x2 = None only those on and above
the diagonal) over the ranks: each takes a contiguous run of about equal cost
(:meth:`Ranks.pick`) and computes it on its model's device (:func:`local_device` is
``cuda:LOCAL_RANK``, or the CPU). Then

* without ``out=``, every rank gets the whole kernel: each computes its blocks into its own
  kernel, then every block is broadcast from the rank that computed it to the others, one block
  at a time (:func:`share_blocks`; for K(x, x) only those on and above the diagonal travel);
* with ``out=PATH``, the ranks write their blocks into one file on a file system they share
  (:mod:`silentlib.ntk.store`), which rank 0 renames into place once every block is marked done;
  every rank gets it as a read-only memory map.

On one process without ``out=`` nothing of this runs; with ``out=`` the same steps run on one
rank. The ranks first check that they were given the same call (:func:`silentlib.ntk.store.identity`:
hashes of the model, inputs, outputs, method and dtype) and refuse otherwise. Every step that can
fail on one rank alone (the checks, the memory plan, the blocks, the file) ends in an exchange
of errors (:meth:`Ranks.step`), so a rank that fails makes every rank raise with its message
instead of leaving the others waiting in a collective; a rank that dies is noticed by the
others' next collective (or after the process group's timeout).

The method must be settled before the blocks are shared out, and with ``out=`` no process ever
holds the whole kernel, so here the check of ``"jacobian"`` and ``"vp"`` kernels against plain
autograd (:func:`silentlib.ntk.checks.projection_error`) runs first, on the kernel of the first
:data:`SAMPLE` inputs (``auto`` falls back to ``autograd`` there), instead of on the whole kernel.
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime
import os
import queue
import socket
import time
import traceback

import torch
import torch.distributed as dist

from . import blocks, fallback, probes, store
from .methods import IMPLEMENTATIONS, Method

#: Inputs of x1 (and x2) whose kernel is checked against plain autograd before a grid is computed.
SAMPLE = 16
#: Without ``block_size``, R ranks split the inputs into at least this many times R blocks, so
#: that the pairs can be shared evenly.
BLOCKS_PER_RANK = 4
#: The dtypes a kernel file (``out=``) can have, and NumPy's names for them.
NUMPY_DTYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}
#: The cost of a diagonal block of K(x, x) relative to another block of the same size (its
#: staircase computes about 5/8 of the products).
DIAGONAL_COST = 0.625


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (``LOCAL_RANK`` as torchrun sets it, default 0) when CUDA is available,
    else the CPU: the device for this rank's model."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@dataclasses.dataclass
class Ranks:
    """This process among the ranks that compute one kernel: its ``rank``, their number ``size``,
    and the ``device`` of its model (NCCL exchanges objects through it)."""
    rank: int
    size: int
    device: torch.device

    @classmethod
    def of(cls, device, distributed=True) -> "Ranks":
        """The ranks of the default process group when one is initialized and ``distributed``, else
        this process alone."""
        if distributed and dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))
        return cls(0, 1, torch.device(device))

    def step(self, fn, only=None):
        """``fn()`` on this rank (or on rank ``only`` alone), then an exchange of errors: if ``fn``
        raised on some rank, every rank raises the same exception class (a built-in one, else
        ``RuntimeError``) saying which rank failed and why. Returns ``fn()``'s result, or with
        ``only`` that rank's result on every rank. On one rank, ``fn()`` itself."""
        if self.size == 1:
            return fn()
        result, error = None, None
        try:
            if only is None or only == self.rank:
                result = fn()
        except Exception as err:  # shared with the other ranks, then raised here too
            error = err
        mine = (None if error is None else (type(error).__name__, str(error)), result if only is not None else None)
        shared = self.gather(mine)
        failed = [(r, e) for r, (e, _) in enumerate(shared) if e is not None]
        if failed:
            raise _failure(failed, self.size) from error
        return shared[only][1] if only is not None else result

    def gather(self, obj) -> list:
        """[obj of every rank] (``torch.distributed.all_gather_object``)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        with _on(self.device):
            dist.all_gather_object(out, obj)
        return out

    def owners(self, rows, cols, pairs, same) -> list:
        """The rank that computes each of the block ``pairs``: each rank a contiguous run of them
        (consecutive pairs share their row block's features) holding about 1/size of their cost,
        r c inputs for a block of r rows and c columns (:data:`DIAGONAL_COST` of that for a
        diagonal block of K(x, x))."""
        cost = [(rows[bi][1] - rows[bi][0]) * (cols[bj][1] - cols[bj][0]) * (DIAGONAL_COST if same and bi == bj else 1)
                for bi, bj in pairs]
        total, before, owner = sum(cost), 0.0, []
        for c in cost:
            owner.append(int((before + c / 2) * self.size / total))  # the rank whose share holds its middle
            before += c
        return owner

    def pick(self, rows, cols, pairs, same) -> list:
        """This rank's share of the block ``pairs`` (:meth:`owners`)."""
        return [p for p, r in zip(pairs, self.owners(rows, cols, pairs, same)) if r == self.rank]


def _on(device):
    """Within the block, CUDA's current device is ``device`` (where NCCL puts exchanged objects)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _failure(failed, size):
    """The exception every rank raises when the ranks ``failed`` [(rank, (class name, message))]."""
    name = failed[0][1][0]
    cls = getattr(builtins, name, None)
    message = "; ".join(f"rank {r} of {size} failed: {n}: {m}" for r, (n, m) in failed)
    if isinstance(cls, type) and issubclass(cls, Exception):
        with contextlib.suppress(Exception):
            return cls(message)
    return RuntimeError(message)


# ---------------------------------------------------------------------------- the kernel on the ranks

def compute(model, x1, x2, requested, block_size, outputs, out, ranks):
    """:func:`silentlib.ntk.ntk` on ``ranks`` (several, or one with ``out=``): the kernel, (P1, P2) or
    (P1, P2, C, C), as a tensor on every rank's model device, or with ``out`` the finished file
    as a read-only ``numpy.memmap``."""
    from . import _plan, _prepare  # the one-process steps (the package imports this module)

    def prepare():
        call, probe = _prepare(model, x1, x2, requested, outputs)
        if out is not None and call.ref.dtype not in NUMPY_DTYPES:
            raise ValueError(f"out= writes a .npy file, and NumPy has no {call.ref.dtype}: use a float32 or "
                             "float64 model (model.float() or model.double())")
        if probe is not None:
            probes.check_mixing(model, *probe, call.x1)
        call = dataclasses.replace(call, method=checked_method(model, call, requested, _plan))
        pick = ranks.pick if ranks.size > 1 else None
        target = blocks.Kernel(call, pick) if out is None else store.Target(out, call, pick)
        call = dataclasses.replace(call, target=target)
        return call, _plan(model, call, block_size), store.identity(model, call, requested)

    call, plan, ident = ranks.step(prepare)
    views = ranks.gather((ident, plan.block_size))
    _same_call([v[0] for v in views])
    b = min(v[1] for v in views)
    if block_size is None and ranks.size > 1:
        b = min(b, -(-max(call.x1.shape[0], call.x2.shape[0]) // (BLOCKS_PER_RANK * ranks.size)))
    if out is not None:  # every rank shares out the pairs that rank 0 found missing
        b, call.target.done = ranks.step(lambda: _start(out, call, ident, b, fixed=block_size is not None), only=0)
        if call.target.done is None:
            return store.load(out)

    def blocks_here():
        grid = plan if b == plan.block_size else _plan(model, call, b)
        try:
            return IMPLEMENTATIONS[call.method].compute(model, call, grid)
        finally:
            if out is not None:
                call.target.close()

    K = ranks.step(blocks_here)
    if out is not None:
        ranks.step(lambda: store.finish(out), only=0)
        return store.load(out)
    share_blocks(K, call, b, ranks)
    return K[:, :, 0, 0] if call.scalar else K


def _start(out, call, ident, block_size, fixed):
    """:func:`silentlib.ntk.store.start` for ``call``'s kernel: (the grid's block size, the pairs done)."""
    C = len(call.idx)
    shape = (call.x1.shape[0], call.x2.shape[0]) + (() if call.scalar else (C, C))

    def pairs_of(size):
        return len(blocks.upper_pairs(call, size)[2])
    return store.start(out, ident, shape, NUMPY_DTYPES[call.ref.dtype], block_size, pairs_of, fixed=fixed)


def share_blocks(K, call, block_size, ranks):
    """Fill every rank's (P1, P2, C, C) kernel ``K`` with the blocks the other ranks computed: each
    block pair is broadcast from its owner (:meth:`Ranks.owners`), one at a time through one block's
    buffer, and for K(x, x) its transpose is copied below the diagonal."""
    rows, cols, pairs = blocks.upper_pairs(call, block_size)
    scratch = torch.empty(K[slice(*rows[0]), slice(*cols[0])].numel(), dtype=K.dtype, device=K.device)
    with _on(ranks.device):
        for (bi, bj), owner in zip(pairs, ranks.owners(rows, cols, pairs, call.same)):
            (i0, i1), (j0, j1) = rows[bi], cols[bj]
            block = K[i0:i1, j0:j1]
            buffer = scratch[:block.numel()].view(block.shape)
            if owner == ranks.rank:
                buffer.copy_(block)
            dist.broadcast(buffer, src=owner)
            if owner != ranks.rank:
                block.copy_(buffer)
                if call.same and bi != bj:
                    K[j0:j1, i0:i1].copy_(buffer.permute(1, 0, 3, 2))


def checked_method(model, call, requested, plan) -> Method:
    """The method to compute ``call``'s grid with: ``call.method`` when it needs no check or its
    kernel of the first :data:`SAMPLE` inputs passes the check against plain autograd, ``autograd``
    where ``auto`` fell back to it (:func:`silentlib.ntk.fallback.computed_by`); the fallback's
    ``ValueError`` otherwise."""
    if not IMPLEMENTATIONS[call.method].checked:
        return call.method
    small = dataclasses.replace(call, x1=call.x1[:SAMPLE], x2=call.x1[:SAMPLE] if call.same else call.x2[:SAMPLE])
    return fallback.computed_by(model, small, plan(model, small, None), requested)[1]


def _same_call(identities):
    """``ValueError`` (on every rank alike) unless every rank's call has rank 0's identity."""
    differs = {k: r for r, ident in enumerate(identities) for k in ident if ident[k] != identities[0][k]}
    if differs:
        raise ValueError(
            "the ranks were not given the same kernel to compute: "
            + ", ".join(f"rank {r}'s {k} differs from rank 0's" for k, r in differs.items())
            + " (each rank must pass the same model weights, inputs, outputs and method; to compute a kernel "
              "of its own on each rank, pass distributed=False)")


# ---------------------------------------------------------------------------- a process group on one machine

#: How :func:`launch` starts processes: forked from a server that imported silentlib once (seconds
#: saved per rank), or where there is no fork (Windows) spawned afresh.
START = "forkserver" if "forkserver" in torch.multiprocessing.get_all_start_methods() else "spawn"


def launch(fn, size, *args, timeout=300.0, threads=1):
    """Run ``fn(*args)`` on ``size`` new processes, the ranks of a gloo process group over 127.0.0.1
    (what ``torchrun --nproc-per-node size`` does, for tests and benchmarks on one machine), each on
    ``threads`` CPU threads; returns [fn's result on each rank].

    Raises ``RuntimeError`` listing every rank that raised (its exception and message) or died
    (its exit code), and ``TimeoutError`` when not every rank reported within ``timeout`` seconds;
    the processes still running are then killed. ``fn`` must be importable (a module's function).
    """
    ctx = torch.multiprocessing.get_context(START)
    if START == "forkserver":
        ctx.set_forkserver_preload(["silentlib"])  # imported once by the server, not by every rank
    reports = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank_main, args=(rank, size, port, threads, timeout, fn, args, reports), daemon=True)
             for rank in range(size)]
    for p in procs:
        p.start()
    results, errors, deadline = {}, {}, time.monotonic() + timeout
    try:
        while len(results) + len(errors) < size:
            try:
                rank, error, value = reports.get(timeout=0.2)
                (errors if error else results)[rank] = error or value
            except queue.Empty:
                pass
            for rank, p in enumerate(procs):  # died without a report: killed, or crashed in C
                if p.exitcode is not None and rank not in results and rank not in errors and reports.empty():
                    errors[rank] = f"died with exit code {p.exitcode}"
            if time.monotonic() > deadline:
                missing = sorted(set(range(size)) - set(results) - set(errors))
                raise TimeoutError(f"ranks {missing} of {size} did not finish within {timeout:.0f} s"
                                   + "".join(f"; rank {r}: {e}" for r, e in sorted(errors.items())))
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        raise RuntimeError("; ".join(f"rank {r}: {e}" for r, e in sorted(errors.items())))
    return [results[r] for r in range(size)]


def loopback() -> str:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    return next((name for _, name in socket.if_nameindex() if name.startswith("lo")), "lo")


def _rank_main(rank, size, port, threads, timeout, fn, args, reports):
    """One rank of :func:`launch`: join the group, run ``fn``, report (rank, error or None, result)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback())  # gloo's connections on 127.0.0.1 too
    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=timeout))
        try:
            value = fn(*args)
        finally:
            dist.destroy_process_group()
        reports.put((rank, None, value))
    except BaseException as err:
        reports.put((rank, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}", None))
