"""The empirical neural tangent kernel, exactly, on the model's device, within its memory.

    K[i, j, a, b] = sum_theta  d f_a(x1_i) / d theta  *  d f_b(x2_j) / d theta

(paper, Section 2; Jacot et al. 2018). :func:`ntk` computes it by one of four methods
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
``"autograd"``
    Per-example Jacobians by plain reverse-mode autograd, one input and output at a time
    (:mod:`silentlib.ntk.perexample`): the slowest, for the models torch.func cannot take.

``"auto"`` takes ``"layerwise"`` where it is exact and ``"jacobian"`` elsewhere. Every
``"jacobian"``, ``"vp"`` and ``"autograd"`` kernel is checked against plain reverse-mode autograd
(R1^T K R2 = <J1^T R1, J2^T R2> for random R, on a few inputs), which catches a torch.func
transform that differentiates a module wrongly; where torch.func fails or is caught, ``"auto"``
recomputes the kernel with ``"autograd"`` and says so in a
:class:`~silentlib.ntk.fallback.FallbackWarning`, and a method chosen explicitly raises the reason
(:mod:`silentlib.ntk.fallback`). The NTK is that of the model's function: a hook that changes its
gradients is refused (:func:`~silentlib.ntk.checks.check_gradient_hooks`), as is a model whose output
for one input depends on the other inputs of its batch or on chance (:mod:`silentlib.ntk.probes`).
No method leaves the model altered: the same ``Parameter`` objects, values, buffers and modes
before and after (:mod:`silentlib.ntk.checks`).

All four block over inputs (:mod:`silentlib.ntk.blocks`). :func:`ntk_plan` chooses the
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

import torch
from torch import nn

from ..config import exact_matmul
from . import arguments, checks, distributed as spread, fallback, memory, probes, products
from .checks import ELEMENTWISE, PASS_THROUGH, is_layerwise_compatible, layerwise_refusal
from .fallback import FallbackWarning
from .memory import Plan
from .methods import IMPLEMENTATIONS, METHODS, Call, Method
from .probes import check_per_example

def ntk(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
        outputs=None, out=None, distributed: bool = True):
    """The empirical NTK of ``model`` between inputs ``x1`` and ``x2``.

    Parameters
    ----------
    model : torch.nn.Module
        The network; its output for P inputs has shape (P,) (a scalar output) or (P, C).
        Its output for one input must not depend on the other inputs of the batch (no
        batch norm in training mode) nor on chance (no dropout in training mode), and its
        gradients must be the derivatives of its forward pass (no gradient hooks).
    x1 : array_like or torch.Tensor
        (P1, ...) inputs: floating-point ones are cast to the parameters' dtype, integer and
        boolean ones (token ids) passed as they are.
    x2 : array_like or torch.Tensor, optional
        (P2, ...) inputs with the same trailing shape, or None for x2 = x1.
    method : str or Method
        ``"auto"`` (layerwise when the model allows it, else jacobian, falling back to
        autograd), ``"layerwise"``, ``"jacobian"``, ``"vp"`` or ``"autograd"`` (see
        :class:`~silentlib.ntk.methods.Method`).
    block_size : int, optional
        Number of inputs per block (a Python or numpy integer); by default chosen by
        :func:`ntk_plan` from the free memory of the model's device.
    outputs : int, slice, sequence of int or boolean mask, optional
        For a C-output model, the output indices whose kernel blocks K[:, :, a, b] to
        compute; default all. A sequence may repeat an index; a boolean mask has C entries;
        an int a gives K[:, :, a, a] alone, (P1, P2). Computing per-output blocks divides
        the memory by (C / len(outputs))^2.
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
        Shape (P1, P2) for a scalar output (or an int ``outputs``) or (P1, P2, C', C') for C'
        selected outputs (neural-tangents' ``trace_axes=()``), on the model's device, in the
        model's dtype; with ``out``, the finished file opened as a read-only memory map.

    Raises
    ------
    ValueError
        Before allocating, if the kernel or the working memory of one input does not fit in
        the device's free memory, naming the size needed and the ways out (fewer inputs,
        per-output blocks, ``block_size``, another method, the CPU); also for an unknown
        method, ``"layerwise"`` on a model that is not a stack of linear layers and
        elementwise activations, a model that mixes the examples of a batch or is random
        (:mod:`~silentlib.ntk.probes`), a gradient hook
        (:func:`~silentlib.ntk.checks.check_gradient_hooks`), a model on the ``meta`` device,
        inputs of mismatched shapes, out-of-range ``outputs``, and a method chosen explicitly
        that cannot compute the kernel (the reason, and the methods that can); for an ``out``
        file of another kernel; on every rank, when the ranks were given different calls or one
        rank failed (with that rank's message).
    TypeError
        For ``outputs`` that are not integers or a boolean mask (floats, strings).

    Warns
    -----
    FallbackWarning
        When ``auto`` computed the kernel with ``"autograd"`` because torch.func failed on the
        model (:class:`silentlib.ntk.fallback.FallbackWarning`).
    """
    method = Method.parse(method)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "meta":
        raise ValueError("the model is on the meta device: its parameters have shapes but no values, so ntk_plan "
                         "can plan its kernel but ntk cannot compute it; materialize it first "
                         "(model.to_empty(device=...), then load or initialize its weights)")
    # fewer CPU threads while other processes hold the cores (products.cpu_threads)
    with exact_matmul(), torch.no_grad(), products.cpu_threads(device):
        ranks = spread.Ranks.of(device, distributed)
        if out is not None or ranks.size > 1:
            return spread.compute(model, x1, x2, method, block_size, outputs, out, ranks)
        return _ntk(model, x1, x2, method, block_size, outputs)


def ntk_plan(model: nn.Module, x1, x2=None, *, method: str = "auto", block_size: int | None = None,
             outputs=None) -> Plan:
    """The :class:`~silentlib.ntk.memory.Plan` (blocks, caching, memory) :func:`ntk` would use for these arguments.

    Takes the arguments of :func:`ntk` and computes no kernel: a model that is not a plain stack
    is evaluated once, on two inputs, for the shape of its output and its activations; a model on
    the ``meta`` device (shapes, no weights) is planned against the host's memory. Raises the
    ``ValueError`` that :func:`ntk` would raise when the kernel cannot fit or the arguments are
    wrong (the probe for examples that see each other is left to :func:`ntk`).
    """
    call, _ = _prepare(model, x1, x2, Method.parse(method), outputs)
    return _plan(model, call, block_size)


def _plan(model, call, block_size):
    return memory.plan(model, call, arguments.block_size(block_size), IMPLEMENTATIONS[call.method].needs)


def _ntk(model, x1, x2, requested, block_size, outputs):
    call, probe = _prepare(model, x1, x2, requested, outputs)
    plan = _plan(model, call, block_size)
    if probe is not None:  # after the plan: a kernel that cannot fit is refused before any computation
        probes.check_mixing(model, *probe, call.x1)
    K = fallback.computed(model, call, plan, requested)
    return K[:, :, 0, 0] if call.scalar else K


def _prepare(model, x1, x2, requested, outputs):
    """(the checked :class:`~silentlib.ntk.methods.Call`, the probe (z, model(z)) for the mixing check, or
    None for a plain stack).

    The call: parameters, inputs on the parameters' device (floating-point ones in their dtype), the
    method (``auto`` resolved), the selected outputs. A plain stack's output shape is read from its
    layers, any other model's from two inputs (:func:`~silentlib.ntk.probes.output_shape`).
    """
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters, so its NTK is zero-dimensional")
    checks.check_gradient_hooks(model)
    ref = next(iter(params.values()))
    x1 = arguments.batch(x1, "x1", ref)
    same = x2 is None
    x2 = x1 if same else arguments.batch(x2, "x2", ref)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same trailing shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    layers, refusal = checks.plain_stack(model, x1.ndim)
    method = _resolve(requested, refusal)
    if refusal is not None:
        probes.check_known_layers(model)
    shape = None if layers is None or not x1.is_floating_point() else checks.stack_output_shape(model, layers, x1)
    probe = activations = None
    if shape is None:
        z = probes.probe_inputs(x1, None if same else x2)
        shape, fz, activations = probes.output_shape(model, x1, z)
        probe = (z, fz)
    if len(shape) == 1 and outputs is not None:
        raise ValueError("outputs= selects outputs of a multi-output model, but this model has a scalar output")
    idx, single = arguments.output_indices(outputs, 1 if len(shape) == 1 else shape[1])
    call = Call(params, x1, x2, same, idx, len(shape) == 1 or single, method, layers, activations)
    return call, (probe if refusal is not None else None)


def _resolve(requested, refusal):
    """The method to use: ``auto`` is layerwise where exact (``refusal`` None), else jacobian."""
    if requested is Method.AUTO:
        return Method.LAYERWISE if refusal is None else Method.JACOBIAN
    if requested is Method.LAYERWISE and refusal is not None:
        raise ValueError(f"method='layerwise' is exact only for plain stacks of nn.Linear and elementwise "
                         f"activations, and not for this model: {refusal}. Use method='jacobian' or 'vp' "
                         "(or 'auto', which picks 'jacobian' here)")
    return requested
