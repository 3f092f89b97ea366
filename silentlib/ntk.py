"""The empirical neural tangent kernel, exactly, on the model's device.

    K[i, j, a, b] = sum_theta  d f_a(x1_i) / d theta  *  d f_b(x2_j) / d theta

(paper, Section 2; Jacot et al. 2018). Three methods compute it:

``"layerwise"``
    For a stack of linear layers and elementwise activations (a silentlib
    :class:`~silentlib.models.MLP`, or any ``nn.Sequential`` of ``nn.Linear``
    and elementwise activation modules). With z_l = W_l h_{l-1} + b_l the
    pre-activation of layer l, h_{l-1} its input and g_l^a = d f_a / d z_l,
    d f_a / d W_l = g_l^a h_{l-1}^T, so

        K = sum_l (H_{l-1} H_{l-1}^T [+ 1 with bias]) ⊙ (G_l G_l^T),

    one forward pass and one backward pass per output. Cost O(P^2 sum_l N_l C^2)
    instead of O(P^2 #params C^2).
``"jacobian"``
    Any ``nn.Module`` whose output for one input does not depend on the other
    inputs of the batch: per-example Jacobians with ``torch.func.vmap(jacrev)``,
    contracted over parameters.
``"vp"``
    NTK-vector products: K e_j = J_1 (J_2^T e_j), a vector-Jacobian product
    followed by a Jacobian-vector product (``torch.func.vjp`` / ``jvp``), batched
    over the basis vectors. Needs no per-example Jacobian in memory.

All three block over inputs so that memory stays bounded, run on the model's
device in the model's dtype (a ``.double()`` model gives float64 kernels), and
never use TF32.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .config import as_batch, exact_matmul

METHODS = ("auto", "layerwise", "jacobian", "vp")

ELEMENTWISE = (nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus,
               nn.LeakyReLU, nn.ELU, nn.Softsign, nn.Hardtanh, nn.Mish)


def is_layerwise_compatible(model: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``nn.Linear`` and elementwise activation modules."""
    return (isinstance(model, nn.Sequential) and len(model) > 0
            and any(isinstance(m, nn.Linear) for m in model)
            and all(isinstance(m, (nn.Linear,) + ELEMENTWISE) for m in model))


def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None):
    """The empirical NTK of ``model`` between inputs ``x1`` and ``x2``.

    Parameters
    ----------
    model : the network; its output for P inputs has shape (P,) (a scalar
        output) or (P, C).
    x1 : (P1, ...) inputs; x2 : (P2, ...) inputs with the same trailing shape,
        or None for x2 = x1.
    method : ``"auto"`` (layerwise when the model allows it, else jacobian),
        ``"layerwise"``, ``"jacobian"`` or ``"vp"``.
    block_size : number of inputs per block; by default chosen from the free
        memory of the model's device.

    Returns
    -------
    torch.Tensor of shape (P1, P2) for a scalar output or (P1, P2, C, C) for C
    outputs (neural-tangents' ``trace_axes=()``), on the model's device, in the
    model's dtype.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters, so its NTK is zero-dimensional")
    ref = next(iter(params.values()))
    x1 = as_batch(x1, "x1", ref)
    same = x2 is None
    x2 = x1 if same else as_batch(x2, "x2", ref)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same trailing shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if method == "auto":
        method = "layerwise" if is_layerwise_compatible(model) else "jacobian"
    if method == "layerwise" and not is_layerwise_compatible(model):
        raise ValueError("method='layerwise' needs an nn.Sequential of nn.Linear and elementwise "
                         f"activation modules, got {type(model).__name__}; use 'jacobian' or 'vp'")
    with torch.no_grad():
        probe = model(x1[:1])
    if probe.ndim not in (1, 2) or probe.shape[0] != 1:
        raise ValueError(f"the model must map (P, ...) inputs to (P,) or (P, C) outputs, got {tuple(probe.shape)} for P=1")
    C = 1 if probe.ndim == 1 else probe.shape[1]
    n_params = sum(p.numel() for p in params.values())
    if block_size is None:
        block_size = _auto_block_size(model, method, C, n_params, ref)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")

    features = {"layerwise": _layerwise_features, "jacobian": _jacobian_features}.get(method)
    shape = (x1.shape[0], x2.shape[0], C, C)
    K = torch.empty(shape, dtype=ref.dtype, device=ref.device)
    with exact_matmul():
        for i in range(0, x1.shape[0], block_size):
            b1 = x1[i:i + block_size]
            f1 = features(model, params, b1) if features else None
            for j in range(0, x2.shape[0], block_size):
                b2 = x2[j:j + block_size]
                if features is None:
                    K[i:i + len(b1), j:j + len(b2)] = _vp_block(model, params, b1, b2, C)
                else:
                    f2 = f1 if same and i == j else features(model, params, b2)
                    K[i:i + len(b1), j:j + len(b2)] = _contract(f1, f2, method)
    return K[:, :, 0, 0] if probe.ndim == 1 else K


def _auto_block_size(model, method, C, n_params, ref):
    """Inputs per block such that per-block memory stays within about a quarter of free memory."""
    bytes_ = ref.element_size()
    if ref.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(ref.device)
        budget = free / 4
    else:
        budget = min(_available_ram() / 4, 4 * 2**30)
    if method == "layerwise":
        lins = [m for m in model if isinstance(m, nn.Linear)]
        per_input = sum(l.in_features + C * l.out_features for l in lins)
        per_pair = 3 * C * C
    else:  # one parameter-sized vector per input and output (jacobian) or per basis vector (vp)
        per_input, per_pair = C * n_params, 2 * C * C
    # 2 b per_input + b^2 per_pair <= budget / bytes
    a, b_, c = per_pair, 2 * per_input, -budget / bytes_
    b = int((-b_ + math.sqrt(b_ * b_ - 4 * a * c)) / (2 * a))
    return max(1, min(b, 65536))


def _available_ram():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def _layerwise_features(model, params, x):
    """Per layer: (H_{l-1} with a column of ones if biased, G_l of shape (B, C, N_l))."""
    hs, zs = [], []
    h = x
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                hs.append(h)
            else:
                zs.append(h)
            h = m(h)
        C = 1 if h.ndim == 1 else h.shape[-1]
        g = torch.eye(C, dtype=h.dtype, device=h.device).expand(h.shape[0], C, C)
    feats, lin_i, act_i = [], len(hs), len(zs)
    for m in reversed(model):
        if isinstance(m, nn.Linear):
            lin_i -= 1
            H = hs[lin_i]
            if m.bias is not None and m.bias.requires_grad:
                H = torch.cat([H, torch.ones_like(H[:, :1])], dim=1)
            if m.weight.requires_grad:
                feats.append((H, g))
            elif m.bias is not None and m.bias.requires_grad:
                feats.append((torch.ones_like(H[:, :1]), g))
            with torch.no_grad():
                g = g @ m.weight
        else:
            act_i -= 1
            z = zs[act_i].detach().requires_grad_(True)
            with torch.enable_grad():
                dphi, = torch.autograd.grad(m(z).sum(), z)
            g = g * dphi.unsqueeze(1)
    return feats


def _jacobian_features(model, params, x):
    """Per-example Jacobian, flattened to (B, C, #params)."""
    buffers = dict(model.named_buffers())

    def f(p, xi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return out.reshape(-1)

    with torch.no_grad():
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return [torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)]


def _contract(f1, f2, method):
    if method == "layerwise":
        K = 0
        for (H1, G1), (H2, G2) in zip(f1, f2):
            B1, C, N = G1.shape
            B2 = G2.shape[0]
            GG = (G1.reshape(B1 * C, N) @ G2.reshape(B2 * C, N).T).reshape(B1, C, B2, C).permute(0, 2, 1, 3)
            K = K + (H1 @ H2.T)[:, :, None, None] * GG
        return K
    J1, J2 = f1[0], f2[0]
    B1, C, n = J1.shape
    return (J1.reshape(B1 * C, n) @ J2.reshape(-1, n).T).reshape(B1, C, -1, C).permute(0, 2, 1, 3)


def _vp_block(model, params, x1, x2, C):
    buffers = dict(model.named_buffers())

    def f(p, x):
        return functional_call(model, (p, buffers), (x,)).reshape(x.shape[0], C)

    _, pullback = vjp(lambda p: f(p, x2), params)

    def column(cotangent):
        (tangent,) = pullback(cotangent)
        return jvp(lambda p: f(p, x1), (params,), (tangent,))[1]

    B2 = x2.shape[0]
    basis = torch.eye(B2 * C, dtype=x1.dtype, device=x1.device).reshape(B2 * C, B2, C)
    cols = vmap(column, chunk_size=max(1, min(B2 * C, 256)))(basis)  # (B2*C, B1, C)
    return cols.detach().reshape(B2, C, x1.shape[0], C).permute(2, 0, 3, 1)
