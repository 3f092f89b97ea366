"""The methods :func:`silentlib.ntk.ntk` computes the NTK with, and the one table that dispatches them."""
from __future__ import annotations

import dataclasses
import enum
from typing import Callable

import torch

from . import generic, layerwise, memory, perexample


class Method(enum.IntEnum):
    """How the empirical NTK K[i, j, a, b] = sum over parameters of df_a(x1_i)/dtheta df_b(x2_j)/dtheta is computed.

    For P inputs, C outputs, n_params parameters and layers of widths N_l:

    ``LAYERWISE``
        Exact closed form for a plain stack of ``nn.Linear`` layers and elementwise activations
        (:func:`~silentlib.ntk.checks.layerwise_refusal` says when it applies):
        K = sum_l (H_{l-1} H_{l-1}^T [+ 1]) ⊙ (G_l G_l^T) from one forward and one batched
        backward pass. Cost O(P^2 C^2 sum_l N_l), almost all of it large matrix products;
        memory per input sum_l (N_{l-1} + 1 + C N_l) for the factors, never the Jacobian. The
        fastest where it applies, and exact by construction (no autograd check).
    ``JACOBIAN``
        Any module whose output for one input ignores the others of its batch: per-example
        Jacobians ``vmap(jacrev)`` over the unique trainable parameters, contracted over
        parameters. Memory per input 2 C n_params (the Jacobian and its concatenated copy); when
        one input's Jacobian does not fit the parameters are split into groups whose kernels
        add up. Cost O(P^2 C^2 n_params) in the contraction. Checked against autograd.
    ``VP``
        NTK-vector products: K e_jb = J(x1) (J(x2_j)^T e_b), a vjp on one input and a jvp on a
        block, vmapped over columns whose tangents fill about
        :data:`~silentlib.ntk.memory.VP_TANGENT_ENTRIES` entries. Memory per column
        one parameter-sized tangent and the block's activations, no Jacobian at all: the choice
        for large models on few inputs. Cost about P2 C forward-and-backward passes over the P1 rows, so it scales with
        P^2 like a network evaluation rather than a matrix product. Checked against autograd.
    ``AUTOGRAD``
        Any module plain autograd differentiates, also where torch.func's transforms fail: per-example
        Jacobians by ``torch.autograd.grad``, one input and one output at a time
        (:mod:`silentlib.ntk.perexample`), contracted like ``JACOBIAN``'s, within the same memory.
        P C backward passes in a Python loop: the slowest, and the fallback. Checked against autograd.
    ``AUTO``
        ``LAYERWISE`` where it is exact, else ``JACOBIAN``, recomputed with ``AUTOGRAD`` (with a
        :class:`~silentlib.ntk.fallback.FallbackWarning`) if torch.func fails on the model or its
        kernel fails its autograd check (:mod:`silentlib.ntk.fallback`).

    ``Method.parse`` accepts the names ``"auto"``, ``"layerwise"``, ``"jacobian"``, ``"vp"``, ``"autograd"``.
    """
    AUTO = 0
    LAYERWISE = 1
    JACOBIAN = 2
    VP = 3
    AUTOGRAD = 4

    @property
    def label(self) -> str:
        """The method's name as :func:`~silentlib.ntk.ntk` takes it: ``"layerwise"``, ..."""
        return self.name.lower()

    @classmethod
    def parse(cls, method) -> "Method":
        """A :class:`Method` from itself or its name; ``ValueError`` listing :data:`METHODS` otherwise."""
        if isinstance(method, cls):
            return method
        if isinstance(method, str) and method.upper() in cls.__members__ and method == method.lower():
            return cls[method.upper()]
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


#: The names of the methods, as :func:`~silentlib.ntk.ntk` takes them.
METHODS = tuple(m.label for m in Method)


@dataclasses.dataclass
class Call:
    """One checked call of :func:`~silentlib.ntk.ntk`: the trainable parameters (by name), the inputs
    x1 (P1, ...) and x2 (P2, ...) (x2 is x1 when ``same``), the selected output indices ``idx``,
    whether the kernel has no output axes (``scalar``: a scalar output, or one output selected by an
    int), the method (never ``AUTO``), for a plain stack its layers
    (:func:`~silentlib.ntk.checks.plain_stack`; None for any other model), the entries of one
    input's activations where the probe counted them (:func:`~silentlib.ntk.memory.counted_forward`;
    None: the memory plan counts them), and where the blocks go (:func:`silentlib.ntk.blocks.target`;
    None: the whole kernel in memory)."""
    params: dict
    x1: torch.Tensor
    x2: torch.Tensor
    same: bool
    idx: list
    scalar: bool
    method: Method
    layers: list | None = None
    activations: int | None = None
    target: object = None

    @property
    def ref(self) -> torch.Tensor:
        """A parameter, for the kernel's dtype and device."""
        return next(iter(self.params.values()))


@dataclasses.dataclass(frozen=True)
class Implementation:
    """A method's kernel ``compute(model, call, plan)`` -> (P1, P2, C, C), its memory needs
    ``needs(model, call, budget)`` (see :mod:`silentlib.ntk.memory`), and whether its kernels are
    checked against plain autograd (``checked``)."""
    compute: Callable
    needs: Callable
    checked: bool


#: The one dispatch table, from each method to its computation, memory model and check.
IMPLEMENTATIONS = {
    Method.LAYERWISE: Implementation(layerwise.compute, memory.layerwise_needs, checked=False),
    Method.JACOBIAN: Implementation(generic.compute_jacobian, memory.jacobian_needs, checked=True),
    Method.VP: Implementation(generic.compute_vp, memory.vp_needs, checked=True),
    Method.AUTOGRAD: Implementation(perexample.compute, memory.jacobian_needs, checked=True),
}
