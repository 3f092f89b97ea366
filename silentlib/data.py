"""Data: whitening, linear teachers, MNIST and CIFAR-10.

Every function returns torch tensors in ``torch.get_default_dtype()`` (call
``torch.set_default_dtype(torch.float64)`` for float64 data and models), except
:func:`whiten`, which returns the type it is given.

Conventions. A data matrix X has shape (P, D), one example per row, and
Sigma = X^T X / P. *Whitened* means that all nonzero singular values of X are
equal; this library scales them to sqrt(P), so that Sigma is the orthogonal
projector onto the span of the data (Sigma = I when P >= D and X has full
rank) -- the normalization under which the paper's Sections 3-4 are written.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch


class DatasetUnavailable(RuntimeError):
    """A dataset could be found neither in the local cache nor by download."""


def _as_float64(X, name):
    Xn = X.detach().cpu().numpy() if torch.is_tensor(X) else np.asarray(X)
    Xn = np.asarray(Xn, dtype=np.float64)
    if Xn.ndim != 2 or Xn.shape[0] == 0 or Xn.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (P, D) matrix, got shape {Xn.shape}")
    if not np.all(np.isfinite(Xn)):
        raise ValueError(f"{name} has non-finite entries")
    return Xn


def _like(out, X):
    return torch.as_tensor(out, dtype=X.dtype, device=X.device) if torch.is_tensor(X) else out


def whiten(X, gamma=0.0, x_test=None, *, rtol=1e-8):
    """Partial whitening X = U S V^T  ->  X_gamma = c U S^gamma V^T  (paper, Section 5).

    ``gamma = 0`` whitens (all nonzero singular values equal), ``gamma = 1``
    keeps the raw spectrum, values in between interpolate (eigenvalues of the
    covariance lambda_k -> c^2 lambda_k^gamma up to the common factor). The
    common scale c is chosen, for every gamma, so that the mean nonzero
    eigenvalue of Sigma_gamma = X_gamma^T X_gamma / P is 1, i.e.
    ||X_gamma||_F^2 = P r with r the rank of X; at gamma = 0 every nonzero
    singular value is sqrt(P) and Sigma_0 is the projector onto the data's span.

    Rank-deficient data (e.g. MNIST's always-zero border pixels) is handled by
    keeping only the singular values above ``rtol * S_max``; the remaining
    directions are dropped (mapped to zero).

    Parameters
    ----------
    X : (P, D) training inputs (numpy array or tensor).
    gamma : whitening exponent in [0, 1] (any real is accepted).
    x_test : optional (Q, D) inputs, transformed with the *training* set's map
        x -> c V diag(S^(gamma-1)) V^T x.

    Returns X_gamma, or (X_gamma, x_test_gamma) when ``x_test`` is given, of the
    same type (and tensor dtype/device) as the inputs.
    """
    Xn = _as_float64(X, "X")
    if not np.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    U, S, Vt = np.linalg.svd(Xn, full_matrices=False)
    r = int(np.sum(S > rtol * S[0])) if S[0] > 0 else 0
    if r == 0:
        raise ValueError("cannot whiten a zero matrix")
    U, S, Vt = U[:, :r], S[:r], Vt[:r]
    P = Xn.shape[0]
    c = np.sqrt(P * r / np.sum(S ** (2 * gamma)))
    out = (U * (c * S ** gamma)) @ Vt
    if x_test is None:
        return _like(out, X)
    Tn = _as_float64(x_test, "x_test")
    if Tn.shape[1] != Xn.shape[1]:
        raise ValueError(f"x_test must have {Xn.shape[1]} columns like X, got shape {Tn.shape}")
    out_test = ((Tn @ Vt.T) * (c * S ** (gamma - 1))) @ Vt
    return _like(out, X), _like(out_test, x_test)


@dataclasses.dataclass
class Teacher:
    """A linear-teacher dataset (see :func:`linear_teacher`).

    x : (P, D) inputs; y : (P,) or (P, C) targets y = x beta^T (times s for one output).
    beta : (D,) unit teacher direction, or (C, D) teacher matrix sum_a s_a z_a v_a^T.
    s : the signal strength (one output) or (C,) singular values.
    x_test, y_test : held-out inputs and targets from the same distribution (None if n_test = 0).
    """
    x: torch.Tensor
    y: torch.Tensor
    beta: torch.Tensor
    s: object
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None


def linear_teacher(P, D, *, s=1.0, out_dim=1, singular_values=None, input_spectrum=None,
                   n_test=0, seed=0) -> Teacher:
    """Inputs and a linear teacher y = s beta . x (paper, Section 3).

    Inputs: ``input_spectrum=None`` gives exactly whitened inputs (all nonzero
    singular values of X equal to sqrt(P), so Sigma = X^T X / P is the
    identity when P >= D and the projector onto the data's span when P < D).
    ``input_spectrum`` = (lambda_1..lambda_D) gives x = z * sqrt(lambda) with z
    exactly whitened, so that Sigma = diag(lambda) exactly when P >= D.

    Teacher: one output: beta is a random unit vector in the span of the
    training inputs and y = s X beta. ``out_dim = C > 1``: beta = sum_a s_a z_a v_a^T
    with random orthonormal z_a in R^C and v_a in the data's span, singular
    values ``singular_values`` (default: all equal to ``s``), and y = X beta^T.

    Test inputs (``n_test`` of them) are Gaussian with covariance diag(lambda)
    (identity when whitened), and their targets come from the same teacher.
    """
    for name, v in (("P", P), ("D", D), ("out_dim", out_dim)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(n_test, int) or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}")
    rng = np.random.default_rng(seed)
    X = whiten(rng.standard_normal((P, D)), 0.0)
    if input_spectrum is not None:
        lam = np.asarray(input_spectrum, dtype=np.float64)
        if lam.shape != (D,) or np.any(lam <= 0) or not np.all(np.isfinite(lam)):
            raise ValueError(f"input_spectrum must be {D} positive numbers, got shape {lam.shape}")
        X = X * np.sqrt(lam)
    else:
        lam = np.ones(D)
    Vt = np.linalg.svd(X, full_matrices=False)[2]
    Vt = Vt[: min(P, D)]                      # orthonormal basis of the data's row span
    if out_dim == 1:
        if singular_values is not None:
            raise ValueError("singular_values is for out_dim > 1; use s for one output")
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"s must be positive, got {s}")
        beta = Vt.T @ rng.standard_normal(Vt.shape[0])
        beta /= np.linalg.norm(beta)
        W, strength = s * beta[None, :], float(s)
    else:
        sv = np.full(out_dim, float(s)) if singular_values is None else np.asarray(singular_values, float)
        if sv.shape != (out_dim,) or np.any(sv <= 0):
            raise ValueError(f"singular_values must be {out_dim} positive numbers, got {sv}")
        if out_dim > Vt.shape[0]:
            raise ValueError(f"out_dim={out_dim} needs a data span of at least that rank, got {Vt.shape[0]}")
        Z = np.linalg.qr(rng.standard_normal((out_dim, out_dim)))[0]
        V = Vt.T @ np.linalg.qr(rng.standard_normal((Vt.shape[0], out_dim)))[0]
        W = (Z * sv) @ V.T                    # (C, D) = sum_a s_a z_a v_a^T
        beta, strength = W, sv
    Y = X @ W.T
    Xt = Yt = None
    if n_test:
        Xt = rng.standard_normal((n_test, D)) * np.sqrt(lam)
        Yt = Xt @ W.T
    dt = torch.get_default_dtype()

    def T(a, squeeze=False):
        if a is None:
            return None
        a = a[:, 0] if squeeze else a
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt)

    one = out_dim == 1
    return Teacher(x=T(X), y=T(Y, one), beta=T(beta), s=strength, x_test=T(Xt), y_test=T(Yt, one))
