"""The empirical neural tangent kernel, exactly, on the model's device, within its memory.

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
    instead of O(P^2 #params C^2), almost all of it in large matrix products.
``"jacobian"``
    Any ``nn.Module`` whose output for one input does not depend on the other
    inputs of the batch: per-example Jacobians with ``torch.func.vmap(jacrev)``,
    contracted over parameters; the parameters are split into groups when one
    input's Jacobian would not fit in memory.
``"vp"``
    NTK-vector products: K e_j = J_1 (J_2^T e_j), a vector-Jacobian product
    followed by a Jacobian-vector product (``torch.func.vjp`` / ``jvp``), batched
    over chunks of basis vectors. Needs no per-example Jacobian in memory.

All three block over inputs. :func:`ntk_plan` chooses the blocks before anything
is allocated so that the kernel and the working buffers fit in the free memory
of the model's device, or raises ``ValueError`` saying what is needed and what to
change. For one set of inputs (``x2=None``) only the blocks on and above the
diagonal are computed; the rest is their transpose. Everything runs in the
model's dtype (a ``.double()`` model gives float64 kernels) and never in TF32.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import config
from .config import as_batch, exact_matmul

METHODS = ("auto", "layerwise", "jacobian", "vp")

ELEMENTWISE = (nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus,
               nn.LeakyReLU, nn.ELU, nn.Softsign, nn.Hardtanh, nn.Mish)

USABLE = 0.9          # share of the free memory the kernel may take
SYMMETRIC_BLOCKS = 4  # for K(x, x), split into at least this many row blocks (from 1024 inputs up)
VP_CHUNK = 256        # basis vectors per vmapped NTK-vector product


def is_layerwise_compatible(model: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``nn.Linear`` and elementwise activation modules."""
    return (isinstance(model, nn.Sequential) and len(model) > 0
            and any(isinstance(m, nn.Linear) for m in model)
            and all(isinstance(m, (nn.Linear,) + ELEMENTWISE) for m in model))


@dataclasses.dataclass
class Plan:
    """How :func:`ntk` will compute a kernel, chosen from the device's free memory.

    Attributes
    ----------
    method : str
        The method used: ``"layerwise"``, ``"jacobian"`` or ``"vp"``.
    outputs : int
        The number of outputs whose kernel blocks are computed.
    block_size : int
        Inputs per block (row and column blocks).
    cache : bool
        Whether the features (layerwise) or Jacobians (jacobian) of all inputs are
        computed once and kept, instead of once per block pair.
    groups : list | None
        For ``"jacobian"``, the parameter names contracted together (one group unless
        one input's Jacobian alone would not fit); None otherwise.
    chunk : int | None
        Basis vectors per vmapped product (``"vp"``); None otherwise.
    kernel_bytes : int
        The kernel's size.
    working_bytes : int
        The estimated peak of everything else.
    free_bytes : int
        What the device had free.
    """
    method: str
    outputs: int
    block_size: int
    cache: bool
    groups: list | None
    chunk: int | None
    kernel_bytes: int
    working_bytes: int
    free_bytes: int


def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
        outputs=None):
    """The empirical NTK of ``model`` between inputs ``x1`` and ``x2``.

    Parameters
    ----------
    model : torch.nn.Module
        The network; its output for P inputs has shape (P,) (a scalar output) or (P, C).
        Its output for one input must not depend on the other inputs of the batch (no
        batch norm in training mode).
    x1 : array_like or torch.Tensor
        (P1, ...) inputs.
    x2 : array_like or torch.Tensor, optional
        (P2, ...) inputs with the same trailing shape, or None for x2 = x1.
    method : str
        ``"auto"`` (layerwise when the model allows it, else jacobian), ``"layerwise"``,
        ``"jacobian"`` or ``"vp"``.
    block_size : int, optional
        Number of inputs per block; by default chosen by :func:`ntk_plan` from the free
        memory of the model's device.
    outputs : sequence of int or slice, optional
        For a C-output model, the output indices whose kernel blocks K[:, :, a, b] to
        compute; default all. Computing per-output blocks divides the memory by
        (C / len(outputs))^2.

    Returns
    -------
    torch.Tensor
        Shape (P1, P2) for a scalar output or (P1, P2, C', C') for C' selected outputs
        (neural-tangents' ``trace_axes=()``), on the model's device, in the model's dtype.

    Raises
    ------
    ValueError
        Before allocating, if the kernel or the working memory of the smallest block does
        not fit in the device's free memory, naming the size needed and the ways out
        (fewer inputs, per-output blocks, ``block_size``, the CPU); also for an unknown
        method, ``"layerwise"`` on a model that is not a stack of linear layers and
        elementwise activations, a model that mixes the examples of a batch (see
        :func:`check_per_example`), or inputs of mismatched shapes.
    """
    with exact_matmul(), torch.no_grad():
        return _ntk(model, x1, x2, method, block_size, outputs)


def _ntk(model, x1, x2, method, block_size, outputs):
    params, x1, x2, same, idx, scalar, method = _prepare(model, x1, x2, method, outputs)
    plan = _plan(model, params, x1, x2, same, idx, method, block_size)
    ref = next(iter(params.values()))
    P1, P2, C = x1.shape[0], x2.shape[0], len(idx)
    K = torch.empty((P1, P2, C, C), dtype=ref.dtype, device=ref.device)
    b = plan.block_size
    rows = [(i, min(i + b, P1)) for i in range(0, P1, b)]
    cols = rows if same else [(j, min(j + b, P2)) for j in range(0, P2, b)]
    if method == "vp":
        for bi, (i0, i1) in enumerate(rows):
            for bj, (j0, j1) in enumerate(cols):
                if not (same and bj < bi):
                    K[i0:i1, j0:j1] = _vp_block(model, params, x1[i0:i1], x2[j0:j1], idx, plan.chunk)
        if same:
            _mirror(K, rows)
        return K[:, :, 0, 0] if scalar else K
    groups = plan.groups or [None]
    for g in groups:
        feats = (lambda x: _layerwise_features(model, x, idx)) if method == "layerwise" else \
                (lambda x, g=g: _jacobian_features(model, params, x, idx, g))
        cache1 = [feats(x1[i0:i1]) for i0, i1 in rows] if plan.cache else None
        cache2 = cache1 if same or not plan.cache else [feats(x2[j0:j1]) for j0, j1 in cols]
        for bi, (i0, i1) in enumerate(rows):
            f1 = cache1[bi] if plan.cache else feats(x1[i0:i1])
            for bj, (j0, j1) in enumerate(cols):
                if same and bj < bi:
                    continue
                f2 = cache2[bj] if plan.cache else (f1 if same and bi == bj else feats(x2[j0:j1]))
                _accumulate(K[i0:i1, j0:j1], f1, f2, first=g is groups[0])
    if same:
        _mirror(K, rows)
    return K[:, :, 0, 0] if scalar else K


def _mirror(K, rows):
    """Make K(x, x) exactly symmetric: blocks below the diagonal from those above, diagonal blocks averaged."""
    for bi, (i0, i1) in enumerate(rows):
        for j0, j1 in rows[:bi]:
            K[i0:i1, j0:j1] = K[j0:j1, i0:i1].permute(1, 0, 3, 2)
        diag = K[i0:i1, i0:i1]
        diag.copy_((diag + diag.permute(1, 0, 3, 2)) / 2)


def ntk_plan(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
             outputs=None) -> Plan:
    """The :class:`Plan` (blocks, caching, memory) :func:`ntk` would use for these arguments.

    Takes the arguments of :func:`ntk` and allocates nothing. Raises the ``ValueError``
    that :func:`ntk` would raise when the kernel cannot fit.
    """
    params, x1, x2, same, idx, _, method = _prepare(model, x1, x2, method, outputs)
    return _plan(model, params, x1, x2, same, idx, method, block_size)


# ---------------------------------------------------------------------------- checks

def _prepare(model, x1, x2, method, outputs):
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
    layerwise_ok = is_layerwise_compatible(model)
    if method == "auto":
        method = "layerwise" if layerwise_ok else "jacobian"
    if method == "layerwise" and not layerwise_ok:
        raise ValueError("method='layerwise' needs an nn.Sequential of nn.Linear and elementwise "
                         f"activation modules, got {type(model).__name__}; use 'jacobian' or 'vp'")
    if not layerwise_ok:
        check_per_example(model, x1)
    with torch.no_grad():
        probe = model(x1[:1])
    if probe.ndim not in (1, 2) or probe.shape[0] != 1:
        raise ValueError(f"the model must map (P, ...) inputs to (P,) or (P, C) outputs, got {tuple(probe.shape)} for P=1")
    scalar = probe.ndim == 1
    C = 1 if scalar else probe.shape[1]
    if outputs is None:
        idx = list(range(C))
    else:
        if scalar:
            raise ValueError("outputs= selects outputs of a multi-output model, but this model has a scalar output")
        idx = list(range(C))[outputs] if isinstance(outputs, slice) else [int(a) for a in outputs]
        if not idx or any(not 0 <= a < C for a in idx):
            raise ValueError(f"outputs must select indices in 0..{C - 1}, got {outputs!r}")
    return params, x1, x2, same, idx, scalar, method


def check_per_example(model: nn.Module, x) -> None:
    """Raise ``ValueError`` if the model's output for one input depends on the others in its batch.

    The per-example NTK is then ill-defined. Batch norm in training mode is refused by
    name; any other mixing (or randomness, such as dropout in training mode) is caught by
    evaluating a batch of two inputs with its second input changed.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(
                f"{name or type(model).__name__} is {type(m).__name__} in training mode: it normalizes with "
                "statistics of the whole batch, so one input's output depends on the others and the "
                "per-example NTK is ill-defined. Use a model without batch norm (silentlib's WideResNet "
                "has none), or call model.eval() to use fixed running statistics.")
    if x.shape[0] < 2:
        return
    a = x[:2]
    b = torch.stack([x[0], 2 * x[1] + 1])
    with torch.no_grad(), exact_matmul():
        fa, fb = model(a)[0], model(b)[0]
    tol = (1e-12 if fa.dtype == torch.float64 else 1e-5) * max(float(fa.abs().max()), 1e-30)
    if float((fa - fb).abs().max()) > tol:
        raise ValueError(
            f"{type(model).__name__}'s output for one input changed when another input of the batch "
            "changed: it mixes examples (batch statistics, attention across the batch) or is random "
            "(dropout in training mode), so the per-example NTK is ill-defined; call model.eval() "
            "or remove the layer that mixes the batch")


# ---------------------------------------------------------------------------- memory

def _gib(n):
    """A byte count in readable units."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} bytes"


def _solve_block(quadratic, linear, budget):
    """Largest b with quadratic * b^2 + linear * b <= budget (0 if none)."""
    if budget <= 0:
        return 0
    return int((-linear + math.sqrt(linear * linear + 4 * quadratic * budget)) / (2 * quadratic))


def _activation_numel(model, x_one):
    """Entries of every leaf module's output for one input (an estimate of the activations kept)."""
    total = [x_one.numel()]

    def hook(_m, _inp, out):
        if torch.is_tensor(out):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x_one)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _plan(model, params, x1, x2, same, idx, method, block_size):
    ref = next(iter(params.values()))
    nbytes, dev = ref.element_size(), ref.device
    P1, P2, C = x1.shape[0], x2.shape[0], len(idx)
    n_params = sum(p.numel() for p in params.values())
    free = config.free_memory(dev)
    if dev.type == "cuda":  # memory PyTorch holds in its cache is free for us too
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    kernel = P1 * P2 * C * C * nbytes
    where = "the GPU" if dev.type == "cuda" else "the host"
    cpu = "" if dev.type == "cpu" else \
        f", or compute on the CPU (model.cpu(); the host has {_gib(config.free_memory('cpu'))} available)"
    if kernel > USABLE * free:
        raise ValueError(
            f"the NTK of {P1:,} x {P2:,} inputs with {C} output(s) has P1*P2*C^2 = {P1 * P2 * C * C:,} entries, "
            f"{_gib(kernel)} in {str(ref.dtype).replace('torch.', '')}, but {where} has {_gib(free)} free. "
            f"Use fewer inputs (a smaller P, or pieces ntk(model, x1[a:b], x2[c:d])), per-output blocks "
            f"(outputs=[a, ...] computes K[:, :, a, b] for the chosen outputs only){cpu}.")
    budget = (free - kernel) / 2 / nbytes  # working memory, in entries; half the rest, for the allocator's slack
    act = 3 * _activation_numel(model, x1[:1])
    groups, chunk, cache = None, None, False
    if method == "layerwise":
        lins = [m for m in model if isinstance(m, nn.Linear)]
        feat = sum(l.in_features + 1 + C * l.out_features for l in lins) + act  # per input
        tile = 1 + 2 * C * C                                                     # per pair
    elif method == "jacobian":
        # one input's Jacobian (C x n, and its concatenated copy) and the activations of its C backward
        # passes must fit in half the budget (b >= 1 below); split the parameters into groups if not
        per_param = 2 * C
        cap = max(1, int((budget / 2 - (C + 1) * act) / per_param))
        groups = _group_parameters(params, cap)
        n_group = max(sum(params[k].numel() for k in g) for g in groups)
        feat = per_param * n_group + (C + 1) * act
        tile = 2 * C * C
    else:  # vp: per chunk vector one parameter-sized tangent plus the activations of both blocks
        feat, tile = 0, C * C
    if method == "vp":
        def need(b):
            ch = min(b * C, VP_CHUNK)
            return ch * (n_params + 2 * b * act) + b * act + 2 * b * b * C * C
        auto = 1
        hi = max(P1, P2)
        while auto < hi and need(min(2 * auto, hi)) <= budget:
            auto = min(2 * auto, hi)
        if need(1) > budget:
            auto = 0
    else:
        cached = (P1 + (0 if same else P2)) * (feat - act) + act * min(P1, 1024)
        cache = (groups is None or len(groups) == 1) and cached <= budget / 2
        auto = _solve_block(tile, 0, budget - cached) if cache else _solve_block(tile, 2 * feat, budget)
        if same and not cache and P1 * feat + tile * P1 * P1 <= budget:
            auto = P1  # one block holds one set of features, not a row and a column set
    if auto < 1:
        raise ValueError(
            f"computing this NTK with method={method!r} needs more working memory than {where} has "
            f"beside the {_gib(kernel)} kernel ({_gib(free)} free): use fewer inputs, per-output blocks "
            f"(outputs=[...]), method='jacobian' for a large model (it splits the parameters){cpu}")
    fits = min(auto, max(P1, P2))
    if block_size is None:
        block_size = fits
        if same and P1 >= 1024:  # a few row blocks let K(x, x) skip the blocks below the diagonal
            block_size = min(fits, max(1024, -(-P1 // SYMMETRIC_BLOCKS)))
    elif not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    elif min(block_size, max(P1, P2)) > fits:
        raise ValueError(
            f"block_size={block_size} needs more working memory than {where} has free beside the "
            f"{_gib(kernel)} kernel; use block_size <= {fits} or leave it None to choose automatically")
    block_size = min(block_size, max(P1, P2))
    if method == "vp":
        chunk = min(block_size * C, VP_CHUNK)
        working = chunk * (n_params + 2 * block_size * act) + 2 * block_size ** 2 * C * C
    elif cache:
        working = cached + tile * block_size ** 2
    else:
        sets = 1 if same and block_size >= P1 else 2
        working = sets * feat * block_size + tile * block_size ** 2
    return Plan(method, C, block_size, cache, groups, chunk, kernel, int(working * nbytes), int(free))


def _group_parameters(params, cap):
    """Consecutive parameter names in groups of at most ``cap`` entries (a larger tensor alone)."""
    groups, current, size = [], [], 0
    for name, p in params.items():
        if current and size + p.numel() > cap:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += p.numel()
    groups.append(current)
    return groups


# ---------------------------------------------------------------------------- methods

def _layerwise_features(model, x, idx):
    """Per layer, last to first: (H_{l-1} with a column of ones if biased, G_l of shape (B, C, N_l))."""
    hs, zs = [], []
    h = x
    for m in model:
        (hs if isinstance(m, nn.Linear) else zs).append(h)
        h = m(h)
    C_out = 1 if h.ndim == 1 else h.shape[-1]
    g = torch.eye(C_out, dtype=h.dtype, device=h.device)[idx].expand(h.shape[0], len(idx), C_out)
    feats, lin_i, act_i = [], len(hs), len(zs)
    for m in reversed(model):
        if isinstance(m, nn.Linear):
            lin_i -= 1
            H = hs[lin_i]
            if m.bias is not None and m.bias.requires_grad:
                H = torch.cat([H, torch.ones_like(H[:, :1])], dim=1) if m.weight.requires_grad \
                    else torch.ones_like(H[:, :1])
            if m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad):
                feats.append((H, g))
            if lin_i > 0:  # the gradient with respect to the input itself is not needed
                g = g @ m.weight
        else:
            act_i -= 1
            z = zs[act_i].detach().requires_grad_(True)
            with torch.enable_grad():
                dphi, = torch.autograd.grad(m(z).sum(), z)
            g = g * dphi.unsqueeze(1)
    return feats


def _jacobian_features(model, params, x, idx, group):
    """Per-example Jacobian with respect to the parameters in ``group`` (all if None), (B, C, n_group)."""
    buffers = dict(model.named_buffers())
    names = list(params) if group is None else group
    idx_t = torch.tensor(idx, device=x.device)

    def f(p_group, xi):
        out = functional_call(model, ({**params, **p_group}, buffers), (xi.unsqueeze(0),))
        return out.reshape(-1)[idx_t]

    jac = vmap(jacrev(f), in_dims=(None, 0))({k: params[k] for k in names}, x)
    return [torch.cat([jac[k].reshape(x.shape[0], len(idx), -1) for k in names], dim=2)]


def _accumulate(out, f1, f2, *, first):
    """out (b1, b2, C, C) = [out +] sum over factor pairs of the two blocks' contraction."""
    if first:
        out.zero_()
    if torch.is_tensor(f1[0]):  # jacobian: one (B, C, n) tensor
        J1, J2 = f1[0], f2[0]
        b1, C, n = J1.shape
        b2 = J2.shape[0]
        out += (J1.reshape(b1 * C, n) @ J2.reshape(b2 * C, n).T).view(b1, C, b2, C).permute(0, 2, 1, 3)
        return
    for (H1, G1), (H2, G2) in zip(f1, f2):
        b1, C, N = G1.shape
        b2 = G2.shape[0]
        GG = (G1.reshape(b1 * C, N) @ G2.reshape(b2 * C, N).T).view(b1, C, b2, C).permute(0, 2, 1, 3)
        out.addcmul_((H1 @ H2.T)[:, :, None, None], GG)


def _vp_block(model, params, x1, x2, idx, chunk):
    buffers = dict(model.named_buffers())
    C = len(idx)
    idx_t = torch.tensor(idx, device=x1.device)

    def f(p, x):
        return functional_call(model, (p, buffers), (x,)).reshape(x.shape[0], -1)[:, idx_t]

    _, pullback = vjp(lambda p: f(p, x2), params)

    def column(cotangent):
        (tangent,) = pullback(cotangent)
        return jvp(lambda p: f(p, x1), (params,), (tangent,))[1]

    B2 = x2.shape[0]
    basis = torch.eye(B2 * C, dtype=x1.dtype, device=x1.device).reshape(B2 * C, B2, C)
    cols = vmap(column, chunk_size=chunk)(basis)  # (B2*C, B1, C)
    return cols.reshape(B2, C, x1.shape[0], C).permute(2, 0, 3, 1)
