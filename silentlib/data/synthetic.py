"""Synthetic data: whitening and linear teachers (paper, Sections 3-5).

Conventions. A data matrix X has shape (P, D), one example per row, and
Sigma = X^T X / P. *Whitened* means that all nonzero singular values of X are
equal; this library scales them to sqrt(P), so that Sigma is the orthogonal
projector onto the span of the data (Sigma = I when P >= D and X has full
rank) -- the normalization under which the paper's Sections 3-4 are written.

:func:`linear_teacher` returns torch tensors in ``torch.get_default_dtype()``;
:func:`whiten` returns the type it is given.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import as_float64, check_int


def _as_tensor(a, shape=None):
    """A numpy array (or None) as a contiguous tensor in ``torch.get_default_dtype()``, reshaped
    to ``(len(a), *shape)`` when ``shape`` is given (e.g. an image shape)."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    if shape is not None:
        a = a.reshape(a.shape[0], *shape)
    return torch.as_tensor(a, dtype=torch.get_default_dtype())


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
    gamma : whitening exponent, >= 0: 0 whitens, 1 keeps the spectrum, values above 1
        sharpen it (a negative gamma would invert it and is refused).
    x_test : optional (Q, D) inputs, transformed with the *training* set's map
        x -> c V diag(S^(gamma-1)) V^T x.

    Returns
    -------
    X_gamma, or (X_gamma, x_test_gamma) when ``x_test`` is given
        Of the same type (and tensor dtype/device) as the inputs.
    """
    Xn = as_float64(X, "X", ndim=2)
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0 (0 whitens, 1 keeps the spectrum), got {gamma}")
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
    Tn = as_float64(x_test, "x_test", ndim=2)
    if Tn.shape[1] != Xn.shape[1]:
        raise ValueError(f"x_test must have {Xn.shape[1]} columns like X, got shape {Tn.shape}")
    out_test = ((Tn @ Vt.T) * (c * S ** (gamma - 1))) @ Vt
    return _like(out, X), _like(out_test, x_test)


def orthonormal_columns(A):
    """The Q of the QR decomposition of A (n, k), n >= k, with R's diagonal made positive.

    That Q is unique (it is Gram-Schmidt of A's columns) and continuous in A, so it does not
    depend on which LAPACK kernel computed the factorization (Householder signs differ).
    Raises ``ValueError`` when A's columns are linearly dependent.
    """
    Q, R = np.linalg.qr(np.asarray(A, dtype=np.float64))
    d = np.diag(R)
    if np.any(np.abs(d) <= 1e-12 * max(np.abs(d).max(), 1e-300)):
        raise ValueError(f"orthonormal_columns needs linearly independent columns, got shape {np.shape(A)}")
    return Q * np.sign(d)


def _row_span_projector(X):
    """Orthogonal projector onto X's row span, X^T (X X^T)^{-1} X (D, D), or None if that is R^D.

    Computed without any eigenbasis of X (whose singular values are all equal after whitening,
    so its singular vectors are arbitrary): only the projector, which is unique, is used.
    """
    P, D = X.shape
    if P >= D:
        return None                           # whitened (full-rank) data of P >= D span R^D
    return X.T @ np.linalg.solve(X @ X.T, X)


def _in_span(v, span):
    return v if span is None else span @ v


@dataclasses.dataclass
class Teacher:
    """A linear-teacher dataset (see :func:`linear_teacher`).

    Attributes
    ----------
    x : torch.Tensor
        (P, D) inputs.
    y : torch.Tensor
        (P,) or (P, C) targets y = x beta^T (times s for one output).
    beta : torch.Tensor
        (D,) unit teacher direction, or (C, D) teacher matrix sum_a s_a z_a v_a^T.
    s : float or numpy.ndarray
        The signal strength (one output) or the (C,) singular values.
    x_test, y_test : torch.Tensor or None
        Held-out inputs and targets from the same distribution (None if n_test = 0).
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

    Every direction is drawn directly, as an isotropic Gaussian vector projected on the data's
    span (the identity for P >= D) and orthonormalized by :func:`orthonormal_columns`, never as
    coordinates in a singular basis of X: whitened data have equal singular values, so that
    basis is arbitrary and differs between LAPACK builds. The same ``seed`` gives the same
    data on every machine (to rounding).

    Test inputs (``n_test`` of them) are Gaussian with covariance diag(lambda)
    (identity when whitened), and their targets come from the same teacher.
    """
    P, D, out_dim = check_int("P", P), check_int("D", D), check_int("out_dim", out_dim)
    n_test = check_int("n_test", n_test, minimum=0)
    rng = np.random.default_rng(seed)
    X = whiten(rng.standard_normal((P, D)), 0.0)
    if input_spectrum is not None:
        lam = np.asarray(input_spectrum, dtype=np.float64)
        if lam.shape != (D,) or np.any(lam <= 0) or not np.all(np.isfinite(lam)):
            raise ValueError(f"input_spectrum must be {D} positive numbers, got shape {lam.shape}")
        X = X * np.sqrt(lam)
    else:
        lam = np.ones(D)
    span = _row_span_projector(X)             # (D, D), or None when the span is all of R^D
    if out_dim == 1:
        if singular_values is not None:
            raise ValueError("singular_values is for out_dim > 1; use s for one output")
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"s must be positive, got {s}")
        beta = _in_span(rng.standard_normal(D), span)
        beta /= np.linalg.norm(beta)
        W, strength = s * beta[None, :], float(s)
    else:
        sv = np.full(out_dim, float(s)) if singular_values is None else np.asarray(singular_values, float)
        if sv.shape != (out_dim,) or np.any(sv <= 0):
            raise ValueError(f"singular_values must be {out_dim} positive numbers, got {sv}")
        if out_dim > min(P, D):
            raise ValueError(f"out_dim={out_dim} needs a data span of at least that rank, got {min(P, D)}")
        Z = orthonormal_columns(rng.standard_normal((out_dim, out_dim)))
        V = orthonormal_columns(_in_span(rng.standard_normal((D, out_dim)), span))
        W = (Z * sv) @ V.T                    # (C, D) = sum_a s_a z_a v_a^T
        beta, strength = W, sv
    Y = X @ W.T
    Xt = Yt = None
    if n_test:
        Xt = rng.standard_normal((n_test, D)) * np.sqrt(lam)
        Yt = Xt @ W.T
    if out_dim == 1:                          # one output: targets (P,), not (P, 1)
        Y, Yt = Y[:, 0], None if Yt is None else Yt[:, 0]
    return Teacher(x=_as_tensor(X), y=_as_tensor(Y), beta=_as_tensor(beta), s=strength,
                   x_test=_as_tensor(Xt), y_test=_as_tensor(Yt))
