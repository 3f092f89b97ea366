"""Linear algebra on kernels: alignment, kernel regression, the kernel's top direction.

Kernels follow :func:`silentlib.ntk.ntk`'s shapes: (P1, P2) for a scalar output,
(P1, P2, C, C) for C outputs. The functions accept numpy arrays or tensors and
return numpy (alignment: a float, computed on a tensor's own device).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from .config import as_float64 as _np  # the library's one array check (float64, non-empty, finite)


class SingularKernelWarning(RuntimeWarning):
    """Ridgeless :func:`kernel_regression` on a kernel that is singular to working precision."""


def _check_shapes(K_shape, y_shape, what):
    """Raise unless K is (P1, P) with y (P,), or (P1, P, C, C) with y (P, C)."""
    K_shape, y_shape = tuple(K_shape), tuple(y_shape)
    if len(K_shape) == 2 and len(y_shape) == 1 and K_shape[1] == y_shape[0]:
        return
    if len(K_shape) == 4 and len(y_shape) == 2 and K_shape[1] == y_shape[0] and K_shape[2:] == (y_shape[1],) * 2:
        return
    raise ValueError(
        f"{what}: expected a (P, P) kernel with y of shape (P,), or a (P, P, C, C) kernel "
        f"with y of shape (P, C); got kernel {K_shape} and y {y_shape}")


def _flatten(K, y, what):
    """(K, y) -> (PC x PC matrix, PC vector), checking that the shapes agree."""
    _check_shapes(K.shape, y.shape, what)
    if K.ndim == 2:
        return K, y
    P1, P2, C, _ = K.shape
    return K.transpose(0, 2, 1, 3).reshape(P1 * C, P2 * C), y.reshape(-1)


def kernel_alignment(K, y) -> float:
    """Kernel-target alignment ``A(K, y) = y^T K y / (||K||_F |y|^2)`` (paper, Section 2).

    The paper's uncentered definition (after Cortes et al. 2012). For C outputs, K of
    shape (P, P, C, C) and y of shape (P, C): the same formula with K read as a PC x PC
    matrix, i.e. ``sum_{ijab} y_ia K_ijab y_jb / (||K||_F |y|_F^2)``. A lies in [-1, 1]
    and equals 1 exactly when K is proportional to ``y y^T``.

    Parameters
    ----------
    K : numpy.ndarray or torch.Tensor
        (P, P) kernel for a scalar output, or (P, P, C, C) for C outputs (the shapes of
        :func:`silentlib.ntk.ntk`). A tensor is reduced where it lives, in its dtype,
        without a copy (a GPU kernel never crosses to the host).
    y : array_like or torch.Tensor
        (P,) or (P, C) targets.

    Returns
    -------
    float
        The alignment.

    Raises
    ------
    ValueError
        If the shapes do not match, the kernel is not square, or the alignment is undefined
        (a zero or non-finite kernel, zero targets, empty or non-finite arrays).
    """
    if isinstance(K, torch.Tensor):
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, dtype=K.dtype, device=K.device)
        _check_shapes(K.shape, y.shape, "kernel_alignment")
        if K.shape[0] != K.shape[1]:
            raise ValueError(f"kernel_alignment needs a square kernel, got {tuple(K.shape)}")
        yKy = torch.einsum("i,ij,j->", y, K, y) if K.ndim == 2 else torch.einsum("ia,ijab,jb->", y, K, y)
        norm = torch.linalg.vector_norm(K) * y.pow(2).sum()
        if not torch.isfinite(yKy / norm):
            raise ValueError("kernel_alignment is undefined for a zero or non-finite kernel or zero targets")
        return float(yKy / norm)
    K, y = _np(K, "K"), _np(y, "y")
    Km, v = _flatten(K, y, "kernel_alignment")
    if Km.shape[0] != Km.shape[1]:
        raise ValueError(f"kernel_alignment needs a square kernel, got {K.shape}")
    norm = np.linalg.norm(Km) * (v @ v)
    if norm == 0:
        raise ValueError("kernel_alignment is undefined for a zero kernel or zero targets")
    return float(v @ Km @ v / norm)


def kernel_regression(K_train, K_cross, y, ridge: float = 0.0) -> np.ndarray:
    """Kernel (ridge) regression ``f(x) = k(x)^T (K + ridge I)^{-1} y`` (paper, after eq. 2).

    The kernel machine a network trained in the silent-alignment regime becomes, with its
    final NTK (paper, eq. 3 and Section 2).

    Parameters
    ----------
    K_train : numpy.ndarray or torch.Tensor
        (P, P) or (P, P, C, C), the kernel on the training set.
    K_cross : numpy.ndarray or torch.Tensor
        (Q, P) or (Q, P, C, C), the kernel between Q test points and the training set
        (``ntk(model, x_test, x_train)``).
    y : array_like or torch.Tensor
        (P,) or (P, C) training targets.
    ridge : float
        Ridge >= 0. With ``ridge=0`` this is kernel interpolation, solved stably through a
        symmetric eigendecomposition (by Cholesky when the kernel is well conditioned, to
        rounding the same) in which directions with eigenvalues below
        ``P * eps * max eigenvalue`` are dropped (the pseudo-inverse), so an exactly
        singular kernel gives the min-norm interpolant; dropping any emits a
        :class:`SingularKernelWarning` that says so, and a kernel with no eigenvalue above the
        cutoff (an all-zero kernel) raises ``ValueError``.

    Returns
    -------
    numpy.ndarray
        (Q,) or (Q, C) predictions, float64.

    Raises
    ------
    ValueError
        If ``ridge < 0``, the shapes do not match (K_train square and matching y, K_cross
        of shape (Q,) + K_train.shape[1:]), or an input is empty or non-finite.
    """
    K_train, K_cross, y = _np(K_train, "K_train"), _np(K_cross, "K_cross"), _np(y, "y")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    Km, v = _flatten(K_train, y, "kernel_regression (K_train, y)")
    if Km.shape[0] != Km.shape[1]:
        raise ValueError(f"K_train must be square, got {K_train.shape}")
    if K_cross.ndim != K_train.ndim or K_cross.shape[1:] != K_train.shape[1:]:
        raise ValueError(f"K_cross must have shape (Q,) + {K_train.shape[1:]}, got {K_cross.shape}")
    Q = K_cross.shape[0]
    Kc = K_cross if K_cross.ndim == 2 else K_cross.transpose(0, 2, 1, 3).reshape(Q * y.shape[1], -1)
    Ks = 0.5 * (Km + Km.T) + ridge * np.eye(Km.shape[0])
    if ridge > 0:
        alpha = scipy.linalg.solve(Ks, v, assume_a="pos")
    elif (alpha := _well_conditioned_solve(Ks, v)) is None:
        lam, U = np.linalg.eigh(Ks)
        cutoff = Km.shape[0] * np.finfo(float).eps * max(lam.max(), 0.0)
        keep = lam > cutoff
        if not keep.any():
            raise ValueError(
                f"kernel_regression: K_train has no eigenvalue above the cutoff {cutoff:.3g} (largest "
                f"{lam.max():.3g}); a zero (or negative semi-definite) kernel cannot interpolate. Check the "
                "kernel, or pass ridge > 0")
        if not keep.all():
            warnings.warn(
                f"kernel_regression: K_train ({Km.shape[0]} x {Km.shape[0]}) is singular to working precision: "
                f"{int((~keep).sum())} of its eigenvalues are below the cutoff {cutoff:.3g} (P eps lambda_max). "
                "ridge=0 used the pseudo-inverse, i.e. the min-norm solution, the limit ridge -> 0+ (no "
                "ridge added) with those directions dropped; pass ridge > 0 to regularize instead",
                SingularKernelWarning, stacklevel=2)
        alpha = U[:, keep] @ ((U[:, keep].T @ v) / lam[keep])
    pred = Kc @ alpha
    return pred if y.ndim == 1 else pred.reshape(Q, y.shape[1])


def _well_conditioned_solve(K, v):
    """K^{-1} v by Cholesky when K is positive definite with 1-norm condition number below
    ``1 / (100 P eps)``, else None. Then no eigenvalue of K is under the pseudo-inverse's cutoff
    ``P eps lambda_max`` (the 2-norm condition of a symmetric matrix is at most its 1-norm one), so
    the result is the eigendecomposition's to rounding, at a fifth of its cost."""
    try:
        factor = scipy.linalg.cho_factor(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    rcond, info = scipy.linalg.lapack.dpocon(factor[0], np.abs(K).sum(axis=0).max(), uplo="L")
    if info != 0 or rcond < 100 * K.shape[0] * np.finfo(float).eps:
        return None
    return scipy.linalg.cho_solve(factor, v, check_finite=False)


def cosine_similarity(A, B) -> float:
    """Frobenius cosine ``<A, B>_F / (||A||_F ||B||_F)`` of two arrays of the same shape.

    E.g. of ``W1^T W1`` with ``beta beta^T``, the paper's Figure 3 measure of alignment.

    Parameters
    ----------
    A, B : array_like or torch.Tensor
        Arrays of the same shape.

    Returns
    -------
    float
        The cosine, in [-1, 1].

    Raises
    ------
    ValueError
        If the shapes differ, an array is zero, empty or has non-finite entries.
    """
    A, B = _np(A, "A"), _np(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"cosine_similarity needs arrays of the same shape, got {A.shape} and {B.shape}")
    den = np.linalg.norm(A) * np.linalg.norm(B)
    if den == 0:
        raise ValueError("cosine_similarity is undefined for a zero array")
    return float(np.sum(A * B) / den)


def top_direction_angles(W, a, directions):
    """Angles (degrees, in [0, 90]) between the top eigenvector of ``M = W^T W + |a|^2 I`` and given directions.

    W : (n, N, D) first-layer weights at n records (or one (N, D) matrix); a : (n, N) (or (N,))
    read-out weights. For the two-layer linear network K(x, x') = x^T M x' (eq. 5 of the paper),
    so the top eigenvector of M is the kernel's top eigenvector in input space, and it is also
    the top right-singular vector of W. directions : {label: (D,) vector}.
    Returns {label: (n,) angles}; the sign of an eigenvector is irrelevant (``|cos|`` is used).
    """
    W, a = np.asarray(W, dtype=np.float64), np.asarray(a, dtype=np.float64)
    single = W.ndim == 2
    if single:
        W, a = W[None], a[None]
    if W.ndim != 3 or a.shape != W.shape[:2]:
        raise ValueError(f"expected W (n, N, D) and a (n, N), got {W.shape} and {a.shape}")
    D = W.shape[2]
    M = np.einsum("tnd,tne->tde", W, W) + np.sum(a ** 2, axis=1)[:, None, None] * np.eye(D)
    top = np.linalg.eigh(M)[1][:, :, -1]
    out = {}
    for label, v in directions.items():
        v = _np(v, label)
        if v.shape != (D,):
            raise ValueError(f"direction {label!r} must have {D} entries, got {v.shape}")
        c = np.clip(np.abs(top @ (v / np.linalg.norm(v))), 0.0, 1.0)
        ang = np.degrees(np.arccos(c))
        out[label] = ang[0] if single else ang
    return out
