"""Kernels larger than memory: ``ntk(..., out=PATH)`` writes the kernel into a NumPy ``.npy`` file
block by block, and an interrupted run resumes.

Three files lie side by side:

``PATH``
    The finished kernel: a ``.npy`` array of shape (P1, P2) for a scalar output or (P1, P2, C, C),
    in the model's dtype, which :func:`silentlib.ntk.ntk` returns opened as a read-only memory
    map (``numpy.lib.format.open_memmap``; ``numpy.load(PATH, mmap_mode="r")`` opens it later).
    It appears only when every block is on disk, by renaming ``PATH.partial``: a file at PATH is
    never half written.
``PATH.partial``
    The kernel while its blocks are written (the same format; the blocks not yet done are zeros).
``PATH.index.json``
    What the kernel is of (:func:`identity`: hashes of the model, of x1 and x2, the selected
    outputs, the method asked for and the dtype), its block grid (``block_size`` and the number
    of block pairs, in the order of :func:`silentlib.ntk.blocks.upper_pairs`) and ``done``: one
    character per block pair, turned from ``0`` to ``1`` in place (a one-byte write) once that
    block is on disk. Each process turns only its own blocks' characters, so the ranks of a
    process group share one index (:mod:`silentlib.ntk.distributed`).

A call whose index describes the same kernel resumes it, in the index's grid: only the block
pairs not yet done are computed (or none, when PATH is finished). An index of another kernel,
or a file at PATH (or PATH.partial) without an index, is refused with the reason, and nothing is
reused or overwritten. Blocks are written with ``os.pwrite``, row by row, and synced to disk
before their character turns to ``1``: a block is either done and on disk, or computed again.
(Writing through a shared memory map would write whole pages, which on a network file system
that several nodes share can carry another node's stale bytes.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy

from .memory import gib

#: What the first key of an index says it is.
FORMAT = "silentlib.ntk kernel index"


def index_path(path) -> Path:
    """``PATH.index.json``: the index beside the kernel ``PATH``."""
    return Path(f"{path}.index.json")


def partial_path(path) -> Path:
    """``PATH.partial``: the kernel ``PATH`` while it is written."""
    return Path(f"{path}.partial")


def identity(model, call, requested) -> dict:
    """What the kernel of ``call`` is of, as short strings: hashes (SHA-256) of the ``model`` (its
    ``repr``, which parameters train, every parameter and buffer), of ``x1`` and of ``x2`` (None for
    x2 = x1), and the selected ``outputs``, the ``method`` asked for (``auto`` stays ``auto``) and
    the ``dtype``. Two calls with equal identities compute the same kernel."""
    named = itertools.chain(((f"{n} trains={p.requires_grad}", p) for n, p in model.named_parameters()),
                            model.named_buffers())
    return {"model": _digest(repr(model), *itertools.chain.from_iterable(named)),
            "x1": _digest(call.x1), "x2": None if call.same else _digest(call.x2),
            "outputs": list(call.idx), "method": requested.label,
            "dtype": str(call.ref.dtype).replace("torch.", "")}


def _digest(*items):
    """The SHA-256 (hex, first 32 digits) of strings and tensors (their dtype, shape and bytes)."""
    h = hashlib.sha256()
    for item in items:
        if torch.is_tensor(item):
            t = item.detach().contiguous().cpu().reshape(-1)
            h.update(f"{t.dtype}{tuple(item.shape)}".encode())
            h.update(t.view(torch.uint8).numpy())
        else:
            h.update(str(item).encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------- opening a kernel file

def start(path, ident, shape, dtype, block_size, pairs_of, *, fixed) -> tuple[int, list | None]:
    """Open the kernel ``PATH`` for the call with identity ``ident`` (one process, rank 0 of a group):
    (the block size of its grid, whether each block pair is done; None when PATH is finished).

    A matching index is resumed in its grid (its block size); ``fixed`` (an explicit
    ``block_size``) must then agree with it. Without an index, ``PATH.partial`` (all zeros) and
    the index (nothing done) are created for blocks of ``block_size`` inputs, of which
    ``pairs_of(block_size)`` pairs are computed. ``ValueError`` for an index of another kernel,
    a file without an index, a partial file of the wrong shape, or a disk without room.
    """
    path, index = Path(path), read_index(path)
    final, partial = path, partial_path(path)
    if not path.parent.is_dir():
        raise ValueError(f"out={str(path)!r}: the folder {path.parent} does not exist")
    if index is None:
        for f in (final, partial):
            if f.exists():
                raise ValueError(
                    f"{f} exists but has no index {index_path(path)}: it is not a kernel that ntk(..., out=...) "
                    f"started, so it is neither reused nor overwritten. Delete it or choose another out=")
    else:
        theirs = index["identity"]
        differs = [k for k in ident if theirs.get(k) != ident[k]]
        if differs:
            raise ValueError(
                f"{path} belongs to another kernel: its index {index_path(path)} was written for a call with "
                f"other {', '.join(differs)} ("
                + "; ".join(f"{k}: {theirs.get(k)} there, {ident[k]} here" for k in differs)
                + f"). It is neither reused nor overwritten: delete "
                + ", ".join(str(f) for f in (final, partial, index_path(path)) if f.exists())
                + " to start over, or choose another out=")
        if final.exists() or partial.exists():
            if fixed and block_size != index["block_size"]:
                raise ValueError(f"{path} was started with block_size={index['block_size']}: resume it with that "
                                 f"block size or block_size=None, or delete it and its index to start over")
            _check_header(final if final.exists() else partial, shape, dtype)
            return index["block_size"], None if final.exists() else [c == "1" for c in index["done"]]
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise ValueError(f"the kernel takes {gib(nbytes)} on disk, but {path.parent} has {gib(free)} free: "
                         "choose an out= on a larger disk, or fewer inputs or outputs")
    _write_index(path, {"format": FORMAT, "identity": ident, "shape": list(shape), "dtype": np.dtype(dtype).str,
                        "block_size": block_size}, pairs_of(block_size))
    zeros = npy.open_memmap(partial, mode="w+", dtype=dtype, shape=tuple(shape))  # a sparse file
    del zeros
    return block_size, [False] * pairs_of(block_size)


def read_index(path):
    """The index of the kernel ``PATH`` as a dict, or None without one; ``ValueError`` for a file
    that is not such an index."""
    idx = index_path(path)
    if not idx.exists():
        return None
    try:
        index = json.loads(idx.read_text())
        ok = index.get("format") == FORMAT and set(index.get("done", "?")) <= {"0", "1"}
    except (ValueError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{idx} is not an index written by ntk(..., out=...) (unreadable); "
                         f"delete it and {path} to start over, or choose another out=")
    return index


def _write_index(path, header, n_pairs):
    """Write the index atomically (a temporary file renamed), ``done`` last: n_pairs zeros."""
    text = json.dumps(header)[:-1] + ', "done": "' + "0" * n_pairs + '"}\n'
    tmp = Path(f"{index_path(path)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, index_path(path))


def _header(f):
    """(shape, Fortran order, dtype, the byte where the data start) of the .npy file ``f``."""
    with open(f, "rb") as fh:
        try:
            major, _ = npy.read_magic(fh)
            read = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
            return (*read(fh), fh.tell())
        except ValueError as err:
            raise ValueError(f"{f} is not a readable .npy file ({err}); delete it and its index to start over") from err


def _check_header(f, shape, dtype):
    """``ValueError`` unless the .npy file ``f`` holds a whole C-ordered array of ``shape`` and ``dtype``."""
    shape_f, fortran, dtype_f, header = _header(f)
    whole = os.path.getsize(f) == header + int(np.prod(shape_f)) * dtype_f.itemsize
    if tuple(shape_f) != tuple(shape) or dtype_f != np.dtype(dtype) or fortran or not whole:
        raise ValueError(f"{f} holds a {'' if whole else 'truncated '}{dtype_f} array of shape {tuple(shape_f)}, "
                         f"not the {np.dtype(dtype)} kernel of shape {tuple(shape)} its index describes; "
                         "delete it and its index to start over")


# ---------------------------------------------------------------------------- writing blocks

@dataclasses.dataclass
class KernelFile:
    """The partial kernel ``PATH.partial`` and its index, opened for writing blocks (each process
    opens its own; :func:`start` created them)."""
    path: Path
    cols: int       # P2
    C: int          # selected outputs (1 for a scalar output)
    dtype: np.dtype
    block_size: int
    n_pairs: int
    data: int       # file descriptor of PATH.partial ...
    header: int     # ... whose array starts at this byte
    index: int      # file descriptor of the index ...
    done_at: int    # ... whose done string starts at this byte

    @classmethod
    def attach(cls, path) -> "KernelFile":
        """Open the partial kernel ``PATH.partial`` and its index for writing."""
        if not partial_path(path).exists():
            raise FileNotFoundError(f"{partial_path(path)} is not there: the kernel file of out= must lie on a "
                                    "file system that every rank sees (rank 0 created it)")
        index = read_index(path)
        done_at = index_path(path).read_bytes().rindex(b'"done": "') + len(b'"done": "')
        shape = index["shape"]
        return cls(Path(path), shape[1], shape[2] if len(shape) > 2 else 1, np.dtype(index["dtype"]), index["block_size"],
                   len(index["done"]), os.open(partial_path(path), os.O_RDWR), _header(partial_path(path))[3],
                   os.open(index_path(path), os.O_RDWR), done_at)

    def _rows(self, i0, i1, j0, j1):
        """(byte offset, bytes) of each row i0..i1 of the entries in columns j0..j1."""
        size = self.dtype.itemsize * self.C * self.C
        return [(self.header + (i * self.cols + j0) * size, (j1 - j0) * size) for i in range(i0, i1)]

    def write(self, i0, j0, block):
        """Write the (r, c, C, C) array ``block`` at rows i0.., columns j0.. (not yet synced)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        for k, (offset, _) in enumerate(self._rows(i0, i0 + block.shape[0], j0, j0 + block.shape[1])):
            view = memoryview(block[k]).cast("B")
            while view:
                n = os.pwrite(self.data, view, offset)
                view, offset = view[n:], offset + n

    def read(self, i0, i1, j0, j1):
        """The (i1 - i0, j1 - j0, C, C) block at rows i0..i1, columns j0..j1."""
        rows = [np.frombuffer(os.pread(self.data, n, offset), dtype=self.dtype) for offset, n in self._rows(i0, i1, j0, j1)]
        return np.stack(rows).reshape(i1 - i0, j1 - j0, self.C, self.C)

    def finished(self, k):
        """Block pair k is written: sync the data to disk, then mark it done in the index."""
        os.fdatasync(self.data)
        os.pwrite(self.index, b"1", self.done_at + k)

    def close(self):
        """Sync the index (so that the other processes, on other nodes too, see this one's marks)
        and close both files."""
        os.fsync(self.index)
        os.close(self.index)
        os.close(self.data)


class Target:
    """The target (:func:`silentlib.ntk.blocks.target`) that writes a call's blocks into its kernel
    file ``PATH``: of the pairs not ``done`` (as :func:`start` found them), those
    ``pick(rows, cols, pairs, same)`` chooses (all by default), each computed in a device buffer,
    written (with its transpose below the diagonal for K(x, x)) and marked done."""
    whole = False  # the memory plan counts one block, not the kernel

    def __init__(self, path, call, pick=None):
        self.path, self.call, self.pick, self.done = path, call, pick, None

    def open(self, rows, cols, pairs):
        """Open the file; the pairs (bi, bj) to compute here."""
        self.file = KernelFile.attach(self.path)
        if self.file.n_pairs != len(pairs) or rows[0][1] - rows[0][0] != min(self.file.block_size, rows[-1][1]):
            raise ValueError(f"the grid of {self.path} ({self.file.n_pairs} block pairs of "
                             f"{self.file.block_size} inputs) is not this call's ({len(pairs)} pairs)")
        self.rows, self.cols, self.number = rows, cols, {p: k for k, p in enumerate(pairs)}
        C = len(self.call.idx)
        self.buffer = torch.empty(rows[0][1] * cols[0][1] * C * C, dtype=self.call.ref.dtype, device=self.call.ref.device)
        missing = [p for p, done in zip(pairs, self.done) if not done]
        return missing if self.pick is None else self.pick(rows, cols, missing, self.call.same)

    def _buffer(self, bi, bj):
        """(row, column, the (r, c, C, C) buffer) of block pair (bi, bj)."""
        (i0, i1), (j0, j1) = self.rows[bi], self.cols[bj]
        C = len(self.call.idx)
        return i0, j0, self.buffer[:(i1 - i0) * (j1 - j0) * C * C].view(i1 - i0, j1 - j0, C, C)

    def block(self, bi, bj, first):
        """A buffer for block pair (bi, bj): to write (``first``), or holding what is on disk."""
        i0, j0, out = self._buffer(bi, bj)
        if not first:  # a later parameter group adds to the earlier ones' sum
            out.copy_(torch.from_numpy(self.file.read(i0, i0 + out.shape[0], j0, j0 + out.shape[1])))
        return out

    def written(self, bi, bj, last):
        """Write the buffer of (bi, bj) (and, when ``last``, its transpose) and mark it done when ``last``."""
        i0, j0, out = self._buffer(bi, bj)
        block = out.cpu().numpy()
        self.file.write(i0, j0, block)
        if last:
            if self.call.same and bi != bj:
                self.file.write(j0, i0, block.transpose(1, 0, 3, 2))
            self.file.finished(self.number[(bi, bj)])

    def result(self):
        """None: the blocks are on disk."""

    def close(self):
        """Close the file (if :meth:`open` opened it)."""
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None


def finish(path):
    """Rename ``PATH.partial`` to ``PATH`` once the index marks every block pair done (one
    process, after all have written); ``RuntimeError`` naming the pairs missing otherwise."""
    missing = read_index(path)["done"].count("0")
    if missing:
        raise RuntimeError(f"{missing} block pair(s) of {path} are not marked done in its index, so it is "
                           "not finished; call ntk(..., out=...) again to compute them")
    if partial_path(path).exists():  # (absent when another call finished it meanwhile)
        os.replace(partial_path(path), path)


def load(path) -> np.memmap:
    """The finished kernel ``PATH`` as a read-only memory map."""
    return npy.open_memmap(path, mode="r")
