"""The NTK from per-example Jacobians by plain reverse-mode autograd (``method="autograd"``).

For the models that torch.func's batched transforms cannot take (``nn.PReLU``'s weight under
``vmap``, the RNN family, a custom ``autograd.Function`` without vmap support, control flow that
depends on the data): each input is evaluated alone, and each selected output differentiated with
``torch.autograd.grad``, so the Jacobian is what ``loss.backward()`` computes, a tied weight's the
sum over its uses. Its rows are contracted like :mod:`silentlib.ntk.generic`'s, in the same blocks
and parameter groups and within the same memory, but one input and output at a time: P C backward
passes in a Python loop, slower than ``vmap(jacrev)``. :func:`silentlib.ntk.ntk`'s ``auto`` falls
back to it (:mod:`silentlib.ntk.fallback`).
"""
from __future__ import annotations

import torch

from . import blocks
from .generic import attributes_kept, jacobian_terms


def compute(model, call, plan):
    """The (P1, P2, C, C) kernel from per-example autograd Jacobians, in the plan's blocks and groups."""
    def features(x, group):
        return jacobian_rows(model, call.params, x, call.idx, group)
    return blocks.contract(call, plan, features, jacobian_terms)


def jacobian_rows(model, params, x, idx, group):
    """[J] with J (B, C, n_group): d f_a(x_i) / d theta for the B inputs x, the selected outputs ``idx``
    and the parameters in ``group`` (all of ``params`` if None), one backward pass per input and output."""
    tensors = [params[k] for k in (list(params) if group is None else group)]
    J = torch.zeros((x.shape[0], len(idx), sum(t.numel() for t in tensors)), dtype=tensors[0].dtype,
                    device=tensors[0].device)
    for i in range(x.shape[0]):
        with torch.enable_grad(), attributes_kept(model):
            out = model(x[i:i + 1].clone()).reshape(-1)
            for a, k in enumerate(idx):
                grads = torch.autograd.grad(out[k], tensors, retain_graph=a + 1 < len(idx), allow_unused=True)
                offset = 0
                for g, t in zip(grads, tensors):
                    if g is not None:
                        J[i, a, offset:offset + t.numel()] = g.reshape(-1)
                    offset += t.numel()
    return [J]
