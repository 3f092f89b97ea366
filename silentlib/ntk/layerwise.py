"""The layerwise NTK of a plain stack of linear layers and elementwise activations.

With z_l = W_l h_{l-1} + b_l the pre-activation of layer l, h_{l-1} its input and
g_l^a = d f_a / d z_l, one has d f_a / d W_l = g_l^a h_{l-1}^T, so (paper, Section 2)

    K = sum_l (H_{l-1} H_{l-1}^T [+ 1 with bias]) ⊙ (G_l G_l^T),

computed with one forward pass and one backward pass per output; G_L = I for the last layer is never
multiplied. :func:`silentlib.ntk.checks.layerwise_refusal` says when the formula is exact.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import blocks, products


@dataclasses.dataclass
class Layer:
    """The factors of one nn.Linear's contribution for a block of B inputs (paper, Section 2):
    d f_a / d W = g^a h^T and d f_a / d b = g^a, so it adds (H1 H2^T [+ 1]) ⊙ (G1 G2^T).

    Attributes
    ----------
    H : torch.Tensor or None
        (B, n_in) inputs of the layer, or None when its weight is frozen.
    bias : bool
        Whether the bias trains.
    G : torch.Tensor or None
        (B, C, n_out) gradients of the selected outputs with respect to the layer's output, or None
        for the last layer with nothing after it, where G1 G2^T[i, j, a, b] = delta_ab.
    C : int
        The number of selected outputs.
    x : torch.Tensor
        The block's inputs (for their number, dtype and device).
    """
    H: torch.Tensor | None
    bias: bool
    G: torch.Tensor | None
    C: int
    x: torch.Tensor  # the block's inputs (for their number, dtype and device)


def compute(model, call, plan):
    """The (P1, P2, C, C) kernel of a plain stack ``model`` by the layerwise formula, in plan's blocks."""
    return blocks.contract(call, plan, lambda x, group: features(call.layers, x, call.idx), terms)


def derivative(m, z):
    """(phi(z), phi'(z)) for an elementwise activation module m; phi' is None for the identity.

    Closed forms for the common ones (as autograd computes them, ReLU'(0) = 0); any other through
    autograd on a copy of z, so that an in-place module neither fails on a leaf nor overwrites z.
    """
    t = type(m)
    if t is nn.Identity:
        return z, None
    if t is nn.ReLU:  # z is ntk's own intermediate (a layer's output): rectified in place
        out = z.relu_()
        return out, torch.sign(out)
    if t is nn.Tanh:
        out = torch.tanh(z)
        return out, out.square().neg_().add_(1)
    leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        out = m(leaf.clone())
        dphi, = torch.autograd.grad(out.sum(), leaf)
    return out.detach(), dphi


def _forward(layers, x):
    """One forward pass keeping each layer's input and each activation's derivative: {index: tensor}.
    It stops at the input of the last nn.Linear when no activation follows it (its output is unused)."""
    kinds = [kind for kind, _, _ in layers]
    first, last = kinds.index("linear"), len(kinds) - 1 - kinds[::-1].index("linear")
    stop = last if "act" not in kinds[last:] else len(layers) - 1
    saved, h = {}, x
    for i, (kind, _, m) in enumerate(layers[:stop + 1]):
        if kind == "linear":
            saved[i] = h
            if i < stop:
                h = products.linear(m, h)
        elif kind == "act" and i > first:
            h, saved[i] = derivative(m, h)
        else:  # before the first layer nothing is differentiated; never overwrite the caller's x
            h = m(h.clone()) if getattr(m, "inplace", False) else m(h)
    return saved


def _rows(idx):
    """The selected output indices as a slice when they are consecutive (a view instead of a gather)."""
    return slice(idx[0], idx[-1] + 1) if idx == list(range(idx[0], idx[-1] + 1)) else idx


def features(layers, x, idx):
    """The :class:`Layer` factors of every trainable nn.Linear, last to first, for inputs x (B, ...).

    ``layers`` is the flattened (kind, name, module) list of :func:`~silentlib.ntk.checks.flat_layers`.
    One forward pass keeps each layer's input and each activation's derivative; one backward pass
    per selected output (batched over outputs) gives G_l = G_{l+1} W_{l+1} ⊙ phi'(z_l).
    """
    trainable = [i for i, (kind, _, m) in enumerate(layers) if kind == "linear" and
                 (m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad))]
    saved, rows = _forward(layers, x), _rows(idx)
    g = None  # (B or 1, C, N) gradients at the current layer's output; None: the identity rows e_a, ...
    if len(set(idx)) < len(idx):  # ... whose Gram matrix is delta_ab only for distinct outputs
        out = next(m.out_features for kind, _, m in reversed(layers) if kind == "linear")
        g = torch.eye(out, dtype=x.dtype, device=x.device)[idx].unsqueeze(0)
    feats = []
    for i in range(len(layers) - 1, trainable[0] - 1, -1):
        kind, _, m = layers[i]
        if kind == "linear":
            if i in trainable:
                G = None if g is None else g.expand(x.shape[0], len(idx), g.shape[2])  # (1, C, N) in a linear stack
                feats.append(Layer(saved[i] if m.weight.requires_grad else None,
                                   m.bias is not None and m.bias.requires_grad, G, len(idx), x))
            if i > trainable[0]:
                W = m.weight
                g = W[rows].unsqueeze(0) if g is None else \
                    (g.reshape(-1, W.shape[0]) @ W).view(g.shape[0], len(idx), W.shape[1])
        elif kind == "act" and saved[i] is not None:
            if g is None:  # an activation after the last layer: the rows e_a of its outputs
                d = saved[i]
                g = torch.eye(d.shape[-1], dtype=d.dtype, device=d.device)[rows].unsqueeze(0)
            g = g * saved[i].unsqueeze(1)  # (B or 1, C, N) * (B, 1, N)
    return feats


def terms(f1, f2, rows, cols):
    """The (r, C, c, C) kernel entries between the inputs ``rows`` of block 1 and ``cols`` of block 2:
    the sum over layers of (H1 H2^T [+ 1]) ⊙ (G1 G2^T), summed in the first term's buffer."""
    acc, identity = None, []
    for l1, l2 in zip(f1, f2):
        HH = None
        if l1.H is not None:
            HH = products.gram(l1.H[rows], l2.H[cols])
            if l1.bias:
                HH += 1
        if l1.G is None:  # G1 G2^T = delta_ab: only the entries a = b receive H1 H2^T (+ 1)
            identity.append(1 if HH is None else HH)
            continue
        G1, G2 = l1.G[rows], l2.G[cols]
        r, C, N = G1.shape
        term = products.gram(G1.reshape(r * C, N), G2.reshape(-1, N)).view(r, C, G2.shape[0], C)
        if HH is not None:
            term.mul_(HH[:, None, :, None])
        acc = term if acc is None else acc.add_(term)
    if acc is None:  # one layer, f = W x + b, whose G is the identity
        l1, l2 = f1[0], f2[0]
        r, c = len(range(l1.x.shape[0])[rows]), len(range(l2.x.shape[0])[cols])
        acc = torch.zeros((r, l1.C, c, l1.C), dtype=l1.x.dtype, device=l1.x.device)
    diag = acc.diagonal(dim1=1, dim2=3)  # (r, c, C): the entries a = b
    for HH in identity:
        diag += HH if isinstance(HH, int) else HH.unsqueeze(2)
    return acc
