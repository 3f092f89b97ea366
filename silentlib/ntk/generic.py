"""The NTK of any module whose output for one input does not depend on the others of its batch,
through torch.func: per-example Jacobians (``"jacobian"``) or NTK-vector products (``"vp"``).

Both differentiate the model with its unique trainable parameters substituted by functorch
tensors (:func:`substituted`), so that a tied weight is one parameter, and put every original
``Parameter`` and tensor attribute back afterwards.
"""
from __future__ import annotations

import contextlib

import torch
from torch.func import jacrev, jvp, vjp, vmap

from . import blocks, products


@contextlib.contextmanager
def substituted(model, values):
    """Within the block, every use of each parameter ``model.<name>`` computes with ``values[name]``.

    Parameters are matched by identity, so a module or a parameter used several times (tied
    weights) takes the one substitute everywhere, and every original ``Parameter`` is put back in
    place afterwards, whatever the forward pass raised (torch.func.functional_call leaves a tied
    module holding a functorch tensor, torch 2.13), as is every tensor attribute of a module.
    """
    by_id = {id(p): values[name] for name, p in model.named_parameters() if name in values}
    slots = [(m, key, p) for m in model.modules() for key, p in m._parameters.items()
             if p is not None and id(p) in by_id]
    try:
        with attributes_kept(model):
            for m, key, p in slots:
                m._parameters[key] = by_id[id(p)]
            yield
    finally:
        for m, key, p in slots:
            m._parameters[key] = p


@contextlib.contextmanager
def attributes_kept(model):
    """Put back every tensor attribute of the model's modules after the block: a forward pass may
    store tensors on its modules (the old ``torch.nn.utils.weight_norm`` hook sets ``module.weight``)."""
    attrs = [(m, key, v) for m in model.modules() for key, v in vars(m).items() if torch.is_tensor(v)]
    try:
        yield
    finally:
        for m, key, v in attrs:
            m.__dict__[key] = v


def call_with(model, values, x):
    """model(x) computed with the parameters ``values`` (names of ``model.named_parameters()``); x is
    copied first, so that an in-place first module cannot overwrite the caller's inputs."""
    with substituted(model, values):
        return model(x.clone())


# ---------------------------------------------------------------------------- jacobian

def compute_jacobian(model, call, plan):
    """The (P1, P2, C, C) kernel from per-example Jacobians, in the plan's blocks and parameter groups."""
    def features(x, group):
        return jacobian_features(model, call.params, x, call.idx, group)
    return blocks.contract(call, plan, features, jacobian_terms)


def jacobian_features(model, params, x, idx, group):
    """Per-example Jacobian with respect to the parameters in ``group`` (all if None), [(B, C, n_group)].

    The parameters are the model's unique trainable ones, so a tied weight's Jacobian is the sum
    over its uses.
    """
    names = list(params) if group is None else group
    idx_t = torch.tensor(idx, device=x.device)

    def f(p_group, xi):
        out = call_with(model, {**params, **p_group}, xi.unsqueeze(0))
        return out.reshape(-1)[idx_t]

    jac = vmap(jacrev(f), in_dims=(None, 0))({k: params[k] for k in names}, x)
    return [torch.cat([jac[k].reshape(x.shape[0], len(idx), -1) for k in names], dim=2)]


def jacobian_terms(f1, f2, rows, cols):
    """The (r, C, c, C) entries J1[rows] J2[cols]^T of two blocks' Jacobians (B, C, n)."""
    J1, J2 = f1[0][rows], f2[0][cols]
    r, C, n = J1.shape
    return products.gram(J1.reshape(r * C, n), J2.reshape(-1, n)).view(r, C, J2.shape[0], C)


# ---------------------------------------------------------------------------- vp

def compute_vp(model, call, plan):
    """The (P1, P2, C, C) kernel by NTK-vector products (:func:`vp_block`), in the plan's blocks, as
    :func:`silentlib.ntk.blocks.target` keeps it."""
    out = blocks.target(call)
    rows, cols, pairs = blocks.upper_pairs(call, plan.block_size)
    for bi, bj in out.open(rows, cols, pairs):
        (i0, i1), (j0, j1) = rows[bi], cols[bj]
        x2 = None if call.same and bi == bj else call.x2[j0:j1]  # a diagonal block uses its own symmetry
        out.block(bi, bj, True).copy_(vp_block(model, call.params, call.x1[i0:i1], x2, call.idx, plan.chunk))
        out.written(bi, bj, last=True)
    return out.result()


def vp_block(model, params, x1, x2, idx, chunk):
    """K(x1, x2) (B1, B2, C, C) by NTK-vector products, one column per (input j of x2, output b):

        K[:, j, :, b] = J(x1) t_jb,   t_jb = J(x2_j)^T e_b = d f_b(x2_j) / d theta,

    a vector-Jacobian product on the one input x2_j, then a Jacobian-vector product on x1, vmapped
    over ``chunk`` columns at a time. For x2 = None (K(x1, x1), symmetric) a chunk of columns j0..j1
    needs only the rows up to j1: the products cover about half the kernel, the rest is mirrored.
    Where a module has no forward-mode derivative (``weight_norm``'s kernel, say), J(x1) t is
    computed as the vector-Jacobian product of the linear map u -> J(x1)^T u (reverse over reverse).
    """
    same = x2 is None
    x2 = x1 if same else x2
    C = len(idx)
    B1, B2 = x1.shape[0], x2.shape[0]
    dtype = next(iter(params.values())).dtype  # the inputs' may be an integer type (token ids)
    K = torch.empty((B1, B2, C, C), dtype=dtype, device=x1.device)
    per = max(1, chunk // C)  # inputs of x2 per chunk
    eye = torch.eye(C, dtype=dtype, device=x1.device)
    for j0, j1 in blocks.edges(B2, per):
        rows = x1[:j1] if same else x1
        xs = x2[j0:j1].repeat_interleave(C, dim=0)      # (n*C, ...): x2_j, once per output b
        es = eye.repeat(j1 - j0, 1)                      # (n*C, C): e_b for each j
        cols = _columns(model, params, rows, idx)(xs, es)  # (n*C, rows, C)
        K[:rows.shape[0], j0:j1] = cols.reshape(j1 - j0, C, rows.shape[0], C).permute(2, 0, 3, 1)
    if same:
        for j0, j1 in blocks.edges(B2, per):  # below the staircase: the transpose of what is above it
            K[j1:, j0:j1] = K[j0:j1, j1:].permute(1, 0, 3, 2)
            square = K[j0:j1, j0:j1]
            square.copy_((square + square.permute(1, 0, 3, 2)) / 2)
    return K


def _columns(model, params, x1, idx):
    """A function (xs (n, ...), es (n, C)) -> (n, B1, C): J(x1) J(x_k)^T e_k for each k, vmapped."""
    idx_t = torch.tensor(idx, device=x1.device)
    C = len(idx)

    def f(p, x):
        return call_with(model, p, x).reshape(x.shape[0], -1)[:, idx_t]

    def tangent(xj, e):
        _, pullback = vjp(lambda p: f(p, xj.unsqueeze(0))[0], params)
        return pullback(e)[0]

    def forward_mode(xj, e):
        return jvp(lambda p: f(p, x1), (params,), (tangent(xj, e),))[1]

    def reverse_mode(xj, e):
        _, pullback = vjp(lambda p: f(p, x1), params)
        zero = torch.zeros(x1.shape[0], C, dtype=e.dtype, device=x1.device)
        return vjp(lambda u: pullback(u)[0], zero)[1](tangent(xj, e))[0]

    def run(xs, es):
        try:
            return vmap(forward_mode)(xs, es)
        except NotImplementedError as err:
            if "forward AD" not in str(err):
                raise
            return vmap(reverse_mode)(xs, es)

    return run
