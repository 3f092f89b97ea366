"""The memory model of :func:`silentlib.ntk.ntk`: blocks chosen before anything is allocated.

The kernel itself takes P1 P2 C^2 numbers and must fit in :data:`USABLE` of the device's free
memory. Half of what is left is the *budget* for the working buffers (the other half is slack
for the allocator). A kernel written to a file (``out=``, :mod:`silentlib.ntk.store`) is never
whole in memory: its blocks are sized by the device's memory alone, with a quarter of it as the
budget (the block and its copy for the file take at most as much as the Gram products). Each
method states, per input and per pair of inputs, how much it needs:

* features methods (layerwise, jacobian) keep ``feat`` numbers per input of a block (its
  features and activations) and ``tile`` numbers per pair (the Gram products); when every
  block's features fit in half the budget they are computed once and kept (``cache``);
* vp keeps, per vmapped column, one parameter-sized tangent and the activations of both blocks.

The block size is the largest that fits (:func:`plan`); when none does, ``ValueError`` says
what is needed and what to change.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .. import config
from .generic import attributes_kept

#: Share of the free memory the kernel may take.
USABLE = 0.9
#: K(x, x) of 1024 inputs or more is split into at least this many row blocks.
SYMMETRIC_BLOCKS = 4
#: Entries of the tangents (one parameter-sized vector per column) of one vmapped NTK-vector product:
#: the columns per product are about this over the number of parameters, ...
VP_TANGENT_ENTRIES = 2**23
#: ... and at least this many. On a 2-core CPU the time per column falls until the tangents fill about
#: 2^23 entries, and rises beyond (measured for 2-3 layer MLPs of 0.2-0.8 M parameters).
VP_MIN_CHUNK = 8


@dataclasses.dataclass
class Plan:
    """How :func:`~silentlib.ntk.ntk` will compute a kernel, chosen from the device's free memory.

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
        The kernel's size in memory (0 when it is written to a file block by block).
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


def gib(n):
    """A byte count in readable units."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} bytes"


@dataclasses.dataclass
class Room:
    """What the device offers one call: the kernel's bytes, the free bytes, the working budget (in
    entries), and the words the refusals use for the device."""
    nbytes: int
    free: int
    kernel: int
    budget: float
    where: str
    elsewhere: str

    @classmethod
    def of(cls, call):
        """The room for ``call``'s kernel; ``ValueError`` when the kernel alone does not fit."""
        ref = call.ref
        nbytes, dev = ref.element_size(), ref.device
        P1, P2, C = call.x1.shape[0], call.x2.shape[0], len(call.idx)
        free = config.free_memory(dev)
        if dev.type == "cuda":  # memory PyTorch holds in its cache is free for us too
            free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        streamed = call.target is not None and not call.target.whole  # out=: one block at a time
        kernel = 0 if streamed else P1 * P2 * C * C * nbytes
        where = "the GPU" if dev.type == "cuda" else "the host"
        cpu = "" if dev.type in ("cpu", "meta") else \
            f", or compute on the CPU (model.cpu(); the host has {gib(config.free_memory('cpu'))} available)"
        if kernel > USABLE * free:
            raise ValueError(
                f"the NTK of {P1:,} x {P2:,} inputs with {C} output(s) has P1*P2*C^2 = {P1 * P2 * C * C:,} "
                f"entries, {gib(kernel)} in {str(ref.dtype).replace('torch.', '')}, but {where} has "
                f"{gib(free)} free. Use fewer inputs (a smaller P, or pieces ntk(model, x1[a:b], x2[c:d])), "
                f"per-output blocks (outputs=[a, ...] computes K[:, :, a, b] for the chosen outputs only){cpu}, "
                f"or write it to disk block by block (out='kernel.npy').")
        budget = (free - kernel) / (4 if streamed else 2) / nbytes  # half the rest is the allocator's slack
        return cls(nbytes, free, kernel, budget, where, cpu)


# ---------------------------------------------------------------------------- the methods' needs

def solve_block(quadratic, linear, budget):
    """Largest b with quadratic * b^2 + linear * b <= budget (0 if none)."""
    if budget <= 0:
        return 0
    return int((-linear + math.sqrt(linear * linear + 4 * quadratic * budget)) / (2 * quadratic))


@dataclasses.dataclass
class FeatureNeeds:
    """A features method's needs, in entries: ``feat`` per input of a block (``act`` of them the
    activations of its passes), ``tile`` per pair of inputs, for P1 (and P2) inputs."""
    feat: float
    tile: float
    act: float
    P1: int
    P2: int
    same: bool
    budget: float
    groups: list | None = None

    def __post_init__(self):
        self.cached = (self.P1 + (0 if self.same else self.P2)) * (self.feat - self.act) \
            + self.act * min(self.P1, 1024)
        self.cache = (self.groups is None or len(self.groups) == 1) and self.cached <= self.budget / 2

    def auto_block(self):
        """The largest block that fits the budget (one block for all of K(x, x) when it fits)."""
        if self.cache:
            return solve_block(self.tile, 0, self.budget - self.cached)
        P1 = self.P1
        if self.same and P1 * self.feat + self.tile * P1 * P1 <= self.budget:
            return P1  # one block holds one set of features, not a row and a column set
        return solve_block(self.tile, 2 * self.feat, self.budget)

    def chunk(self, b):
        return None

    def working(self, b):
        """Entries of working memory for blocks of b inputs."""
        if self.cache:
            return self.cached + self.tile * b ** 2
        sets = 1 if self.same and b >= self.P1 else 2
        return sets * self.feat * b + self.tile * b ** 2


@dataclasses.dataclass
class VpNeeds:
    """The vp method's needs: per vmapped column one tangent of ``n_params`` entries and the
    activations (``act`` per input) of both blocks, plus the two (b, b, C, C) kernel blocks."""
    n_params: int
    act: float
    C: int
    P: int
    budget: float
    groups = None
    cache = False

    def chunk(self, b):
        """Columns per vmapped product for blocks of b inputs (:data:`~silentlib.ntk.memory.VP_TANGENT_ENTRIES`)."""
        return min(b * self.C, max(VP_MIN_CHUNK, VP_TANGENT_ENTRIES // max(self.n_params, 1)))

    def working(self, b):
        return self.chunk(b) * (self.n_params + 2 * b * self.act) + 2 * b * b * self.C * self.C

    def auto_block(self):
        """The largest power of two (or P) whose needs fit the budget; 0 if not even one input fits."""
        def need(b):
            return self.working(b) + b * self.act
        if need(1) > self.budget:
            return 0
        auto = 1
        while auto < self.P and need(min(2 * auto, self.P)) <= self.budget:
            auto = min(2 * auto, self.P)
        return auto


def activation_numel(model, x_one):
    """Entries of every leaf module's output for one input (an estimate of the activations kept)."""
    return counted_forward(model, x_one)[1]


def counted_forward(model, x):
    """(model(x), the entries of an input of x and of every leaf module's output per input of x): one
    forward pass that also estimates the activations kept (see :func:`activation_numel`)."""
    x = x.clone()  # an in-place first module must not overwrite the caller's input
    total = [x.numel()]

    def hook(_m, _inp, out):
        if torch.is_tensor(out):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), attributes_kept(model):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, total[0] // x.shape[0]


def group_parameters(params, cap):
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


def layerwise_needs(model, call, budget):
    """Per input: each layer's input (+1) and C gradients, and the stack's activations (its sizes
    are known, so no forward pass counts them); per pair: one H Gram and two of G."""
    lins = [m for kind, _, m in call.layers if kind == "linear"]
    C = len(call.idx)
    act = 3 * (call.x1[:1].numel() + sum(m.out_features for m in lins) * 2)
    feat = sum(l.in_features + 1 + C * l.out_features for l in lins) + act
    return FeatureNeeds(feat, 1 + 2 * C * C, act, call.x1.shape[0], call.x2.shape[0], call.same, budget)


def _activations(model, call):
    """The entries of one input's activations: ``call.activations`` when the probe counted them, else
    counted by a forward pass on x1[0] (:func:`activation_numel`)."""
    return call.activations if call.activations is not None else activation_numel(model, call.x1[:1])


def jacobian_needs(model, call, budget):
    """One input's Jacobian (C x n, and its concatenated copy) and the activations of its C backward
    passes must fit in half the budget; the parameters are split into groups if not."""
    C = len(call.idx)
    act = 3 * _activations(model, call)
    cap = max(1, int((budget / 2 - (C + 1) * act) / (2 * C)))
    groups = group_parameters(call.params, cap)
    n_group = max(sum(call.params[k].numel() for k in g) for g in groups)
    return FeatureNeeds(2 * C * n_group + (C + 1) * act, 2 * C * C, act, call.x1.shape[0], call.x2.shape[0],
                        call.same, budget, groups)


def vp_needs(model, call, budget):
    """See :class:`VpNeeds`."""
    act = 3 * _activations(model, call)
    n_params = sum(p.numel() for p in call.params.values())
    return VpNeeds(n_params, act, len(call.idx), max(call.x1.shape[0], call.x2.shape[0]), budget)


# ---------------------------------------------------------------------------- the plan

def plan(model, call, block_size, needs_of) -> Plan:
    """The :class:`Plan` for ``call`` with the method's needs ``needs_of(model, call, budget)``;
    ``block_size`` None chooses the largest block that fits, an int is checked against it."""
    room = Room.of(call)
    needs = needs_of(model, call, room.budget)
    label = call.method.label
    auto = needs.auto_block()
    if auto < 1:
        raise ValueError(
            f"computing this NTK with method={label!r} needs {gib(needs.working(1) * room.nbytes)} of working "
            f"memory even for one input at a time, more than {room.where} has beside the {gib(room.kernel)} "
            f"kernel ({gib(room.free)} free): {_smaller(label, len(call.idx))}{room.elsewhere}")
    b = _block_size(block_size, min(auto, max(call.x1.shape[0], call.x2.shape[0])), call, room)
    return Plan(label, len(call.idx), b, needs.cache, needs.groups, needs.chunk(b), room.kernel,
                int(needs.working(b) * room.nbytes), int(room.free))


def _smaller(label, C):
    """What makes one input's working memory smaller for the method ``label`` with C outputs."""
    ways = ["compute fewer outputs at a time (outputs=[...])"] if C > 1 else []
    if label == "vp":
        ways.append("use method='jacobian', which splits the parameters into groups (vp holds one "
                    "parameter-sized tangent per output)")
    return "; ".join(ways) or "this model's activations and gradients for one input do not fit"


def _block_size(block_size, fits, call, room):
    """The block size: ``block_size`` when it fits (at most P), else the largest that fits; K(x, x)
    of 1024 inputs or more in a few row blocks, so that those below the diagonal are skipped."""
    P1, P = call.x1.shape[0], max(call.x1.shape[0], call.x2.shape[0])
    if block_size is None:
        if call.same and P1 >= 1024:
            return min(fits, max(1024, -(-P1 // SYMMETRIC_BLOCKS)), P)
        return fits
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if min(block_size, P) > fits:
        raise ValueError(
            f"block_size={block_size} needs more working memory than {room.where} has free beside the "
            f"{gib(room.kernel)} kernel; use block_size <= {fits} or leave it None to choose automatically")
    return min(block_size, P)
