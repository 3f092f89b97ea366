"""The arguments of :func:`silentlib.ntk.ntk`, checked: the inputs, ``outputs=`` and ``block_size``.

Each raises a ``TypeError`` for an argument of the wrong kind and a ``ValueError`` for one of the
right kind with a wrong value, naming the argument and what it takes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import as_batch, check_int


def batch(a, name, ref):
    """``a`` (P, ...) as a tensor on the device of the parameter ``ref``: floating-point inputs in its
    dtype, integer and boolean inputs (token ids, masks) as they are.

    Checked by :func:`silentlib.config.as_batch` (a non-empty batch, finite entries); the finiteness
    check is one reduction when it passes (a finite sum has finite terms). A model on the ``meta``
    device has no values to check.
    """
    t = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
    dtype = ref.dtype if t.is_floating_point() else t.dtype
    if t.ndim >= 1 and t.shape[0] > 0:
        t = t.to(device=ref.device, dtype=dtype)
        if t.device.type == "meta" or torch.isfinite(t.sum()):
            return t
    return as_batch(t, name, torch.empty(0, dtype=dtype, device=ref.device))


def output_indices(outputs, C):
    """(the output indices ``outputs`` selects among C, whether it is a single int).

    ``outputs`` is None (all C), an int, a slice, a sequence or array of ints (repeats allowed), or a
    boolean mask of C entries; the indices run from 0 to C - 1. ``TypeError`` for anything else
    (floats, strings), ``ValueError`` for an empty selection, an index out of range or a mask of
    another length.
    """
    if outputs is None:
        return list(range(C)), False
    if isinstance(outputs, slice):
        return _in_range(list(range(C))[outputs], outputs, C), False
    try:
        a = np.asarray(outputs.detach().cpu() if torch.is_tensor(outputs) else outputs)
    except (TypeError, ValueError, RuntimeError):
        a = np.asarray(None)
    if a.dtype == bool and a.ndim == 1:
        if a.shape[0] != C:
            raise ValueError(f"a boolean mask outputs= needs one entry per output ({C}), got {a.shape[0]}")
        return _in_range(np.flatnonzero(a).tolist(), outputs, C), False
    if a.size == 0 and a.ndim == 1:
        return _in_range([], outputs, C), False
    if a.dtype.kind not in "iu" or a.ndim > 1:
        raise TypeError(f"outputs must be an int, a slice, a sequence of ints or a boolean mask of the {C} "
                        f"outputs, got {outputs!r}")
    return _in_range(a.reshape(-1).tolist(), outputs, C), a.ndim == 0


def _in_range(idx, outputs, C):
    if not idx or any(not 0 <= a < C for a in idx):
        raise ValueError(f"outputs must select indices in 0..{C - 1}, got {outputs!r}")
    return idx


def block_size(value):
    """``value`` as an int (a Python or numpy integer: ``np.int64(2)`` is 2), or None; ``ValueError``
    unless it is a positive integer (:func:`silentlib.config.check_int`)."""
    return None if value is None else check_int("block_size", value)
