"""neural-tangents side by side (``--peer``): the same ReLU MLP, the same weights, its three NTK
implementations, in a separate environment where neural-tangents 0.6.5 imports (:data:`PEER_INSTALL`)."""
from __future__ import annotations

import numpy as np
import torch


# silentlib's method -> the neural-tangents implementation it is measured against
PEER_IMPLEMENTATIONS = {"layerwise": "STRUCTURED_DERIVATIVES", "jacobian": "JACOBIAN_CONTRACTION",
                        "vp": "NTK_VECTOR_PRODUCTS"}
#: The command that makes a separate environment in which neural-tangents 0.6.5 imports and runs.
PEER_INSTALL = ('python -m venv /tmp/ntvenv && /tmp/ntvenv/bin/pip install jax==0.4.23 jaxlib==0.4.23 '
                'neural-tangents==0.6.5 "numpy<2" "scipy<1.14" torch==2.13.0 matplotlib tqdm mlxtend, then '
                'PYTHONPATH=. /tmp/ntvenv/bin/python -m silentlib bench --peer')


def load_peer():
    """(the ``neural_tangents`` module, None), or (None, why it does not import here).

    neural-tangents 0.6.5 does not import on current JAX, and its structured derivatives fail on
    jax 0.4.26; it runs on jax 0.4.23 in a separate environment (:data:`PEER_INSTALL`)."""
    try:
        import neural_tangents
        from neural_tangents import stax  # noqa: F401
    except Exception as err:  # ImportError, or an incompatible JAX failing at import
        return None, f"{type(err).__name__}: {err}"
    return neural_tangents, None


def _stax_mlp(model):
    """(apply_fn, params, C): silentlib's ReLU MLP ``model`` as ``stax.Dense`` layers in standard
    parameterization, with the same weights."""
    import jax.numpy as jnp
    from neural_tangents import stax

    layers, params = [], []
    for i, lin in enumerate(model.linears):
        if i:
            layers.append(stax.Relu())
            params.append(())
        layers.append(stax.Dense(lin.out_features, b_std=None if lin.bias is None else 1.0,
                                 parameterization="standard"))
        W = jnp.asarray(lin.weight.detach().cpu().numpy().T)
        params.append((W, None if lin.bias is None else jnp.asarray(lin.bias.detach().cpu().numpy())))
    _, apply_fn, _ = stax.serial(*layers)
    return apply_fn, params, model.linears[-1].out_features


def peer_kernel_fns(nt, model):
    """For silentlib's ReLU MLP ``model``, neural-tangents' three NTK implementations of the same network
    with the same weights (``stax.Dense`` in standard parameterization), jitted, as functions of a torch
    batch returning the kernel as a torch tensor shaped like :func:`silentlib.ntk`'s.

    ``vmap_axes=0`` (inputs independent, as :func:`silentlib.ntk` assumes) and ``trace_axes=()`` (the
    full C x C blocks). Float64 switches JAX to 64 bits."""
    import jax
    import jax.numpy as jnp

    if next(model.parameters()).dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    apply_fn, params, C = _stax_mlp(model)
    fns = {}
    for method, impl in PEER_IMPLEMENTATIONS.items():
        kernel = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0,
                                            implementation=getattr(nt.NtkImplementation, impl)))

        def fn(x, kernel=kernel):
            K = kernel(jnp.asarray(x.detach().cpu().numpy()), None, params).block_until_ready()
            K = torch.from_numpy(np.array(K))  # a writable copy
            return K[:, :, 0, 0] if C == 1 else K

        fn.implementation = impl
        fns[method] = fn
    return fns


def peer_due(row, fn, last, max_seconds):
    """Whether to time neural-tangents' ``fn`` for ``row``: False (and the row marked) when its time
    extrapolated as P^2 from the previous size exceeds ``max_seconds``."""
    row.update(peer=fn.implementation, peer_status="ok", peer_seconds=None, peer_ratio=None,
               peer_max_rel_diff=None)
    key = "peer:" + row["method"]
    if key in last and last[key][1] * (row["P"] / last[key][0]) ** 2 > max_seconds:
        row["peer_status"] = "skip"
        return False
    return True


def record_peer(row, peer, ref, last):
    """Put the peer's (median seconds, kernel), or the exception it raised, into ``row``: its seconds,
    silentlib / neural-tangents (timed in the same rounds) and its difference to the layerwise kernel."""
    if isinstance(peer, Exception):
        row["peer_status"] = f"failed: {type(peer).__name__}"
        return
    sec, K = peer
    last["peer:" + row["method"]] = (row["P"], sec)
    row.update(peer_seconds=sec, peer_max_rel_diff=float((K.to(ref) - ref).abs().max() / ref.abs().max()))
    if row["seconds"] is not None:
        row["peer_ratio"] = row["seconds"] / sec
