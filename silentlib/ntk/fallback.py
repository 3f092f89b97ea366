"""A kernel that passed its check, a fallback where torch.func fails, or the reason why not.

torch.func's batched transforms do not take every model: under ``vmap``, ``jacrev`` gets
``nn.PReLU``'s weight wrong (or fails when a block's size differs from the number of outputs), the
RNN family fails, as do custom ``autograd.Function`` s without vmap support and control flow on the
data; ``vp`` also needs derivatives that some operations lack (the backward of CPU flash attention
has none). :func:`computed` runs the method, and checks every ``"jacobian"``, ``"vp"`` and
``"autograd"`` kernel against plain autograd (:func:`~silentlib.ntk.checks.projection_error`).
When the transforms raise or the check fails, ``auto`` recomputes the kernel per example with plain
autograd (:mod:`silentlib.ntk.perexample`) and says so in a :class:`FallbackWarning`; a method
chosen explicitly raises ``ValueError`` with the reason and the methods that can compute it.
"""
from __future__ import annotations

import dataclasses
import warnings

import torch

from . import checks
from .methods import IMPLEMENTATIONS, Method


class FallbackWarning(UserWarning):
    """:func:`silentlib.ntk.ntk` (``auto``) computed the kernel per example with plain autograd, because
    torch.func could not (the message says why)."""


#: What computes each checked method's derivatives, as the messages name it.
DERIVATIVES = {Method.JACOBIAN: "torch.func's vmap(jacrev)", Method.VP: "torch.func's vjp and jvp under vmap",
               Method.AUTOGRAD: "plain autograd (per example)"}
#: What to do when a method chosen explicitly cannot compute a kernel.
INSTEAD = {Method.JACOBIAN: "Use method='autograd' (plain autograd per example: slower), or 'auto', which falls "
                            "back to it by itself",
           Method.VP: "Use method='jacobian', 'autograd' (plain autograd per example: slower) or 'auto'",
           Method.AUTOGRAD: "Where plain autograd raised, the model cannot be differentiated one input at a time; "
                            "where its kernel failed the check (plain autograd on a batch), the model's output for "
                            "one input depends on the others of its batch, or on chance, in a way ntk's probe of two "
                            "inputs did not see"}


def computed(model, call, plan, requested):
    """The (P1, P2, C, C) kernel of ``call`` by its method (with ``plan``): unchecked for layerwise
    (exact by its refusals), else checked; for ``auto`` (``requested``), recomputed per example with
    plain autograd when the check fails or the transforms raise."""
    return computed_by(model, call, plan, requested)[0]


def computed_by(model, call, plan, requested):
    """(the kernel of :func:`computed`, the :class:`~silentlib.ntk.methods.Method` that computed it)."""
    if not IMPLEMENTATIONS[call.method].checked:
        return IMPLEMENTATIONS[call.method].compute(model, call, plan), call.method
    K, why = attempt(model, call, plan)
    if why is None:
        return K, call.method
    if requested is not Method.AUTO:
        raise ValueError(f"method={call.method.label!r} cannot compute this model's NTK: "
                         f"{DERIVATIVES[call.method]} {why}. {INSTEAD[call.method]}")
    warnings.warn(f"silentlib.ntk: {DERIVATIVES[call.method]} {why}; the kernel was computed per example with "
                  "plain autograd instead (method='autograd': one backward pass per input and output, slower)",
                  FallbackWarning, stacklevel=4)
    per_example = dataclasses.replace(call, method=Method.AUTOGRAD)
    K, why2 = attempt(model, per_example, dataclasses.replace(plan, method=Method.AUTOGRAD.label))
    if why2 is not None:
        raise ValueError(f"no method computes this model's NTK exactly: {DERIVATIVES[call.method]} {why}, and "
                         f"{DERIVATIVES[Method.AUTOGRAD]} {why2}. {INSTEAD[Method.AUTOGRAD]}")
    return K, Method.AUTOGRAD


def attempt(model, call, plan):
    """(K, None) when ``call``'s method computes a kernel that passes its check against plain autograd,
    else (None, what went wrong): the error it raised, or the check it failed."""
    try:
        K = IMPLEMENTATIONS[call.method].compute(model, call, plan)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # a transform's limitation: reported with its type and text
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, f"failed on it ({type(err).__name__}: {first})"
    error = checks.projection_error(model, call.x1, None if call.same else call.x2, K, call.idx, plan.block_size)
    if error is not None:
        return None, f"computed a kernel that failed its check against plain autograd ({error})"
    return K, None
