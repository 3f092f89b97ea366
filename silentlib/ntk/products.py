"""The matrix products the kernels are made of, exact in their dtype, and the threads they run on.

On the CPU, float32 products go through oneDNN: torch's MKL takes its AVX2 path on AMD CPUs,
oneDNN uses AVX-512 where the CPU has it (twice the throughput on this project's machines).
"""
from __future__ import annotations

import contextlib
import os

import torch


def gram(A, B):
    """A @ B.T for (n, k) and (m, k) matrices, exact in their dtype (oneDNN for float32 on a CPU)."""
    if A.dtype == torch.float32 and A.device.type == "cpu" and ONEDNN:
        return onednn_mm_t(A, B)
    return A @ B.T


def onednn_mm_t(A, B, bias=None):
    """A @ B.T (+ bias) by oneDNN's inner product (float32 CPU tensors, IEEE float32 arithmetic)."""
    return torch.ops.mkldnn._linear_pointwise(A.contiguous(), B.contiguous(), bias, "none", [], "")


def linear(m, h):
    """nn.Linear m applied to h (B, n_in), through :func:`gram`'s fast product on the CPU."""
    if h.device.type == "cpu" and h.dtype == torch.float32 and ONEDNN:
        return onednn_mm_t(h, m.weight, m.bias)
    return m(h)


def _onednn_works():
    """Whether oneDNN's inner product is available here and agrees with a float64 product."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(7, 5, generator=gen), torch.randn(3, 5, generator=gen)
        exact = (a.double() @ b.double().T).float()
        return bool(torch.allclose(onednn_mm_t(a, b), exact, rtol=1e-5, atol=1e-5))
    except Exception:  # an older torch without the op, or a build without oneDNN
        return False


ONEDNN = _onednn_works()
