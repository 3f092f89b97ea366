"""The empirical neural tangent kernel, exactly, on the model's device, within its memory.

    K[i, j, a, b] = sum_theta  d f_a(x1_i) / d theta  *  d f_b(x2_j) / d theta

(paper, Section 2; Jacot et al. 2018). Three methods compute it:

``"layerwise"``
    For a plain stack of linear layers and elementwise activations (a silentlib
    :class:`~silentlib.models.MLP`, or an ``nn.Sequential`` of stock ``nn.Linear``
    and elementwise activation modules; :func:`layerwise_refusal` says why any other
    model is not one). With z_l = W_l h_{l-1} + b_l the pre-activation of layer l,
    h_{l-1} its input and g_l^a = d f_a / d z_l, d f_a / d W_l = g_l^a h_{l-1}^T, so

        K = sum_l (H_{l-1} H_{l-1}^T [+ 1 with bias]) ⊙ (G_l G_l^T),

    one forward pass and one backward pass per output (G_L = I for the last layer
    is never multiplied). Cost O(P^2 sum_l N_l C^2) instead of O(P^2 #params C^2),
    almost all of it in large matrix products.
``"jacobian"``
    Any ``nn.Module`` whose output for one input does not depend on the other
    inputs of the batch: per-example Jacobians with ``torch.func.vmap(jacrev)``
    over the model's unique trainable parameters (a tied weight once), contracted
    over parameters; the parameters are split into groups when one input's
    Jacobian would not fit in memory.
``"vp"``
    NTK-vector products: K e_jb = J_1 (J(x2_j)^T e_b), a vector-Jacobian product on
    one input followed by a Jacobian-vector product (``torch.func.vjp`` / ``jvp``),
    batched over chunks of columns. Needs no per-example Jacobian of the block in memory.

``"auto"`` takes ``"layerwise"`` where it is exact and ``"jacobian"`` elsewhere. Every
``"jacobian"`` and ``"vp"`` kernel is checked against plain reverse-mode autograd
(R1^T K R2 = <J1^T R1, J2^T R2> for random R), which catches a torch.func transform
that differentiates a module wrongly; ``"auto"`` then recomputes with ``"vp"``. No
method leaves the model altered: the same ``Parameter`` objects, values, buffers and
modes before and after.

All three block over inputs. :func:`ntk_plan` chooses the blocks before anything
is allocated so that the kernel and the working buffers fit in the free memory
of the model's device, or raises ``ValueError`` saying what is needed and what to
change. For one set of inputs (``x2=None``) only the blocks on and above the
diagonal are computed, and within a diagonal block a staircase on and above the
diagonal; the rest is their transpose. Everything runs in the
model's dtype (a ``.double()`` model gives float64 kernels) and never in TF32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import torch
from torch import nn
from torch.func import jacrev, jvp, vjp, vmap
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from . import config
from .config import as_batch, exact_matmul

METHODS = ("auto", "layerwise", "jacobian", "vp")

# activation modules whose forward is elementwise: phi applied to each entry on its own
#: The activation modules the layerwise formula treats as elementwise (each output entry depends on
#: its own input entry only).
ELEMENTWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus,
               nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Softsign, nn.Hardtanh, nn.Mish,
               nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink, nn.LogSigmoid)
# modules that do not change a (P, N) batch: flattening the input, dropout in eval mode
PASS_THROUGH = (nn.Flatten, nn.Dropout)

USABLE = 0.9          # share of the free memory the kernel may take
SYMMETRIC_BLOCKS = 4  # for K(x, x), split into at least this many row blocks (from 1024 inputs up)
VP_CHUNK = 16         # columns (inputs x outputs) per vmapped NTK-vector product
STAIRCASE_STEPS = 4   # a diagonal block of K(x, x) is computed in this many row steps ...
STAIRCASE_MIN_ROWS = 32  # ... of at least this many inputs


def is_layerwise_compatible(model: nn.Module, input_ndim: int = 2) -> bool:
    """True when the layerwise formula is exact for ``model`` (see :func:`layerwise_refusal`)."""
    return layerwise_refusal(model, input_ndim) is None


def layerwise_refusal(model: nn.Module, input_ndim: int = 2) -> str | None:
    """Why the layerwise formula would not be exact for ``model`` on inputs with ``input_ndim`` axes,
    or None when it is.

    It is exact for an ``nn.Sequential`` (nested ones included) or a silentlib ``MLP`` of
    ``nn.Linear`` layers, elementwise activation modules (:data:`ELEMENTWISE`, in-place ones
    included) and ``nn.Flatten`` / ``nn.Dropout`` in eval mode, where every ``nn.Linear`` sees a
    (P, N) batch, and where nothing changes what these modules compute: no subclass with its own
    ``forward``, no parametrization (``weight_norm``, ...), no hooks, and no module or parameter
    used twice (the NTK of a shared weight has cross terms between its uses).
    """
    from .models import MLP  # models imports nothing from here; imported late to keep ntk standalone
    if type(model).forward not in (nn.Sequential.forward, MLP.forward):
        return (f"{type(model).__name__} is not an nn.Sequential (or silentlib MLP) with the stock "
                "forward, so the order of its layers is unknown")
    if _module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks:
        return "global module hooks are registered (nn.modules.module.register_module_forward_hook, ...)"
    shared = _shared(model)
    if shared:
        return shared
    root = _hooks_or_call(model, "model")
    if root:
        return root
    layers, reason = _flat_layers(model, "model")
    if reason:
        return reason
    if not any(kind == "linear" for kind, _, _ in layers):
        return "the model has no nn.Linear layer"
    ndim = input_ndim
    for kind, name, m in layers:
        if kind == "pass" and isinstance(m, nn.Flatten):
            if m.end_dim != -1 or m.start_dim != 1:
                return f"{name} is nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}), not (1, -1)"
            ndim = min(ndim, 2)
        elif kind == "linear" and ndim != 2:
            return (f"{name} (nn.Linear) is applied to inputs with {ndim} axes; the layerwise formula "
                    "needs (P, N) batches (flatten the input first)")
    return None


def _shared(model):
    """A reason when a module or a parameter of ``model`` appears more than once, else None."""
    seen = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen:
            return (f"{name} and {seen[id(m)]} are the same module (weights tied by reuse); the NTK "
                    "of a shared weight has cross terms between its uses")
        seen[id(m)] = name
    seen = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            return f"parameters {seen[id(p)]} and {name} are the same tensor (tied weights)"
        seen[id(p)] = name
    return None


def _flat_layers(container, prefix):
    """The leaves of nested ``nn.Sequential`` s as (kind, name, module), kind one of
    ``"linear"``, ``"act"``, ``"pass"``; or (None, reason) for a module the formula does not cover."""
    out = []
    for key, m in container._modules.items():
        name = f"{prefix}[{key}]"
        if m is None:
            continue
        if parametrize.is_parametrized(m):
            return None, f"{name} ({type(m).__name__}) is parametrized ({', '.join(m.parametrizations)})"
        reason = _hooks_or_call(m, name)
        if reason:
            return None, reason
        kind = _kind(m)
        if kind == "sequential":
            inner, reason = _flat_layers(m, name)
            if reason:
                return None, reason
            out += inner
        elif kind is None:
            return None, _unknown(name, m)
        else:
            out.append((kind, name, m))
    return out, None


def _hooks_or_call(m, name):
    """A reason when module m runs code besides its forward (hooks, its own __call__), else None."""
    hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
             if getattr(m, h, None)]
    if hooks:
        return (f"{name} ({type(m).__name__}) has hooks ({', '.join(h.strip('_') for h in hooks)}), "
                "e.g. the old torch.nn.utils.weight_norm or spectral_norm")
    if type(m).__call__ is not nn.Module.__call__:
        return f"{name} ({type(m).__name__}) overrides __call__"
    return None


def _kind(m):
    forward = type(m).forward
    if forward is nn.Sequential.forward:
        return "sequential"
    if forward is nn.Linear.forward:
        ok = isinstance(m._parameters.get("weight"), nn.Parameter) and (
            m._parameters.get("bias") is None or isinstance(m._parameters["bias"], nn.Parameter))
        return "linear" if ok and "bias" in m._parameters else None
    if m._parameters or m._buffers:
        return None
    if any(forward is c.forward for c in ELEMENTWISE):
        return "act"
    if forward is nn.Flatten.forward or (forward is nn.Dropout.forward and not m.training):
        return "pass"
    return None


def _unknown(name, m):
    cls = type(m).__name__
    if isinstance(m, nn.Dropout) and type(m).forward is nn.Dropout.forward:
        return f"{name} ({cls}) is dropout in training mode (random); call model.eval()"
    for base in (nn.Linear,) + ELEMENTWISE + PASS_THROUGH:
        if isinstance(m, base) and type(m).forward is not base.forward:
            return f"{name} ({cls}) is a subclass of nn.{base.__name__} with its own forward"
    if isinstance(m, nn.Linear):
        return f"{name} ({cls}) holds a weight or bias that is not an nn.Parameter of its own"
    return (f"{name} ({cls}) is not nn.Linear, a known elementwise activation without parameters, "
            "nn.Flatten or eval-mode nn.Dropout")


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
    requested = method
    params, x1, x2, same, idx, scalar, method = _prepare(model, x1, x2, method, outputs)
    plan = _plan(model, params, x1, x2, same, idx, method, block_size)
    K = _compute(model, params, x1, x2, same, idx, method, plan)
    if method != "layerwise":  # torch.func's transforms are checked; the layerwise formula is exact by its checks
        error = _projection_error(model, x1, None if same else x2, K, idx, plan.block_size)
        if error is not None and requested == "auto":
            plan = _plan(model, params, x1, x2, same, idx, "vp", block_size)
            K = _compute(model, params, x1, x2, same, idx, "vp", plan)
            error2 = _projection_error(model, x1, None if same else x2, K, idx, plan.block_size)
            error = None if error2 is None else f"{error}; with method='vp' {error2}"
        if error is not None:
            raise ValueError(
                f"the kernel that method={method!r} computed failed its check against plain autograd: {error}. "
                f"torch.func's transforms differentiate this model wrongly (under vmap, PReLU's weight is one "
                f"such case in torch {torch.__version__}); "
                + ("no method computes it exactly" if requested == "auto" else "try method='vp' or 'auto'"))
    return K[:, :, 0, 0] if scalar else K


def _projection_error(model, x1, x2, K, idx, block):
    """None if R1^T K R2 = <J(x1)^T R1, J(x2)^T R2> for random R1 (P1, C), R2 (P2, C), else what differs.

    Both sides of this identity hold for the exact kernel; the right side needs only plain
    reverse-mode autograd (one backward pass per block of inputs), so it checks the transforms
    (vmap, jacrev, jvp) that computed K. Tolerance 10 sqrt(eps) of |J1^T R1| |J2^T R2|.
    """
    gen = torch.Generator(device=K.device).manual_seed(0)
    R1 = torch.randn(x1.shape[0], len(idx), generator=gen, dtype=K.dtype, device=K.device)
    g1 = _projected_gradient(model, x1, R1, idx, block)
    if x2 is None:
        R2, g2 = R1, g1
    else:
        R2 = torch.randn(x2.shape[0], len(idx), generator=gen, dtype=K.dtype, device=K.device)
        g2 = _projected_gradient(model, x2, R2, idx, block)
    projected = float(torch.einsum("ia,ijab,jb->", R1, K, R2))
    exact = float(g1 @ g2)
    scale = float(torch.linalg.vector_norm(g1) * torch.linalg.vector_norm(g2))
    tol = 10 * math.sqrt(torch.finfo(K.dtype).eps) * scale
    if not abs(projected - exact) <= tol:
        return f"R^T K R = {projected:.6g} but <J^T R, J^T R> = {exact:.6g} (tolerance {tol:.1g})"
    return None


def _projected_gradient(model, x, R, idx, block):
    """J(x)^T R = d/d theta sum_ia R_ia f_a(x_i) over the trainable parameters, flattened; plain autograd
    in blocks of ``block`` inputs, without touching the parameters' ``.grad``."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params), dtype=R.dtype, device=R.device)
    for i0 in range(0, x.shape[0], block):
        xb = x[i0:i0 + block].clone()
        with torch.enable_grad(), _attributes_kept(model):
            out = model(xb).reshape(xb.shape[0], -1)[:, idx]
            grads = torch.autograd.grad((out * R[i0:i0 + block]).sum(), params, allow_unused=True)
        total += torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
    return total


def _compute(model, params, x1, x2, same, idx, method, plan):
    """The (P1, P2, C, C) kernel by ``method`` in the blocks of ``plan``."""
    ref = next(iter(params.values()))
    P1, P2, C = x1.shape[0], x2.shape[0], len(idx)
    K = torch.empty((P1, P2, C, C), dtype=ref.dtype, device=ref.device)
    b = plan.block_size
    rows = [(i, min(i + b, P1)) for i in range(0, P1, b)]
    cols = rows if same else [(j, min(j + b, P2)) for j in range(0, P2, b)]
    if method == "vp":
        for bi, (i0, i1) in enumerate(rows):
            for bj, (j0, j1) in enumerate(cols):
                if not (same and bj < bi):  # a diagonal block of K(x, x) uses its own symmetry
                    K[i0:i1, j0:j1] = _vp_block(model, params, x1[i0:i1], None if same and bi == bj
                                                else x2[j0:j1], idx, plan.chunk)
        if same:
            _mirror(K, rows)
        return K
    groups = plan.groups or [None]
    for g in groups:
        layers = _flat_layers(model, "model")[0] if method == "layerwise" else None
        feats = (lambda x: _layerwise_features(layers, x, idx)) if method == "layerwise" else \
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
    return K


def _mirror(K, rows):
    """Fill the blocks of K(x, x) below the diagonal with the transposes of those above it (the
    diagonal blocks are made exactly symmetric by the methods themselves)."""
    for bi, (i0, i1) in enumerate(rows):
        for j0, j1 in rows[:bi]:
            K[i0:i1, j0:j1] = K[j0:j1, i0:i1].permute(1, 0, 3, 2)


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
    x1 = _as_batch(x1, "x1", ref)
    same = x2 is None
    x2 = x1 if same else _as_batch(x2, "x2", ref)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same trailing shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    refusal = layerwise_refusal(model, x1.ndim)
    if method == "auto":
        method = "layerwise" if refusal is None else "jacobian"
    if method == "layerwise" and refusal is not None:
        raise ValueError(f"method='layerwise' is exact only for plain stacks of nn.Linear and elementwise "
                         f"activations, and not for this model: {refusal}. Use method='jacobian' or 'vp' "
                         "(or 'auto', which picks 'jacobian' here)")
    if refusal is not None:
        _check_batch_norm(model)
    with _buffers_kept(model), _attributes_kept(model), torch.no_grad():
        probe = _evaluate(model, x1, "x1", lambda: model(x1[:1].clone()))
    if not torch.is_tensor(probe) or probe.ndim not in (1, 2) or probe.shape[0] != 1:
        got = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise ValueError(f"the model must map (P, ...) inputs to (P,) or (P, C) outputs (one tensor), "
                         f"got {got} for P=1")
    if refusal is not None:
        with _buffers_kept(model), _attributes_kept(model):
            _evaluate(model, x1, "x1", lambda: _check_mixing(model, x1))
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


@contextlib.contextmanager
def _buffers_kept(model):
    """Refuse (and undo) forward passes in the block that change the model's buffers (running
    statistics, spectral_norm's power iteration in training mode): such a model has no fixed NTK."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        changed = [name for name, b in model.named_buffers() if name in saved and not torch.equal(b, saved[name])]
        with torch.no_grad():
            for name in changed:
                model.get_buffer(name).copy_(saved[name])
    if changed:
        raise ValueError(
            f"the model's forward pass changes its buffers ({', '.join(changed)}): a model that updates "
            "state as it runs (batch norm or spectral_norm in training mode) has no fixed NTK, and ntk "
            "would alter it; call model.eval() first")


def _evaluate(model, x, name, fn):
    """fn(), which evaluates the model on the first inputs of ``x``; an error the model raises there is
    reported with the shape of the whole ``x`` (the one the user passed), not of the probe."""
    try:
        return fn()
    except (RuntimeError, ValueError, IndexError) as err:
        if isinstance(err, ValueError) and "per-example NTK" in str(err):
            raise
        raise ValueError(f"the model cannot be evaluated on {name} of shape {tuple(x.shape)} "
                         f"(ntk evaluated its first inputs, {name}[:1] or {name}[:2]): {err}") from err


def _as_batch(a, name, ref):
    """:func:`silentlib.config.as_batch`, with its finiteness check done as one reduction when that
    passes (a finite sum has finite terms; otherwise the entries are checked one by one)."""
    if torch.is_tensor(a) and a.ndim >= 1 and a.shape[0] > 0:
        t = a.to(device=ref.device, dtype=ref.dtype)
        if torch.isfinite(t.sum()):
            return t
    return as_batch(a, name, ref)


def check_per_example(model: nn.Module, x) -> None:
    """Raise ``ValueError`` if the model's output for one input depends on the others in its batch.

    The per-example NTK is then ill-defined. Batch norm in training mode is refused by
    name; any other mixing is caught by evaluating a batch of up to eight inputs with all but the
    first changed, and randomness (such as dropout in training mode) by evaluating it twice.
    """
    _check_batch_norm(model)
    _check_mixing(model, x)


def _check_batch_norm(model):
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(
                f"{name or type(model).__name__} is {type(m).__name__} in training mode: it normalizes with "
                "statistics of the whole batch, so one input's output depends on the others and the "
                "per-example NTK is ill-defined. Use a model without batch norm (silentlib's WideResNet "
                "has none), or call model.eval() to use fixed running statistics.")


def _check_mixing(model, x):
    if x.shape[0] < 2:
        return
    a = x[:8].clone()
    b = torch.cat([a[:1], 2 * a[1:] + 1])
    with torch.no_grad(), exact_matmul():
        fa, again, fb = model(a), model(a.clone()), model(b)
    tol = (1e-12 if fa.dtype == torch.float64 else 1e-5) * max(float(fa.abs().max()), 1e-30)
    # row 0 must not see the other rows change, and no row may change between two identical calls
    if float((fa[0] - fb[0]).abs().max()) > tol or float((fa - again).abs().max()) > tol:
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
    x_one = x_one.clone()  # an in-place first module must not overwrite the caller's input
    total = [x_one.numel()]

    def hook(_m, _inp, out):
        if torch.is_tensor(out):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), _attributes_kept(model):
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
    if method == "layerwise":  # the stack's sizes are known: no forward pass to count them
        act = 3 * (x1[:1].numel() + sum(m.out_features if kind == "linear" else 0
                                        for kind, _, m in _flat_layers(model, "model")[0]) * 2)
    else:
        act = 3 * _activation_numel(model, x1[:1])
    groups, chunk, cache = None, None, False
    if method == "layerwise":
        lins = [m for kind, _, m in _flat_layers(model, "model")[0] if kind == "linear"]
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

@dataclasses.dataclass
class _Layer:
    """The factors of one nn.Linear's contribution for a block of B inputs (paper, Section 2):
    d f_a / d W = g^a h^T and d f_a / d b = g^a, so it adds (H1 H2^T [+ 1]) ⊙ (G1 G2^T).

    H : (B, n_in) inputs of the layer, or None when its weight is frozen.
    bias : whether the bias trains.
    G : (B, C, n_out) gradients of the selected outputs with respect to the layer's output, or None
        for the last layer with nothing after it, where G1 G2^T[i, j, a, b] = delta_ab.
    C : the number of selected outputs; x : the block's inputs.
    """
    H: torch.Tensor | None
    bias: bool
    G: torch.Tensor | None
    C: int
    x: torch.Tensor  # the block's inputs (for their number, dtype and device)


def _derivative(m, z):
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


def _layerwise_features(layers, x, idx):
    """The :class:`_Layer` factors of every trainable nn.Linear, last to first, for inputs x (B, ...).

    ``layers`` is the flattened (kind, name, module) list of :func:`_flat_layers`. One forward pass
    keeps each layer's input and each activation's derivative; one backward pass per selected
    output (batched over outputs) gives G_l = G_{l+1} W_{l+1} ⊙ phi'(z_l).
    """
    first = next(i for i, (kind, _, _) in enumerate(layers) if kind == "linear")
    trainable = [i for i, (kind, _, m) in enumerate(layers) if kind == "linear" and
                 (m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad))]
    saved = {}
    h = x
    for i, (kind, _, m) in enumerate(layers):
        if kind == "linear":
            saved[i] = h
            h = _linear(m, h)
        elif kind == "act" and i > first:
            h, saved[i] = _derivative(m, h)
        else:  # before the first layer nothing is differentiated; never overwrite the caller's x
            h = m(h.clone()) if getattr(m, "inplace", False) else m(h)
    g = None  # (B or 1, C, N) gradients at the current layer's output; None: the identity rows e_a
    feats = []
    for i in range(len(layers) - 1, trainable[0] - 1, -1):
        kind, _, m = layers[i]
        if kind == "linear":
            if i in trainable:
                G = None if g is None else g.expand(x.shape[0], len(idx), g.shape[2])  # (1, C, N) in a linear stack
                feats.append(_Layer(saved[i] if m.weight.requires_grad else None,
                                    m.bias is not None and m.bias.requires_grad, G, len(idx), x))
            if i > trainable[0]:
                W = m.weight
                g = W[idx].unsqueeze(0) if g is None else \
                    _gram(g.reshape(-1, W.shape[0]), W.T).view(g.shape[0], len(idx), W.shape[1])
        elif kind == "act" and saved[i] is not None:
            if g is None:
                C_out = h.shape[-1] if h.ndim == 2 else 1
                g = torch.eye(C_out, dtype=h.dtype, device=h.device)[idx].unsqueeze(0)
            g = g * saved[i].unsqueeze(1)  # (B or 1, C, N) * (B, 1, N)
    return feats


def _gram(A, B):
    """A @ B.T for (n, k) and (m, k) matrices, exact in their dtype.

    On the CPU, float32 products go through oneDNN: torch's MKL takes its AVX2 path on AMD CPUs,
    oneDNN uses AVX-512 where the CPU has it (twice the throughput on this project's machines).
    """
    if A.dtype == torch.float32 and A.device.type == "cpu" and _ONEDNN:
        return _onednn_mm_t(A, B)
    return A @ B.T


def _onednn_mm_t(A, B, bias=None):
    """A @ B.T (+ bias) by oneDNN's inner product (float32 CPU tensors, IEEE float32 arithmetic)."""
    return torch.ops.mkldnn._linear_pointwise(A.contiguous(), B.contiguous(), bias, "none", [], "")


def _linear(m, h):
    """nn.Linear m applied to h (B, n_in), through :func:`_gram`'s fast product on the CPU."""
    if h.device.type == "cpu" and h.dtype == torch.float32 and _ONEDNN:
        return _onednn_mm_t(h, m.weight, m.bias)
    return m(h)


def _onednn_works():
    """Whether oneDNN's inner product is available here and agrees with a float64 product."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(7, 5, generator=gen), torch.randn(3, 5, generator=gen)
        exact = (a.double() @ b.double().T).float()
        return bool(torch.allclose(_onednn_mm_t(a, b), exact, rtol=1e-5, atol=1e-5))
    except Exception:  # an older torch without the op, or a build without oneDNN
        return False


_ONEDNN = _onednn_works()


@contextlib.contextmanager
def _substituted(model, values):
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
        with _attributes_kept(model):
            for m, key, p in slots:
                m._parameters[key] = by_id[id(p)]
            yield
    finally:
        for m, key, p in slots:
            m._parameters[key] = p


@contextlib.contextmanager
def _attributes_kept(model):
    """Put back every tensor attribute of the model's modules after the block: a forward pass may
    store tensors on its modules (the old ``torch.nn.utils.weight_norm`` hook sets ``module.weight``)."""
    attrs = [(m, key, v) for m in model.modules() for key, v in vars(m).items() if torch.is_tensor(v)]
    try:
        yield
    finally:
        for m, key, v in attrs:
            m.__dict__[key] = v


def _call(model, values, x):
    """model(x) computed with the parameters ``values`` (names of ``model.named_parameters()``); x is
    copied first, so that an in-place first module cannot overwrite the caller's inputs."""
    with _substituted(model, values):
        return model(x.clone())


def _jacobian_features(model, params, x, idx, group):
    """Per-example Jacobian with respect to the parameters in ``group`` (all if None), (B, C, n_group).

    The parameters are the model's unique trainable ones, so a tied weight's Jacobian is the sum
    over its uses.
    """
    names = list(params) if group is None else group
    idx_t = torch.tensor(idx, device=x.device)

    def f(p_group, xi):
        out = _call(model, {**params, **p_group}, xi.unsqueeze(0))
        return out.reshape(-1)[idx_t]

    jac = vmap(jacrev(f), in_dims=(None, 0))({k: params[k] for k in names}, x)
    return [torch.cat([jac[k].reshape(x.shape[0], len(idx), -1) for k in names], dim=2)]


def _accumulate(out, f1, f2, *, first):
    """out (b1, b2, C, C) = [out +] the contraction of two blocks' features (layerwise or jacobian).

    For a diagonal block of K(x, x) (``f1 is f2``) only a staircase on and above the diagonal is
    computed, rows i0..i1 against the columns from i0 on, in about four steps (62.5 % of the
    products); the rest is its transpose, and the small squares on the diagonal are averaged with
    their transpose so that the block is exactly symmetric.
    """
    if f1 is not f2:
        _store(out, _terms(f1, f2, slice(None), slice(None)), first)
        return
    B = out.shape[0]
    step = max(STAIRCASE_MIN_ROWS, -(-B // STAIRCASE_STEPS))
    edges = [(i, min(i + step, B)) for i in range(0, B, step)]
    for i0, i1 in edges:
        terms = _terms(f1, f1, slice(i0, i1), slice(i0, None))      # (r, C, B - i0, C)
        r, C = terms.shape[:2]
        square = terms[:, :, :r].reshape(r * C, r * C)                # its diagonal square, as a matrix
        _store(out[i0:i1, i0:i1], ((square + square.T) / 2).view(r, C, r, C), first)
        _store(out[i0:i1, i1:], terms[:, :, r:], first)
    for i0, i1 in edges[:-1]:
        out[i1:, i0:i1] = out[i0:i1, i1:].permute(1, 0, 3, 2)


def _store(out, terms, first):
    """out (r, c, C, C) [+]= terms (r, C, c, C), the layout of the Gram matrices."""
    if first:
        out.copy_(terms.permute(0, 2, 1, 3))
    else:
        out += terms.permute(0, 2, 1, 3)


def _terms(f1, f2, rows, cols):
    """The kernel's (r, C, c, C) entries between the inputs ``rows`` of block 1 and ``cols`` of block 2."""
    if torch.is_tensor(f1[0]):  # jacobian: one (B, C, n) tensor per block
        J1, J2 = f1[0][rows], f2[0][cols]
        r, C, n = J1.shape
        return _gram(J1.reshape(r * C, n), J2.reshape(-1, n)).view(r, C, J2.shape[0], C)
    # layerwise: sum over layers of (H1 H2^T [+ 1]) ⊙ (G1 G2^T), summed in the first term's buffer
    acc, identity = None, []
    for l1, l2 in zip(f1, f2):
        HH = None
        if l1.H is not None:
            HH = _gram(l1.H[rows], l2.H[cols])
            if l1.bias:
                HH += 1
        if l1.G is None:  # G1 G2^T = delta_ab: only the entries a = b receive H1 H2^T (+ 1)
            identity.append(1 if HH is None else HH)
            continue
        G1, G2 = l1.G[rows], l2.G[cols]
        r, C, N = G1.shape
        term = _gram(G1.reshape(r * C, N), G2.reshape(-1, N)).view(r, C, G2.shape[0], C)
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


def _vp_block(model, params, x1, x2, idx, chunk):
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
    K = torch.empty((B1, B2, C, C), dtype=x1.dtype, device=x1.device)
    per = max(1, chunk // C)  # inputs of x2 per chunk
    eye = torch.eye(C, dtype=x1.dtype, device=x1.device)
    for j0 in range(0, B2, per):
        j1 = min(j0 + per, B2)
        rows = x1[:j1] if same else x1
        xs = x2[j0:j1].repeat_interleave(C, dim=0)      # (n*C, ...): x2_j, once per output b
        es = eye.repeat(j1 - j0, 1)                      # (n*C, C): e_b for each j
        cols = _columns(model, params, rows, idx)(xs, es)  # (n*C, rows, C)
        K[:rows.shape[0], j0:j1] = cols.reshape(j1 - j0, C, rows.shape[0], C).permute(2, 0, 3, 1)
    if same:
        for j0 in range(0, B2, per):  # below the staircase: the transpose of what is above it
            j1 = min(j0 + per, B2)
            K[j1:, j0:j1] = K[j0:j1, j1:].permute(1, 0, 3, 2)
            square = K[j0:j1, j0:j1]
            square.copy_((square + square.permute(1, 0, 3, 2)) / 2)
    return K


def _columns(model, params, x1, idx):
    """A function (xs (n, ...), es (n, C)) -> (n, B1, C): J(x1) J(x_k)^T e_k for each k, vmapped."""
    idx_t = torch.tensor(idx, device=x1.device)
    C = len(idx)

    def f(p, x):
        return _call(model, p, x).reshape(x.shape[0], -1)[:, idx_t]

    def tangent(xj, e):
        _, pullback = vjp(lambda p: f(p, xj.unsqueeze(0))[0], params)
        return pullback(e)[0]

    def forward_mode(xj, e):
        return jvp(lambda p: f(p, x1), (params,), (tangent(xj, e),))[1]

    def reverse_mode(xj, e):
        _, pullback = vjp(lambda p: f(p, x1), params)
        zero = torch.zeros(x1.shape[0], C, dtype=x1.dtype, device=x1.device)
        return vjp(lambda u: pullback(u)[0], zero)[1](tangent(xj, e))[0]

    def run(xs, es):
        try:
            return vmap(forward_mode)(xs, es)
        except NotImplementedError as err:
            if "forward AD" not in str(err):
                raise
            return vmap(reverse_mode)(xs, es)

    return run
