"""Blocking over inputs: the kernel is computed block pair by block pair, and K(x, x) only on and
above its diagonal (the rest is the transpose).

A method that makes per-input *features* (layerwise: the factors H_l, G_l of every layer;
jacobian: per-example Jacobians) contracts them with :func:`contract`; within a diagonal block a
staircase on and above the diagonal is computed (:func:`accumulate`).

Where the blocks go is the call's *target*: by default :class:`Kernel`, the whole kernel in the
device's memory; :mod:`silentlib.ntk.store` writes them into a file instead, and
:mod:`silentlib.ntk.distributed` gives each process its share of the block pairs.
"""
from __future__ import annotations

import torch

STAIRCASE_STEPS = 4   # a diagonal block of K(x, x) is computed in this many row steps ...
STAIRCASE_MIN_ROWS = 32  # ... of at least this many inputs ...
STAIRCASE_MIN_ENTRIES = 512  # ... when it has at least this many rows B C (below, one product is faster)


def edges(P, b):
    """[(i0, i1), ...]: P inputs in consecutive blocks of at most b."""
    return [(i, min(i + b, P)) for i in range(0, P, b)]


def upper_pairs(call, b):
    """(rows, [(bi, bj), ...]): the row blocks and the block pairs to compute, those on and above the
    diagonal for K(x, x) (``call.same``), all of them otherwise."""
    rows = edges(call.x1.shape[0], b)
    cols = rows if call.same else edges(call.x2.shape[0], b)
    pairs = [(bi, bj) for bi in range(len(rows)) for bj in range(len(cols)) if not (call.same and bj < bi)]
    return rows, cols, pairs


def empty_kernel(call):
    """An uninitialised (P1, P2, C, C) kernel in the parameters' dtype, on their device."""
    P1, P2, C = call.x1.shape[0], call.x2.shape[0], len(call.idx)
    return torch.empty((P1, P2, C, C), dtype=call.ref.dtype, device=call.ref.device)


class Kernel:
    """The default target of the blocks: the whole (P1, P2, C, C) kernel in the device's memory.

    A method computes the block pairs that :meth:`open` returns into the views :meth:`block`
    gives and calls :meth:`written` once a block is complete; for K(x, x) that copies its
    transpose below the diagonal (the diagonal blocks are made exactly symmetric by the methods
    themselves). ``pick(rows, cols, pairs, same)``, when given, chooses the pairs computed here;
    the other blocks are left for the caller to fill (:func:`silentlib.ntk.distributed.share_blocks`).
    """
    whole = True  # the memory plan counts the whole kernel

    def __init__(self, call, pick=None):
        self.call, self.pick = call, pick

    def open(self, rows, cols, pairs):
        """Allocate the kernel; the pairs (bi, bj) to compute."""
        self.rows, self.cols = rows, cols
        self.K = empty_kernel(self.call)
        return pairs if self.pick is None else self.pick(rows, cols, pairs, self.call.same)

    def block(self, bi, bj, first):
        """The (r, c, C, C) view of block pair (bi, bj) to write (``first``) or add to."""
        (i0, i1), (j0, j1) = self.rows[bi], self.cols[bj]
        return self.K[i0:i1, j0:j1]

    def written(self, bi, bj, last):
        """Block (bi, bj) has its terms (all of them when ``last``)."""
        if last and self.call.same and bi != bj:
            self.block(bj, bi, True).copy_(self.block(bi, bj, True).permute(1, 0, 3, 2))

    def result(self):
        """The kernel."""
        return self.K


def target(call):
    """Where ``call``'s blocks go: ``call.target``, else a new :class:`Kernel`."""
    return call.target if call.target is not None else Kernel(call)


def contract(call, plan, features, terms):
    """The (P1, P2, C, C) kernel from per-block features, summed over the plan's parameter groups,
    as :func:`target` keeps it (the kernel itself by default).

    ``features(x, group)`` gives a block's features (for the parameters in ``group``, None for
    all); ``terms(f1, f2, rows, cols)`` contracts two blocks' features into their (r, C, c, C)
    kernel entries. With ``plan.cache`` the features of every block the pairs use are made once and kept.
    """
    out = target(call)
    rows, cols, pairs = upper_pairs(call, plan.block_size)
    pairs = out.open(rows, cols, pairs)
    groups = plan.groups or [None]
    for k, group in enumerate(groups):
        def feats(x, group=group):
            return features(x, group)
        if plan.cache:  # the features of the blocks the pairs use, once
            used1 = {bi for bi, _ in pairs} | ({bj for _, bj in pairs} if call.same else set())
            cache1 = {bi: feats(call.x1[slice(*rows[bi])]) for bi in sorted(used1)}
            cache2 = cache1 if call.same else {bj: feats(call.x2[slice(*cols[bj])])
                                               for bj in sorted({bj for _, bj in pairs})}
        f1, current = None, None
        for bi, bj in pairs:
            (i0, i1), (j0, j1) = rows[bi], cols[bj]
            if current != bi:
                f1, current = (cache1[bi] if plan.cache else feats(call.x1[i0:i1])), bi
            f2 = cache2[bj] if plan.cache else (f1 if call.same and bi == bj else feats(call.x2[j0:j1]))
            accumulate(out.block(bi, bj, k == 0), f1, f2, terms, first=k == 0)
            out.written(bi, bj, last=k == len(groups) - 1)
    return out.result()


def accumulate(out, f1, f2, terms, *, first):
    """out (b1, b2, C, C) = [out +] the contraction ``terms`` of two blocks' features.

    For a diagonal block of K(x, x) (``f1 is f2``) only a staircase on and above the diagonal is
    computed, rows i0..i1 against the columns from i0 on, in about four steps (62.5 % of the
    products); the rest is its transpose, and the small squares on the diagonal are averaged with
    their transpose so that the block is exactly symmetric. A block of fewer than
    ``STAIRCASE_MIN_ENTRIES`` rows B C is one product, averaged with its transpose (on a CPU,
    the skinny products of its staircase would take longer).
    """
    B, C = out.shape[0], out.shape[2]
    if f1 is not f2:
        _store(out, terms(f1, f2, slice(None), slice(None)), first)
        return
    if B * C < STAIRCASE_MIN_ENTRIES:  # a small block in one product, averaged with its transpose
        _store_symmetric(out, terms(f1, f1, slice(None), slice(None)), first)
        return
    step = max(STAIRCASE_MIN_ROWS, -(-B // STAIRCASE_STEPS))
    steps = edges(B, step)
    for i0, i1 in steps:
        t = terms(f1, f1, slice(i0, i1), slice(i0, None))      # (r, C, B - i0, C)
        r = t.shape[0]
        _store_symmetric(out[i0:i1, i0:i1], t[:, :, :r], first)  # its diagonal square
        _store(out[i0:i1, i1:], t[:, :, r:], first)
    for i0, i1 in steps[:-1]:
        out[i1:, i0:i1] = out[i0:i1, i1:].permute(1, 0, 3, 2)


def _store_symmetric(out, square, first):
    """out (r, r, C, C) [+]= the average of square (r, C, r, C) and its transpose, written in place
    (no temporaries: on a CPU, fresh buffers of a few MiB cost page faults that rival the products)."""
    o = out.permute(0, 2, 1, 3)                  # (r, C, r, C), a view of out
    transposed = square.permute(2, 3, 0, 1)
    if first:
        torch.add(square, transposed, out=o)
        o.mul_(0.5)                              # exactly (a + b) / 2
    else:  # a second parameter group (jacobian): add the symmetric average itself, so out stays symmetric
        o.add_(torch.add(square, transposed).mul_(0.5))


def _store(out, terms, first):
    """out (r, c, C, C) [+]= terms (r, C, c, C), the layout of the Gram matrices."""
    if first:
        out.copy_(terms.permute(0, 2, 1, 3))
    else:
        out += terms.permute(0, 2, 1, 3)
