"""The empirical neural tangent kernel, exactly, on the model's device, within its memory.

    K[i, j, a, b] = sum_theta  d f_a(x1_i) / d theta  *  d f_b(x2_j) / d theta

(paper, Section 2; Jacot et al. 2018). :func:`ntk` computes it by one of three methods
(:class:`~silentlib.ntk.methods.Method` explains each one's cost and memory):

``"layerwise"``
    For a plain stack of linear layers and elementwise activations (a silentlib
    :class:`~silentlib.models.MLP`, or an ``nn.Sequential`` of stock ``nn.Linear``
    and elementwise activation modules; :func:`~silentlib.ntk.checks.layerwise_refusal` says why any other
    model is not one): K = sum_l (H_{l-1} H_{l-1}^T [+ 1]) ⊙ (G_l G_l^T)
    (:mod:`silentlib.ntk.layerwise`).
``"jacobian"``
    Any ``nn.Module`` whose output for one input does not depend on the other
    inputs of the batch: per-example Jacobians with ``torch.func.vmap(jacrev)``
    over the model's unique trainable parameters (a tied weight once), contracted
    over parameters (:mod:`silentlib.ntk.generic`).
``"vp"``
    NTK-vector products: K e_jb = J_1 (J(x2_j)^T e_b), a vector-Jacobian product on
    one input followed by a Jacobian-vector product, batched over chunks of columns.

``"auto"`` takes ``"layerwise"`` where it is exact and ``"jacobian"`` elsewhere. Every
``"jacobian"`` and ``"vp"`` kernel is checked against plain reverse-mode autograd
(R1^T K R2 = <J1^T R1, J2^T R2> for random R), which catches a torch.func transform
that differentiates a module wrongly; ``"auto"`` then recomputes with ``"vp"``. No
method leaves the model altered: the same ``Parameter`` objects, values, buffers and
modes before and after (:mod:`silentlib.ntk.checks`).

All three block over inputs (:mod:`silentlib.ntk.blocks`). :func:`ntk_plan` chooses the
blocks before anything is allocated so that the kernel and the working buffers fit in the
free memory of the model's device, or raises ``ValueError`` saying what is needed and what
to change (:mod:`silentlib.ntk.memory`). For one set of inputs (``x2=None``) only the
blocks on and above the diagonal are computed, and within a diagonal block a staircase on
and above the diagonal; the rest is their transpose. Everything runs in the model's dtype
(a ``.double()`` model gives float64 kernels) and never in TF32. On a CPU whose cores other
processes keep busy, a call computes on fewer threads than torch's setting
(:func:`~silentlib.ntk.products.cpu_threads`), which it restores afterwards.

Past one device: ``out=PATH`` writes the kernel into a ``.npy`` file block by block, resumable
after an interruption (:mod:`silentlib.ntk.store`), and in a ``torch.distributed`` process group
the block pairs are shared by its ranks (:mod:`silentlib.ntk.distributed`).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import exact_matmul
from . import checks, distributed as spread, memory, products
from .checks import (ELEMENTWISE, PASS_THROUGH, check_per_example, is_layerwise_compatible,
                     layerwise_refusal)
from .memory import Plan
from .methods import IMPLEMENTATIONS, METHODS, Call, Method

def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
        outputs=None, out=None, distributed: bool = True):
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
    method : str or Method
        ``"auto"`` (layerwise when the model allows it, else jacobian), ``"layerwise"``,
        ``"jacobian"`` or ``"vp"`` (see :class:`~silentlib.ntk.methods.Method`).
    block_size : int, optional
        Number of inputs per block; by default chosen by :func:`ntk_plan` from the free
        memory of the model's device.
    outputs : sequence of int or slice, optional
        For a C-output model, the output indices whose kernel blocks K[:, :, a, b] to
        compute; default all. Computing per-output blocks divides the memory by
        (C / len(outputs))^2.
    out : str or os.PathLike, optional
        A ``.npy`` file to write the kernel into, block by block, so that it need not fit in
        memory: the blocks are sized by the device's memory alone. An interrupted call resumes
        (called again with the same model, inputs and arguments, it computes only the blocks not
        yet on disk); a file of another kernel is refused, never reused or overwritten
        (:mod:`silentlib.ntk.store` describes the file and its index).
    distributed : bool
        When a ``torch.distributed`` process group is initialized, spread the block pairs over
        its ranks, each computing on its model's device (:mod:`silentlib.ntk.distributed`): every
        rank must make the same call (one made on rank 0 alone waits for the others until the
        process group's timeout). False computes on this process alone.

    Returns
    -------
    torch.Tensor or numpy.memmap
        Shape (P1, P2) for a scalar output or (P1, P2, C', C') for C' selected outputs
        (neural-tangents' ``trace_axes=()``), on the model's device, in the model's dtype; with
        ``out``, the finished file opened as a read-only memory map.

    Raises
    ------
    ValueError
        Before allocating, if the kernel or the working memory of the smallest block does
        not fit in the device's free memory, naming the size needed and the ways out
        (fewer inputs, per-output blocks, ``block_size``, the CPU); also for an unknown
        method, ``"layerwise"`` on a model that is not a stack of linear layers and
        elementwise activations, a model that mixes the examples of a batch (see
        :func:`~silentlib.ntk.checks.check_per_example`), or inputs of mismatched shapes;
        for an ``out`` file of another kernel; on every rank, when the ranks were given
        different calls or one rank failed (with that rank's message).
    """
    method = Method.parse(method)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # fewer CPU threads while other processes hold the cores (products.cpu_threads)
    with exact_matmul(), torch.no_grad(), products.cpu_threads(device):
        ranks = spread.Ranks.of(device, distributed)
        if out is not None or ranks.size > 1:
            return spread.compute(model, x1, x2, method, block_size, outputs, out, ranks)
        return _ntk(model, x1, x2, method, block_size, outputs)


def ntk_plan(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
             outputs=None) -> Plan:
    """The :class:`~silentlib.ntk.memory.Plan` (blocks, caching, memory) :func:`ntk` would use for these arguments.

    Takes the arguments of :func:`ntk` and allocates nothing. Raises the ``ValueError``
    that :func:`ntk` would raise when the kernel cannot fit.
    """
    call = _prepare(model, x1, x2, Method.parse(method), outputs)
    return _plan(model, call, block_size)


def _plan(model, call, block_size):
    return memory.plan(model, call, block_size, IMPLEMENTATIONS[call.method].needs)


def _ntk(model, x1, x2, requested, block_size, outputs):
    call = _prepare(model, x1, x2, requested, outputs)
    plan = _plan(model, call, block_size)
    K = IMPLEMENTATIONS[call.method].compute(model, call, plan)
    if IMPLEMENTATIONS[call.method].checked:  # the layerwise formula is exact by its refusals
        K = _checked(model, call, plan, K, requested, block_size)
    return K[:, :, 0, 0] if call.scalar else K


def _checked(model, call, plan, K, requested, block_size):
    """K if it passes :func:`~silentlib.ntk.checks.projection_error`; for ``auto``, else the ``vp``
    kernel if that passes; else ``ValueError`` saying which check failed."""
    x2 = None if call.same else call.x2
    error = checks.projection_error(model, call.x1, x2, K, call.idx, plan.block_size)
    if error is not None and requested is Method.AUTO:
        vp = dataclasses.replace(call, method=Method.VP)
        plan = _plan(model, vp, block_size)
        K = IMPLEMENTATIONS[Method.VP].compute(model, vp, plan)
        error2 = checks.projection_error(model, call.x1, x2, K, call.idx, plan.block_size)
        error = None if error2 is None else f"{error}; with method='vp' {error2}"
    if error is not None:
        raise ValueError(
            f"the kernel that method={call.method.label!r} computed failed its check against plain "
            f"autograd: {error}. torch.func's transforms differentiate this model wrongly (under vmap, "
            f"PReLU's weight is one such case in torch {torch.__version__}); "
            + ("no method computes it exactly" if requested is Method.AUTO else "try method='vp' or 'auto'"))
    return K


def _prepare(model, x1, x2, requested, outputs) -> Call:
    """The checked :class:`~silentlib.ntk.methods.Call`: parameters, inputs on the parameters' device
    and dtype, the method (``auto`` resolved), the selected outputs; the model probed on x1[:1]
    (a plain stack's output shape is read from its layers)."""
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters, so its NTK is zero-dimensional")
    ref = next(iter(params.values()))
    x1 = checks.batch(x1, "x1", ref)
    same = x2 is None
    x2 = x1 if same else checks.batch(x2, "x2", ref)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same trailing shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    layers, refusal = checks.plain_stack(model, x1.ndim)
    method = _resolve(requested, refusal)
    if refusal is not None:
        checks.check_batch_norm(model)
    shape = None if layers is None else checks.stack_output_shape(model, layers, x1)
    if shape is None:
        shape = _probe(model, x1, mixing=refusal is not None).shape
    idx = _output_indices(shape, outputs)
    return Call(params, x1, x2, same, idx, len(shape) == 1, method, layers)


def _resolve(requested, refusal):
    """The method to use: ``auto`` is layerwise where exact (``refusal`` None), else jacobian."""
    if requested is Method.AUTO:
        return Method.LAYERWISE if refusal is None else Method.JACOBIAN
    if requested is Method.LAYERWISE and refusal is not None:
        raise ValueError(f"method='layerwise' is exact only for plain stacks of nn.Linear and elementwise "
                         f"activations, and not for this model: {refusal}. Use method='jacobian' or 'vp' "
                         "(or 'auto', which picks 'jacobian' here)")
    return requested


def _probe(model, x1, *, mixing):
    """model(x1[:1]), checked to be (1,) or (1, C); with ``mixing``, the model also probed for
    examples that see each other (:func:`~silentlib.ntk.checks.check_mixing`)."""
    with checks.buffers_kept(model), checks.attributes_kept(model), torch.no_grad():
        probe = checks.evaluate(model, x1, "x1", lambda: model(x1[:1].clone()))
    if not torch.is_tensor(probe) or probe.ndim not in (1, 2) or probe.shape[0] != 1:
        got = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise ValueError(f"the model must map (P, ...) inputs to (P,) or (P, C) outputs (one tensor), "
                         f"got {got} for P=1")
    if mixing:
        with checks.buffers_kept(model), checks.attributes_kept(model):
            checks.evaluate(model, x1, "x1", lambda: checks.check_mixing(model, x1))
    return probe


def _output_indices(shape, outputs):
    """The selected output indices (all by default) of a model whose output on one input has ``shape``."""
    scalar = len(shape) == 1
    C = 1 if scalar else shape[1]
    if outputs is None:
        return list(range(C))
    if scalar:
        raise ValueError("outputs= selects outputs of a multi-output model, but this model has a scalar output")
    idx = list(range(C))[outputs] if isinstance(outputs, slice) else [int(a) for a in outputs]
    if not idx or any(not 0 <= a < C for a in idx):
        raise ValueError(f"outputs must select indices in 0..{C - 1}, got {outputs!r}")
    return idx
