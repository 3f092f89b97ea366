"""What :func:`silentlib.ntk.ntk` checks before and after it computes a kernel.

* :func:`layerwise_refusal` -- why the layerwise formula would not be exact for a model
  (not a plain stack, a tied weight, a hook, a parametrization, ...), or None;
* :func:`check_gradient_hooks` -- a model whose gradients are not the derivatives of its function
  (a gradient hook on a parameter, a backward hook) is refused by every method;
* :func:`buffers_kept` -- forward passes that change the model's buffers are refused and undone;
* :func:`projection_error` -- a computed kernel against plain reverse-mode autograd.

Whether the output for one input depends on that input alone is probed in :mod:`silentlib.ntk.probes`.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from .generic import attributes_kept

#: The activation modules the layerwise formula treats as elementwise (each output entry depends on
#: its own input entry only).
ELEMENTWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus,
               nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Softsign, nn.Hardtanh, nn.Mish,
               nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink, nn.LogSigmoid)
#: Modules that leave a (P, N) batch as it is (flattening the input, dropout in eval mode).
PASS_THROUGH = (nn.Flatten, nn.Dropout)


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
    return plain_stack(model, input_ndim)[1]


def plain_stack(model: nn.Module, input_ndim: int = 2):
    """(the model's :func:`~silentlib.ntk.checks.flat_layers`, None) when the layerwise formula is
    exact for it, else (None, the reason of :func:`~silentlib.ntk.checks.layerwise_refusal`)."""
    from ..models import MLP  # models imports nothing from here; imported late to keep ntk standalone
    if type(model).forward not in (nn.Sequential.forward, MLP.forward):
        return None, (f"{type(model).__name__} is not an nn.Sequential (or silentlib MLP) with the stock "
                      "forward, so the order of its layers is unknown")
    if _module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks:
        return None, "global module hooks are registered (nn.modules.module.register_module_forward_hook, ...)"
    reason = _shared(model) or _hooks_or_call(model, "model")
    if reason:
        return None, reason
    layers, reason = flat_layers(model, "model")
    if reason:
        return None, reason
    if not any(kind == "linear" for kind, _, _ in layers):
        return None, "the model has no nn.Linear layer"
    reason = _shape_refusal(layers, input_ndim)
    return (None, reason) if reason else (layers, None)


def stack_output_shape(model, layers, x):
    """The shape of a plain stack's output for one of the inputs x (P, ...): (1,) for a silentlib
    ``MLP`` with one output, else (1, C); None when x does not fit the stack's layer sizes (a forward
    pass then reports the model's own error). Read from the layers, without a forward pass."""
    from ..models import MLP
    shape = tuple(x.shape[1:])
    for kind, _, m in layers:
        if kind == "pass" and isinstance(m, nn.Flatten):
            shape = (math.prod(shape),)
        elif kind == "linear":
            if shape != (m.in_features,):
                return None
            shape = (m.out_features,)
    squeezed = type(model).forward is MLP.forward and model.out_dim == 1  # MLP.forward squeezes one output
    return torch.Size((1,) if squeezed else (1,) + shape)


def _shape_refusal(layers, ndim):
    """A reason when some nn.Linear of ``layers`` would not see a (P, N) batch, else None."""
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


def flat_layers(container, prefix="model"):
    """The leaves of nested ``nn.Sequential`` s as ([(kind, name, module), ...], None), kind one of
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
            inner, reason = flat_layers(m, name)
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
    """"sequential", "linear", "act" or "pass" for a module the formula covers, else None."""
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
    """Why module m (named ``name``), which the formula does not cover, is refused."""
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


# ---------------------------------------------------------------------------- hooks on gradients

def check_gradient_hooks(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the hook that makes ``model``'s gradients differ from the derivatives of its
    forward pass.

    The NTK :func:`silentlib.ntk.ntk` computes is that of the model's function, K = J J^T with
    J = d f / d theta (as a custom ``autograd.Function``'s backward defines it). A gradient hook on a
    trainable parameter (``Tensor.register_hook``) or a module's backward hook
    (``register_full_backward_hook``, ``register_full_backward_pre_hook``, their global forms) changes
    the gradients autograd delivers, so training no longer follows J^T and no kernel of the function
    describes it; ``ntk`` refuses such a model with every method (it cannot tell a hook that only
    observes from one that rescales or masks).
    """
    hook = _gradient_hook(model)
    if hook:
        raise ValueError(
            f"{hook}: it changes the gradients that training follows, so they are not the derivatives of the "
            "model's function, whose NTK ntk computes (K = J J^T, J = d f / d theta). Remove the hook (its "
            "handle's .remove()) for the NTK of the function; to train only some entries of a weight, put the "
            "mask in the forward pass (a parametrization w -> mask * w + (1 - mask) * w.detach()), whose NTK "
            "is then the one over the entries that train")


def _gradient_hook(model):
    """The first gradient or backward hook of ``model`` (see :func:`check_gradient_hooks`), or None."""
    for name, p in model.named_parameters():
        if p.requires_grad and p._backward_hooks:
            return f"parameter {name} has a gradient hook (Tensor.register_hook)"
    for name, m in model.named_modules():
        if m._backward_hooks or m._backward_pre_hooks:
            return (f"{name or type(model).__name__} ({type(m).__name__}) has a backward hook "
                    "(register_full_backward_hook or register_full_backward_pre_hook)")
    if _module._global_backward_hooks or _module._global_backward_pre_hooks:
        return "a global module backward hook is registered (nn.modules.module.register_module_full_backward_hook)"
    return None


@contextlib.contextmanager
def buffers_kept(model):
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


def evaluate(model, x, name, fn):
    """fn(), which evaluates the model on inputs taken from ``x``; an error the model raises there is
    reported with the shape of the whole ``x`` (the one the user passed), not of the probe."""
    try:
        return fn()
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ValueError(f"the model cannot be evaluated on {name} of shape {tuple(x.shape)} "
                         f"(ntk evaluated it on two of its inputs, together and one at a time): {err}") from err


# ---------------------------------------------------------------------------- the autograd check

#: The kernel is checked on this many inputs of x1 (and of x2), spread evenly over them.
CHECK_INPUTS = 4


def projection_error(model, x1, x2, K, idx, block):
    """None if R1^T K R2 = <J(x1)^T R1, J(x2)^T R2> for random R1 (P1, C), R2 (P2, C), else what differs.

    Both sides of this identity hold for the exact kernel; the right side needs only plain
    reverse-mode autograd (one backward pass per block of inputs), so it checks the transforms
    (vmap, jacrev, jvp) that computed K. It is checked on :data:`CHECK_INPUTS` inputs of x1 and of x2
    spread evenly over them (so over several blocks), the rows and columns of K between them: a
    transform that differentiates a module wrongly does so for every input, and the check then costs
    a few inputs' backward pass, not a pass over all of them. Tolerance 10 sqrt(eps) of
    ``|J1^T R1| |J2^T R2|``.
    """
    gen = torch.Generator(device=K.device).manual_seed(0)
    rows = _spread(x1.shape[0], K.device)
    cols = rows if x2 is None else _spread(x2.shape[0], K.device)
    K = K[rows][:, cols]
    R1 = torch.randn(len(rows), len(idx), generator=gen, dtype=K.dtype, device=K.device)
    g1 = _projected_gradient(model, x1[rows], R1, idx, block)
    if x2 is None:
        R2, g2 = R1, g1
    else:
        R2 = torch.randn(len(cols), len(idx), generator=gen, dtype=K.dtype, device=K.device)
        g2 = _projected_gradient(model, x2[cols], R2, idx, block)
    projected = float(torch.einsum("ia,ijab,jb->", R1, K, R2))
    exact = float(g1 @ g2)
    scale = float(torch.linalg.vector_norm(g1) * torch.linalg.vector_norm(g2))
    tol = 10 * math.sqrt(torch.finfo(K.dtype).eps) * scale
    if not abs(projected - exact) <= tol:
        return f"R^T K R = {projected:.6g} but <J^T R, J^T R> = {exact:.6g} (tolerance {tol:.1g})"
    return None


def _spread(P, device):
    """:data:`CHECK_INPUTS` indices (all when P is smaller) spread evenly over 0..P-1, first and last included."""
    return torch.linspace(0, P - 1, min(P, CHECK_INPUTS), device=device).round().long().unique()


def _projected_gradient(model, x, R, idx, block):
    """J(x)^T R = d/d theta sum_ia R_ia f_a(x_i) over the trainable parameters, flattened; plain autograd
    in blocks of ``block`` inputs, without touching the parameters' ``.grad``."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    total = torch.zeros(sum(p.numel() for p in params), dtype=R.dtype, device=R.device)
    for i0 in range(0, x.shape[0], block):
        xb = x[i0:i0 + block].clone()
        with torch.enable_grad(), attributes_kept(model):
            out = model(xb).reshape(xb.shape[0], -1)[:, idx]
            grads = torch.autograd.grad((out * R[i0:i0 + block]).sum(), params, allow_unused=True)
        total += torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
    return total
