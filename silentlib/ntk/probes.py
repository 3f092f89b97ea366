"""Is the model's output for one input a function of that input alone? The probes of :func:`silentlib.ntk.ntk`.

The per-example NTK is defined only for such a model. Batch norm and dropout that break it are
refused by name (:func:`check_known_layers`); any other layer that mixes the examples of a batch
(batch statistics, attention or a cumulative sum over the batch axis) or draws random numbers is
caught by evaluating two of the inputs together and one at a time (:func:`check_mixing`). The
first of these forward passes (:func:`output_shape`) also gives the output's shape and the size of
the activations, so that a kernel that cannot fit is refused after it alone.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import exact_matmul
from .checks import buffers_kept, evaluate
from .generic import attributes_kept
from .memory import counted_forward


def check_per_example(model: nn.Module, x) -> None:
    """Raise ``ValueError`` if the model's output for one input depends on the others in its batch, or on chance.

    The per-example NTK is then ill-defined. Batch norm and dropout that act so are refused by name
    (:func:`check_known_layers`); any other such layer by evaluating two inputs together and each
    alone (:func:`check_mixing`).
    """
    check_known_layers(model)
    with torch.no_grad(), exact_matmul():
        check_mixing(model, probe_inputs(x, None))


def check_known_layers(model):
    """Raise ``ValueError`` naming the first module of ``model`` whose output for one input depends on the
    other inputs of its batch (batch norm in training mode, or without running statistics) or on chance
    (dropout in training mode)."""
    for name, m in model.named_modules():
        name = name or type(model).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            how = "in training mode" if m.training else "without running statistics (track_running_stats=False)"
            fix = "call model.eval() to use fixed running statistics" if m.running_mean is not None else \
                "build it with track_running_stats=True and train it, or use a norm per example (LayerNorm, GroupNorm)"
            raise ValueError(
                f"{name} is {type(m).__name__} {how}: it normalizes with statistics of the whole batch, so one "
                "input's output depends on the others and the per-example NTK is ill-defined. Use a model without "
                f"batch norm (silentlib's WideResNet has none), or {fix}.")
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(f"{name} is {type(m).__name__} in training mode: it is random, so the model has no "
                             "fixed NTK; call model.eval()")


def probe_inputs(x1, x2):
    """Two inputs (2, ...) to probe the model with: x1[0] and another input of x1 or x2 that differs from it,
    else one made from x1[0] (2 x + 1 for floating-point inputs; integer ones, such as token ids, shifted
    within the values of the row, so that they stay in range)."""
    first = x1[:1]
    for other in (x1[1:2], x1[:0] if x2 is None else x2[:1]):
        if other.shape[0] and (other.device.type == "meta" or not torch.equal(other, first)):
            return torch.cat([first, other.to(first.dtype)])
    if first.is_floating_point():
        other = 2 * first + 1
    elif first.dtype == torch.bool:
        other = ~first
    else:  # each value to the next one up, the largest to the smallest
        other = torch.where(first == first.max(), first.min(), first + 1)
    return torch.cat([first, other])


def check_mixing(model, z, fz=None, x1=None):
    """Raise ``ValueError`` if the outputs fz = model(z) of two inputs z (2, ...) computed together (computed
    here if None) differ from those computed one at a time (one input's output depends on the other:
    batch statistics, attention or a cumulative sum over the batch axis), naming randomness instead when
    model(z) itself changes from one call to the next. An error the model raises is reported with the
    shape of x1, the inputs z were taken from (:func:`~silentlib.ntk.checks.evaluate`)."""
    def forward(batch):
        return evaluate(model, z if x1 is None else x1, "x1", lambda: model(batch.clone()))

    if z.device.type == "meta":  # no values to compare
        return
    n = z.shape[0]
    with buffers_kept(model), attributes_kept(model), torch.no_grad():
        together = (forward(z) if fz is None else fz).reshape(n, -1)
        alone = torch.cat([forward(z[i:i + 1]).reshape(1, -1) for i in range(n)])
        if _close(alone, together):
            return
        random = not _close(forward(z).reshape(n, -1), together)
    if random:
        raise ValueError(
            f"{type(model).__name__}'s output changed between two evaluations of the same inputs: it is random "
            "(dropout, noise), so it has no fixed NTK; call model.eval() or remove the randomness")
    raise ValueError(
        f"{type(model).__name__}'s output for one input changed when another input of the batch changed (the "
        "same two inputs evaluated together and one at a time): it mixes examples (batch statistics, attention "
        "or a cumulative sum over the batch axis), so the per-example NTK is ill-defined; remove the layer "
        "that mixes the batch, or call model.eval() if it mixes only in training")


def _close(a, b):
    """Whether a and b agree to rounding: 1e-12 (float64) or 1e-4 (lower precisions) of their largest entry;
    NaN never agrees."""
    tol = (1e-12 if a.dtype == torch.float64 else 1e-4) * max(float(b.abs().max()), 1e-30)
    return bool((a - b).abs().max() <= tol)


def output_shape(model, x1, z):
    """(the shape of the model's output for one input, (1,) or (1, C); model(z); the entries of one input's
    activations) for the probe inputs z (2, ...) of :func:`probe_inputs`, from one forward pass
    (:func:`~silentlib.ntk.memory.counted_forward`) whose output :func:`check_mixing` reuses.

    An error the model raises is reported with the shape of x1 (:func:`~silentlib.ntk.checks.evaluate`);
    ``ValueError`` unless the output is one (2,) or (2, C) tensor (two inputs, so that a ``.squeeze()``
    at the end of the model leaves the batch axis).
    """
    with buffers_kept(model), torch.no_grad():
        fz, activations = evaluate(model, x1, "x1", lambda: counted_forward(model, z))
    if not torch.is_tensor(fz) or fz.ndim not in (1, 2) or fz.shape[0] != 2:
        got = tuple(fz.shape) if torch.is_tensor(fz) else type(fz).__name__
        raise ValueError(f"the model must map (P, ...) inputs to (P,) or (P, C) outputs (one tensor), got {got} for P=2")
    return torch.Size((1,) + fz.shape[1:]), fz, activations
