"""What :func:`silentlib.ntk.ntk`'s checks cost: ``auto`` against a bare torch.func contraction.

On CNNs, ``auto`` computes per-example Jacobians with ``torch.func`` and checks the model and the
kernel on the way (argument checks, the probes for examples that see each other, the memory plan,
the kernel against plain autograd). :func:`checks_overhead` times it against the contraction one
would write by hand, ``vmap(jacrev(functional_call))`` over all inputs and one ``einsum``, with no
check at all, in rounds that call the two in turn (so that a slow spell of a shared machine falls on
both), and reports the ratio measured in the same run; and, in the same rounds, the checks alone (the
probe of two inputs, the mixing check, the check of the kernel against plain autograd), as a share of
``auto``'s time. Models:

* the 3-layer CNN of :func:`cnn3`: two 3x3 convolutions of 32 channels, ReLU, and a linear
  read-out, on P = 64 CIFAR-sized inputs (3 x 32 x 32) with 10 outputs;
* the paper's Wide-ResNet (:class:`silentlib.models.WideResNet`), 10 outputs.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..config import exact_matmul
from ..models import WideResNet
from ..ntk import checks, ntk, ntk_plan, probes
from .timing import DTYPES, median_times
from .timing import device as _device  # the functions' keyword arguments are named ``device``


def cnn3(channels: int = 32, out_dim: int = 10, in_channels: int = 3, side: int = 32) -> nn.Sequential:
    """Conv(3x3, ``channels``) - ReLU - Conv(3x3, ``channels``, stride 2) - ReLU - Linear(-> ``out_dim``)."""
    half = (side + 1) // 2
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(channels * half * half, out_dim))


def bare_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (P, P, C, C) NTK as one would write it by hand with torch.func: per-example Jacobians
    ``vmap(jacrev)`` over all trainable parameters, one ``einsum`` over parameters; no check."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    with exact_matmul():
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
        J = torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)
        return torch.einsum("iak,jbk->ijab", J, J)


def checks_only(model, x, K, block_size):
    """What ``auto`` checks on a non-plain model, without computing the kernel: the probe of two inputs
    (:func:`~silentlib.ntk.probes.output_shape`), the mixing check and the check of K against autograd."""
    with torch.no_grad(), exact_matmul():
        z = probes.probe_inputs(x, None)
        _, fz, _ = probes.output_shape(model, x, z)
        probes.check_mixing(model, z, fz)
        return checks.projection_error(model, x, None, K, list(range(K.shape[2])), block_size)


def checks_overhead(*, device=None, dtype="float32", P_cnn=64, P_wrn=12, widen=4, repeats=3, seed=0) -> list:
    """Seconds of ``ntk(model, x)`` (``auto``), of :func:`bare_ntk` and of :func:`checks_only` on the two
    CNNs, timed side by side.

    Returns one dict per model: ``model``, ``P``, ``C``, ``n_params``, ``method`` (what ``auto`` ran),
    ``threads``, ``auto_seconds``, ``bare_seconds``, ``checks_seconds``, ``overhead`` (auto / bare - 1),
    ``checks_share`` (checks / auto) and ``max_rel_diff`` (of the two kernels).
    """
    dev = _device(device)
    dt = DTYPES[dtype]
    gen = torch.Generator().manual_seed(seed)
    cases = [("3-layer CNN (32 channels)", cnn3, P_cnn),
             (f"WideResNet(widen={widen}, block_size=1)",
              lambda: WideResNet(widen=widen, block_size=1, channels=3, out_dim=10), P_wrn)]
    rows = []
    for name, make, P in cases:
        torch.manual_seed(seed)
        model = make().to(device=dev, dtype=dt)
        x = torch.randn(P, 3, 32, 32, generator=gen).to(dev, dt)
        plan = ntk_plan(model, x)
        ntk(model, x[:2])  # warm-up: allocator, first launches
        bare_ntk(model, x[:2])
        K = ntk(model, x)
        (auto_s, K), (bare_s, ref), (checks_s, error) = median_times(
            [lambda: ntk(model, x), lambda: bare_ntk(model, x), lambda: checks_only(model, x, K, plan.block_size)],
            dev, repeats)
        assert error is None, error
        rows.append({"model": name, "P": P, "C": 10, "n_params": sum(p.numel() for p in model.parameters()),
                     "method": plan.method, "threads": torch.get_num_threads(), "auto_seconds": auto_s,
                     "bare_seconds": bare_s, "checks_seconds": checks_s, "overhead": auto_s / bare_s - 1,
                     "checks_share": checks_s / auto_s,
                     "max_rel_diff": float((K - ref).abs().max() / ref.abs().max())})
    return rows


def format_overhead(rows) -> str:
    """The rows of :func:`checks_overhead` as lines of text."""
    lines = ["\nThe checks' cost: ntk(model, x) (auto) against a bare vmap(jacrev) + einsum, and the checks alone, "
             "timed in the same rounds:"]
    for r in rows:
        lines.append(f"{r['model']}, {r['n_params']:,} parameters, P = {r['P']}, C = {r['C']}, {r['threads']} "
                     f"thread(s): auto ({r['method']}) {r['auto_seconds']:.3f} s, bare {r['bare_seconds']:.3f} s: "
                     f"{100 * r['overhead']:+.0f}%; the checks {r['checks_seconds']:.3f} s, "
                     f"{100 * r['checks_share']:.0f}% of auto (max rel diff {r['max_rel_diff']:.1e})")
    return "\n".join(lines)
