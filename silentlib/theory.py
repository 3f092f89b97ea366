"""Closed-form and ODE theory of the silent alignment effect, in this library's conventions.

Atanasov, Bordelon & Pehlevan, ICLR 2022 (arXiv 2111.00034): Section 3 (two-layer
linear networks, eqs. 5-8, Appendix C), Section 4 (deep linear networks, eqs. 9-10,
Appendix E; multiple outputs, Section 4.2 and Appendix H) and Appendices A-B
(gradient flow in function space, eqs. 1-3).

Conventions (they fix every constant below; the book states them where it first uses them):

* Loss ``L = 1/(2P) sum_mu |f(x^mu) - y^mu|^2``, gradient flow d theta/dt = -grad L
  (:func:`silentlib.train.train` with t = lr * step), so in function space
  df(x)/dt = (1/P) sum_mu K(x, x^mu) (y^mu - f(x^mu)): the paper's eta of eq. 1
  is 1/P for the unnormalized NTK K, and eta = 1 in its eqs. 4 and 9.
* Whitened data: every nonzero singular value of X (P x D) is sqrt(P), so
  Sigma = X^T X / P is the projector onto the data span.
* Teacher y = s beta . x with ``|beta| = 1`` and beta in the data span.
* Two-layer linear network f = a^T W x, a_i ~ N(0, sigma^2/N), W_ij ~ N(0, sigma^2/D)
  (``MLP(D, N, 2, sigma=sigma)``), NTK K(x, x') = x^T M x' with ``M = W^T W + |a|^2 I`` (eq. 5),
  v = W beta, ``q = (|v|^2 + |a|^2)/2`` = beta^T M beta / 2, r = a^T W beta = beta^T w_eff.
* Deep linear network f = w_L^T W_{L-1} ... W_1 x; balanced rank-one weights
  W_l = u r_{l+1} r_l^T (r_1 = beta, r_{L+1} = 1) and c = u^L = beta^T w_eff.

All functions take and return numpy arrays (0-d results as Python floats) and
raise ``ValueError`` on inputs outside their domain.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.integrate

from .config import as_float64, check_int

__all__ = [
    "two_layer_q0", "two_layer_qr_of", "two_layer_qr_from_trajectory", "two_layer_mode_qr_of", "teacher_modes",
    "two_layer_phase1", "two_layer_qr", "two_layer_loss", "u_squared", "phase_times",
    "deep_linear_ntk", "deep_linear_scale", "deep_linear_loss", "half_loss_time",
    "half_loss_time_asymptotic", "final_alignment", "mode_times",
    "gradient_flow_kernel_solution", "silent_schedule",
]

HALF_LOSS_X = 1.0 - 1.0 / math.sqrt(2.0)   # c/s at which (s - c)^2 / s^2 = 1/2


# --------------------------------------------------------------------------- checks
def _positive(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _times(t):
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times t must be finite and >= 0")
    return t


def _out(a):
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else a


# --------------------------------------------------------------------------- two layers
def two_layer_q0(sigma, N, D):
    """Expected initial q for a two-layer linear net: E[q0] = (sigma^2 / 2)(1 + N / D).

    Paper, Appendix C.1 (stated after eq. 7). With a_i ~ N(0, sigma^2/N) and
    W_ij ~ N(0, sigma^2/D) (``MLP(D, N, 2, sigma=sigma)``), ``E|a|^2 = sigma^2`` and
    ``E|W beta|^2 = N sigma^2 / D`` for a unit beta, and ``q = (|W beta|^2 + |a|^2)/2``.
    E[r0] = 0. Returns a float.
    """
    sigma = _positive("sigma", sigma)
    N, D = _positive("N", N), _positive("D", D)
    return 0.5 * sigma ** 2 * (1.0 + N / D)


def _two_layer_weights(model):
    lins = getattr(model, "linears", None)
    if lins is None:
        import torch.nn as nn
        lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(lins) != 2:
        raise ValueError(f"expected a two-layer network (two weight layers), got {len(lins)}")
    W = lins[0].weight.detach().cpu().numpy().astype(np.float64)       # (N, D)
    A = lins[1].weight.detach().cpu().numpy().astype(np.float64)       # (C, N)
    return W, A


def two_layer_qr_of(model, beta):
    """Measured (q, r) of a two-layer linear network at its current weights, for a unit teacher direction beta.

    ``q = (|W beta|^2 + |a|^2) / 2`` = beta^T M beta / 2 and r = a^T W beta (paper, Appendix C.1),
    where W (N, D) is the first layer's weight and a (N,) the last layer's single weight row.
    ``model``: a two-layer ``silentlib.MLP`` with one output (anything with ``.linears``
    of two ``nn.Linear``); ``beta``: (D,) array or tensor with ``|beta| = 1`` (ValueError otherwise).
    On the untrained model it gives (q0, r0); as one of ``train``'s ``observe`` callables it
    records q(t), r(t). Returns floats (q, r).
    """
    W, A = _two_layer_weights(model)
    if A.shape[0] != 1:
        raise ValueError(f"two_layer_qr_of needs one output, got {A.shape[0]}; use two_layer_mode_qr_of")
    b = as_float64(beta, "beta").reshape(-1)
    if b.shape[0] != W.shape[1]:
        raise ValueError(f"beta must have {W.shape[1]} entries, got {b.shape[0]}")
    if abs(np.linalg.norm(b) - 1.0) > 1e-6:
        raise ValueError(f"beta must be a unit vector, got |beta| = {np.linalg.norm(b):.6g}")
    v, a = W @ b, A[0]
    return float(0.5 * (v @ v + a @ a)), float(a @ v)


def two_layer_qr_from_trajectory(traj, x, beta):
    """q(t), r(t) of a two-layer linear net read off a :class:`~silentlib.train.Trajectory` (no weights needed).

    f(X) = X w_eff and K = X M X^T, so for beta in the span of the training inputs x,
    r = beta^T w_eff = beta^T X^+ f and q = beta^T M beta / 2 = (X^{+T} beta)^T K (X^{+T} beta) / 2,
    with X^+ the pseudo-inverse (on whitened data with P >= D, X^+ = X^T / P).
    ``traj`` from ``silentlib.train(..., track_ntk=True)`` (q needs ``traj.kernels``; without them
    q is returned as None); ``x`` (P, D) the training inputs; ``beta`` (D,) unit. Returns (q (n,), r (n,)).
    """
    X = as_float64(x, "x")
    b = as_float64(beta, "beta").reshape(-1)
    if X.ndim != 2 or X.shape[1] != b.shape[0]:
        raise ValueError(f"x must be (P, {b.shape[0]}), got {X.shape}")
    g = np.linalg.pinv(X).T @ b                                # (P,): X^{+T} beta
    f = np.asarray(traj.predictions, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != X.shape[0]:
        raise ValueError("traj.predictions must be (n, P) for a one-output network trained on x")
    r = f @ g
    q = None if traj.kernels is None else 0.5 * np.einsum("i,nij,j->n", g, np.asarray(traj.kernels), g)
    return q, r


def teacher_modes(beta):
    """SVD of a multi-output teacher beta = sum_alpha s_alpha z_alpha v_alpha^T (paper, Section 4.2).

    ``beta``: (C, D). Returns (s (K,), Z (C, K), V (D, K)) with K = min(C, D),
    singular values in decreasing order and orthonormal columns.
    """
    B = as_float64(beta, "beta")
    if B.ndim != 2:
        raise ValueError(f"beta must be a (C, D) matrix, got shape {B.shape}")
    Z, s, Vt = np.linalg.svd(B, full_matrices=False)
    return s, Z, Vt.T


def two_layer_mode_qr_of(model, Z, V):
    """Per-mode (q, r) of a two-layer linear network with C outputs, f = A W x, at its current weights.

    For mode alpha with unit output direction z_alpha and input direction v_alpha:
    ``q_alpha = (|W v_alpha|^2 + |A^T z_alpha|^2) / 2`` and r_alpha = z_alpha^T A W v_alpha, the
    multi-output analogue of :func:`two_layer_qr_of` (paper, Section 4.2 / Appendix H:
    the modes decouple on whitened data). ``Z``: (C, K), ``V``: (D, K), columns unit.
    Returns arrays (q (K,), r (K,)); u0_alpha^2 = (q_alpha + r_alpha) / 2 enters :func:`mode_times`.
    """
    W, A = _two_layer_weights(model)
    Z, V = as_float64(Z, "Z"), as_float64(V, "V")
    if Z.ndim == 1:
        Z = Z[:, None]
    if V.ndim == 1:
        V = V[:, None]
    if Z.shape[0] != A.shape[0] or V.shape[0] != W.shape[1] or Z.shape[1] != V.shape[1]:
        raise ValueError(f"Z must be ({A.shape[0]}, K) and V ({W.shape[1]}, K), got {Z.shape} and {V.shape}")
    WV, AZ = W @ V, A.T @ Z                                  # (N, K) each
    q = 0.5 * (np.sum(WV ** 2, 0) + np.sum(AZ ** 2, 0))
    r = np.sum(AZ * WV, 0)
    return q, r


def _check_qr0(s, q0, r0):
    s, q0 = _positive("s", s), _positive("q0", q0)
    r0 = float(r0)
    if not math.isfinite(r0):
        raise ValueError(f"r0 must be finite, got {r0}")
    if abs(r0) > q0 * (1 + 1e-12):
        raise ValueError(f"need |r0| <= q0 (|a^T W beta| <= (|a|^2 + |W beta|^2)/2), got q0={q0}, r0={r0}")
    if q0 + r0 <= 0:
        raise ValueError("q0 + r0 must be positive (r0 = -q0 is the anti-aligned saddle)")
    return s, q0, min(max(r0, -q0), q0)


def two_layer_phase1(t, s, q0, r0=0.0):
    """Phase I (linearized) solution for a two-layer linear net: eq. 7 generalised to r0 != 0.

    While r << s the flow dq/dt = 2(s - r) r, dr/dt = 2(s - r) q is linear,
    dq/dt = 2 s r, dr/dt = 2 s q (paper, Appendix C.1, with eta = 1 in our time), so ::

        q(t) = q0 cosh(2st) + r0 sinh(2st),   r(t) = r0 cosh(2st) + q0 sinh(2st).

    The paper's eq. 7 is the case r0 = 0. Valid for t below the Phase-II time
    (:func:`phase_times`); it grows without bound afterwards. ``t`` any shape (>= 0);
    returns (q, r) of t's shape.
    """
    t = _times(t)
    s, q0, r0 = _check_qr0(s, q0, r0)
    ch, sh = np.cosh(2 * s * t), np.sinh(2 * s * t)
    return _out(q0 * ch + r0 * sh), _out(r0 * ch + q0 * sh)


def _two_layer_p(t, s, q0, r0):
    """p = q + r = 2 u^2 and kappa^2 = q^2 - r^2 along the (q, r) flow (see two_layer_qr)."""
    kappa2 = (q0 - r0) * (q0 + r0)
    rho = math.sqrt(s * s + kappa2)
    p_plus, p_minus = s + rho, -kappa2 / (s + rho)          # roots of p^2 - 2 s p - kappa^2
    p0 = q0 + r0
    e = np.exp(-2.0 * rho * t)
    p = (p_plus * (p0 - p_minus) - p_minus * (p0 - p_plus) * e) / ((p0 - p_minus) + (p_plus - p0) * e)
    return p, kappa2


def two_layer_qr(t, s, q0, r0=0.0):
    """Whole-trajectory (q, r) of a two-layer linear net on whitened data: closed form.

    Equations (paper, Appendix C.1 and C.5; our conventions, eta = 1 in the time
    t = lr * step). Writing w = W^T a, gradient flow gives
    da/dt = W Sigma (s beta - w), dW/dt = a (s beta - w)^T Sigma. With Sigma beta = beta
    and w ~ r beta (true up to O(sigma^2)-relative terms), differentiating q and r gives ::

        dq/dt = 2 (s - r) r,     dr/dt = 2 (s - r) q.

    Derivation of the solution. q^2 - r^2 = kappa^2 is conserved (q dq - r dr = 0), and
    ``q >= |r|`` (AM-GM), so q = kappa cosh(phi), r = kappa sinh(phi). Then
    dphi/dt = 2 (s - kappa sinh phi), and E = e^phi obeys the Riccati equation
    dE/dt = -kappa E^2 + 2 s E + kappa. Equivalently p = kappa E = q + r (= 2 u^2) obeys ::

        dp/dt = 2 s p - p^2 + kappa^2 = -(p - p+)(p - p-),   p+- = s +- rho,  rho = sqrt(s^2 + kappa^2),

    whose solution, written so that nothing divides by kappa (kappa -> 0 is the
    logistic of eq. 8) and nothing overflows at large t, is ::

        p(t) = [p+ (p0 - p-) + (-p-)(p0 - p+) e^{-2 rho t}] / [(p0 - p-) + (p+ - p0) e^{-2 rho t}],

    with p0 = q0 + r0 and p- = -kappa^2 / (s + rho). Then m = q - r = kappa^2 / p and ::

        q = (p + kappa^2/p) / 2,    r = (p - kappa^2/p) / 2,

    so r -> s and q -> rho = sqrt(s^2 + kappa^2) as t -> infinity.

    Comparison with the paper's printed C.5 formula,
    r = 2 s sinh(2st) / [(e^{2st} - 1) + 2s/q0], q = 2 s cosh(2st) / [...] (r0 = 0):
    to leading order in q0 our p is 2 s e^{2st} / [(e^{2st} - 1) + 2s/q0], i.e. the e^{+2st}
    halves agree; the paper's e^{-2st} halves, s e^{-2st}/[...], equal our
    kappa^2 / (2p) only while e^{2st} - 1 << 2s/q0 (Phase I), after which both are
    O(q0^2/s) and negligible. The two agree to O(q0) everywhere; ours is the
    exact solution of the reduced ODE (checked against ``solve_ivp`` in the tests).

    ``t`` any shape (>= 0); s > 0, q0 > 0, ``|r0| <= q0``, q0 + r0 > 0. Returns (q, r) of t's shape.
    """
    t = _times(t)
    s, q0, r0 = _check_qr0(s, q0, r0)
    p, kappa2 = _two_layer_p(t, s, q0, r0)
    m = kappa2 / p
    return _out(0.5 * (p + m)), _out(0.5 * (p - m))


def two_layer_loss(t, s, q0, r0=0.0):
    """Normalized training loss of a two-layer linear net, (s - r(t))^2 / (s - r0)^2.

    On whitened data the loss is ``(1/2)|w_eff - s beta|^2`` = (s - r)^2 / 2 + O(sigma^2)
    (the O(sigma^2) is the initial weight energy orthogonal to beta), so normalized to 1
    at t = 0 it is (s - r)^2 / (s - r0)^2 with r(t) from :func:`two_layer_qr`
    (paper, Appendix C.5, Figure C.2). Requires r0 != s. Returns t's shape.
    """
    _, r = two_layer_qr(t, s, q0, r0)
    if float(r0) == float(s):
        raise ValueError("r0 == s: the initial loss is zero")
    return _out((s - np.asarray(r)) ** 2 / (s - float(r0)) ** 2)


def u_squared(t, s, u0sq):
    """Phase II scale of a two-layer linear net, eq. 8 (paper, Appendix C.4)::

        c(t) = u(t)^2 = s e^{2st} / (e^{2st} - 1 + s/u0^2),

    the solution of dc/dt = 2c(s - c) for balanced weights W = u a_hat beta^T, a = u a_hat
    (du/dt = u(s - u^2)). The rank-one kernel is then K = c(t) X (beta beta^T + I) X^T.
    Matching to Phase I: u0^2 = (q0 + r0)/2, about sigma^2 (1 + N/D)/4 on average
    (c = p/2 of :func:`two_layer_qr` to leading order in q0). Computed as
    s / (1 + (s/u0^2 - 1) e^{-2st}) (no overflow). Returns t's shape.
    """
    t = _times(t)
    s, u0sq = _positive("s", s), _positive("u0sq", u0sq)
    return _out(s / (1.0 + (s / u0sq - 1.0) * np.exp(-2.0 * s * t)))


def phase_times(s, u0sq):
    """Time scales of the two phases of a two-layer linear net: (t1, t2).

    t1 = 1/(2s): Phase I, the alignment time, the e-folding time of the kernel's rank-one part
    q0 cosh(2st) beta beta^T, which after a few t1 dominates the isotropic start (eq. 7).
    t2 = (1/(2s)) log(s/u0^2 - 1): the half-point c = s/2 of eq. 8's logistic, where the
    loss drops (the half-LOSS time (s - c)^2 = s^2/2 is (1/(2s)) log((sqrt(2) - 1)(s/u0^2 - 1))).

    The paper writes t2 ~ (1/s) log(s/sigma^2): the same log(1/sigma^2) law, but its own eqs. 4
    and 8 (gradient flow on ``L = 1/(2P) sum |f - y|^2``, t = lr * step) give the rate 2s for both
    phases, hence the factor 1/2 on both (the paper slips at e^{st} ~ s/u0^2), and the argument is
    u0^2 = (q0 + r0)/2 ~ sigma^2 (1 + N/D)/4 rather than sigma^2.
    Requires 0 < u0^2 < s/2 (otherwise there is no half-point to reach). Returns floats.
    """
    s, u0sq = _positive("s", s), _positive("u0sq", u0sq)
    if s / u0sq - 1.0 <= 1.0:
        raise ValueError(f"need u0sq < s/2 for a Phase-II half-point, got s={s}, u0sq={u0sq}")
    return 0.5 / s, math.log(s / u0sq - 1.0) / (2.0 * s)


def mode_times(singular_values, u0sq):
    """Half-point times of the modes of a multi-output two-layer linear net (paper, Section 4.2, App. H).

    On whitened data, teacher beta = sum_alpha s_alpha z_alpha v_alpha^T, mode alpha's strength
    z_alpha^T (A W) v_alpha follows eq. 8's logistic with s -> s_alpha, and crosses s_alpha/2 at ::

        t_alpha = (1 / (2 s_alpha)) log(s_alpha / u0^2 - 1).

    The paper prints t_alpha = (1/s_alpha) log(s_alpha/u0^2); its own eqs. 4 and 8 make the
    logistic grow like e^{2 s t}, hence the factor 1/2 (see :func:`phase_times`). ``singular_values`` (K,) positive; ``u0sq`` scalar or (K,) (per-mode
    (q_alpha + r_alpha)/2 from :func:`two_layer_mode_qr_of`), each < s_alpha/2. Returns (K,) or a float.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    u = np.asarray(u0sq, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("singular_values must be positive and finite")
    if not np.all(np.isfinite(u)) or np.any(u <= 0):
        raise ValueError("u0sq must be positive and finite")
    s, u = np.broadcast_arrays(s, u)
    if np.any(s / u - 1.0 <= 1.0):
        raise ValueError("need u0sq < s_alpha/2 for every mode")
    return _out(np.log(s / u - 1.0) / (2.0 * s))


# --------------------------------------------------------------------------- deep linear
def deep_linear_ntk(x1, x2, u, r1, L):
    """NTK of a balanced rank-one depth-L linear network, eq. 10 (paper, Appendix E)::

        K(x, x') = u^{2(L-1)} x^T [(L-1) r1 r1^T + I] x'.

    Derivation: for W_l = u r_{l+1} r_l^T (unit r_l, r_{L+1} = 1), df(x)/dW_l = (W_L..W_{l+1})^T
    (W_{l-1}..W_1 x)^T = u^{L-l} r_{l+1} * u^{l-1} (r_1.x) r_l^T for l >= 2, and u^{L-1} r_2 x^T for
    l = 1. Contracting two of them: layer 1 gives u^{2(L-1)} x.x', each of layers 2..L gives
    u^{2(L-1)} (r1.x)(r1.x'). (The paper's printed eq. 58 swaps the two terms.) ``x1`` (P1, D), ``x2`` (P2, D) or
    None (= x1), ``r1`` (D,) unit vector, u > 0, L >= 1. Returns (P1, P2).
    """
    L = check_int("L", L)
    u = _positive("u", u)
    X1 = as_float64(x1, "x1")
    X2 = X1 if x2 is None else as_float64(x2, "x2")
    r = as_float64(r1, "r1").reshape(-1)
    if X1.ndim != 2 or X2.ndim != 2 or X1.shape[1] != r.shape[0] or X2.shape[1] != r.shape[0]:
        raise ValueError(f"x1, x2 must be (P, D) with D = len(r1) = {r.shape[0]}")
    if abs(np.linalg.norm(r) - 1.0) > 1e-8:
        raise ValueError("r1 must be a unit vector")
    return u ** (2 * (L - 1)) * ((L - 1) * np.outer(X1 @ r, X2 @ r) + X1 @ X2.T)


def deep_linear_scale(t, s, L, c0):
    """Scale c(t) = u(t)^L = beta^T w_eff(t) of a balanced deep linear net (paper, App. C.4, E).

    With W_l = u r_{l+1} r_l^T and whitened data the loss is (s - c)^2 / 2 and
    dL/dW_l = -(s - c) u^{L-1} r_{l+1} r_l^T, so every layer's scale obeys
    du/dt = (s - c) u^{L-1}, hence ::

        dc/dt = L u^{L-1} du/dt = L c^{2 - 2/L} (s - c).

    The paper writes dc/dt = c^{2-2/L}(s - c): its time is ours times L (the factor L
    of the L balanced layers). L = 2 is eq. 8, c = s / (1 + (s/c0 - 1) e^{-2st}); L = 1 is
    c = s - (s - c0) e^{-t}; L >= 3 is integrated with ``solve_ivp`` (DOP853, rtol 1e-10) in
    log c, which handles the long plateau c ~ c0 and the sharp rise (the plateau lasts
    about c0^{-(1-2/L)} / ((L-2) s), see :func:`half_loss_time_asymptotic`), until
    abs(s - c) < 1e-9 s; from there on c follows the linear relaxation s - c ~ e^{-L s^{2-2/L} t}.
    ``t`` any shape (>= 0, any order); s > 0; c0 > 0. Returns c of t's shape.
    """
    t = _times(t)
    s, c0, L = _positive("s", s), _positive("c0", c0), check_int("L", L)
    if L == 1:
        return _out(s - (s - c0) * np.exp(-t))
    if L == 2:
        return _out(s / (1.0 + (s / c0 - 1.0) * np.exp(-2.0 * s * t)))
    flat = t.reshape(-1)
    order = np.argsort(flat)
    ts = flat[order]
    out = np.empty_like(ts)
    pos = ts > 0
    out[~pos] = c0
    if pos.any():
        a = 1.0 - 2.0 / L

        def rhs(_, y):
            c = np.exp(y)
            return L * np.exp(a * y) * (s - c)

        # Once abs(s - c) < 1e-9 s the rest is the linear relaxation s - c ~ e^{-L s^{2-2/L} t}
        # (relative error ~1e-9): integrating that tail explicitly would take ~L s t steps (stiff),
        # minutes for the long plateaus of small c0 (e.g. L = 4, c0 = 1e-12).
        def near(_, y):
            return abs(s - math.exp(y[0])) - 1e-9 * s

        near.terminal = True
        sol = scipy.integrate.solve_ivp(rhs, (0.0, ts[-1]), [math.log(c0)], method="DOP853",
                                        dense_output=True, events=near, rtol=1e-10, atol=1e-12)
        if not sol.success:
            raise RuntimeError(f"deep_linear_scale: integration failed: {sol.message}")
        tp = ts[pos]
        t_end = sol.t[-1]
        inside = tp <= t_end
        res_pos = np.empty_like(tp)
        res_pos[inside] = np.exp(sol.sol(tp[inside])[0])
        if not inside.all():
            gap = s - math.exp(sol.y[0][-1])
            res_pos[~inside] = s - gap * np.exp(-L * s ** (2.0 - 2.0 / L) * (tp[~inside] - t_end))
        out[pos] = res_pos
    res = np.empty_like(flat)
    res[order] = out
    return _out(res.reshape(t.shape))


def deep_linear_loss(t, s, L, c0):
    """Normalized loss (s - c(t))^2 / (s - c0)^2 of a balanced deep linear net (see deep_linear_scale)."""
    if float(c0) == float(s):
        raise ValueError("c0 == s: the initial loss is zero")
    c = np.asarray(deep_linear_scale(t, s, L, c0))
    return _out((s - c) ** 2 / (s - c0) ** 2)


def _half_level(s, c0):
    return s - (s - c0) / math.sqrt(2.0)


def half_loss_time(s, L, c0):
    """Time at which the normalized loss (s - c)^2/(s - c0)^2 of dc/dt = L c^{2-2/L}(s - c) is 1/2.

    The loss is half when c = c_half = s - (s - c0)/sqrt(2). The time is the integral
    t = int_{c0}^{c_half} dc / (L c^{2-2/L} (s - c)), split with 1/(s-c) = 1/s + c/(s(s - c)) into ::

        [c0^{-a} - c_half^{-a}] / (a L s)  +  int_{log c0}^{log c_half} e^{2y/L} / (L s (s - e^y)) dy,

    a = 1 - 2/L (the first term is log(c_half/c0)/(2s) for L = 2); the second, smooth
    integral is done by ``scipy.integrate.quad``. Closed forms: L = 2 gives
    (1/(2s)) log[c_half (s - c0) / (c0 (s - c_half))], L = 1 gives log(sqrt 2).
    (paper, Appendix E, Figure 3.) s > 0, 0 < c0, c0 != s; returns a float.
    """
    s, c0, L = _positive("s", s), _positive("c0", c0), check_int("L", L)
    if c0 == s:
        raise ValueError("c0 == s: the initial loss is zero")
    ch = _half_level(s, c0)
    if L == 1:
        return 0.5 * math.log(2.0)
    if L == 2:
        return math.log(ch * (s - c0) / (c0 * (s - ch))) / (2.0 * s)
    a = 1.0 - 2.0 / L
    first = (c0 ** -a - ch ** -a) / (a * L * s)
    second, _ = scipy.integrate.quad(lambda y: math.exp(2.0 * y / L) / (L * s * (s - math.exp(y))),
                                     math.log(c0), math.log(ch), epsabs=0.0, epsrel=1e-12, limit=200)
    return float(first + second)


def half_loss_time_asymptotic(s, L, u0, *, constant=True):
    """Small-initialization law of :func:`half_loss_time` with c0 = u0^L (paper, Appendix E).

    For L >= 3:   t_half = u0^{-(L-2)} / (s (L - 2))  +  C_L s^{2/L - 2}  +  o(1),
    the sigma^{-L+2} law. The leading term is the blow-up time of dc/dt = L s c^{2-2/L}
    from c0 (the paper's L/(s(L-2)) sigma^{-L+2} comes from its ODE without our factor L and
    with u0 -> sigma; the two agree). The constant is ::

        C_L = (1/L) [ int_0^{x} z^{2/L-1}/(1-z) dz - x^{-(1-2/L)}/(1-2/L) ],   x = 1 - 1/sqrt(2)

    (C_3 = -1.2534, C_4 = -0.6210 (s = 1); returned without it for ``constant=False``).
    For L = 2: t_half = (1/(2s)) log((sqrt(2) - 1) s / u0^2) + O(u0^2), the log(sigma^{-2}) law.
    For L = 1: log(sqrt 2). u0 > 0 is the balanced per-layer scale at the start of the
    rise (for a random init, u0 is proportional to sigma). Returns a float.
    """
    s, u0, L = _positive("s", s), _positive("u0", u0), check_int("L", L)
    if L == 1:
        return 0.5 * math.log(2.0)
    if L == 2:
        return math.log((math.sqrt(2.0) - 1.0) * s / u0 ** 2) / (2.0 * s) if constant \
            else math.log(s / u0 ** 2) / (2.0 * s)
    lead = u0 ** (-(L - 2)) / (s * (L - 2))
    if not constant:
        return lead
    a = 1.0 - 2.0 / L
    x = HALF_LOSS_X
    # int_0^x z^{2/L-1}/(1-z) dz with z = w^{L/2} (removes the endpoint singularity)
    integral, _ = scipy.integrate.quad(lambda w: (L / 2.0) / (1.0 - w ** (L / 2.0)), 0.0, x ** (2.0 / L),
                                       epsabs=0.0, epsrel=1e-12)
    C = (integral - x ** (-a) / a) / L
    return float(lead + C * s ** (2.0 / L - 2.0))


def final_alignment(L, rank):
    """Alignment of the final NTK of a depth-L linear net with a whitened linear teacher.

    Derivation: after training, K_inf is proportional to X M X^T with M = (L-1) beta beta^T + I
    (eq. 10 with r1 = beta). With X^T X = P Pi (Pi the projector onto the data span, of rank
    r) and beta in the span, y = s X beta:
    y^T K y = s^2 P^2 beta^T M beta = s^2 P^2 L, ``|y|^2 = s^2 P`` and
    ``||K||_F^2 = P^2 tr((Pi M Pi)^2)`` = P^2 [(L-1)^2 + 2(L-1) + r] = P^2 (L^2 + r - 1), so ::

        A_inf = y^T K y / (||K||_F |y|^2) = L / sqrt(L^2 + r - 1).

    The paper's Figure 1 caption cites an analytic final alignment (its Appendix E.2); this
    rank-r form and its derivation are the book's. r = min(P, D) for generic data. It is
    the alignment reached, not 1: the isotropic part of eq. 10 stays. L >= 1, rank >= 1
    integers. Returns a float.
    """
    L = check_int("L", L)
    check_int("rank", rank)
    return L / math.sqrt(L * L + rank - 1)


# --------------------------------------------------------------------------- function space
def silent_schedule(K0, Kinf, sigma, L, tau, *, rate=2.0):
    """The kernel schedule of eq. 3 (paper, Appendix B, Theorem 1), as a callable t -> K_t.

    Exact choice made here, with eps = sigma^{2L-2}::

        K_t = eps [(1 - t/tau) K0 + (t/tau) Kinf]                      for 0 <= t <= tau,
        K_t = g(t) Kinf,  g(t) = 1 / (1 + (1/eps - 1) e^{-rate (t - tau)})   for t > tau.

    So the kernel is small (O(eps)) and turns linearly from K0 to Kinf's direction during
    Phase I, then grows along the fixed direction Kinf with a logistic g (continuous at tau:
    g(tau) = eps, g -> 1), like eq. 8's c(t) (rate 2s with s = 1 by default).
    ``K0`` and ``Kinf`` are unit-scale kernels (the shapes, e.g. ``K0 / ||K0||_F`` and
    ``Kinf / ||Kinf||_F``; sigma^{2L-2} is put in here). Arrays of any equal shape: (P, P) for the
    training kernel, or (Q, P) cross kernels -- call this once for each with the same sigma, L,
    tau, rate, so that train and test kernels follow one schedule. For a depth-L linear net the
    paper's tau ~ sigma^{2-L}. Returns a function of a float t >= 0.
    """
    A, B = as_float64(K0, "K0"), as_float64(Kinf, "Kinf")
    if A.shape != B.shape:
        raise ValueError(f"K0 and Kinf must have the same shape, got {A.shape} and {B.shape}")
    sigma, tau, rate, L = _positive("sigma", sigma), _positive("tau", tau), _positive("rate", rate), check_int("L", L)
    eps = sigma ** (2 * L - 2)
    if not (0 < eps <= 1):
        raise ValueError(f"need 0 < sigma^(2L-2) <= 1, got {eps}")

    def K(t):
        t = float(t)
        if t < 0:
            raise ValueError("t must be >= 0")
        if t <= tau:
            w = t / tau
            return eps * ((1.0 - w) * A + w * B)
        return B / (1.0 + (1.0 / eps - 1.0) * math.exp(-min(rate * (t - tau), 700.0)))

    return K


def gradient_flow_kernel_solution(kernel_fn, K_test_fn, y, f0, f0_test, t_grid, eta=None, *,
                                  return_path=False, rtol=1e-8, atol=1e-10):
    """Integrate function-space gradient flow for a prescribed kernel schedule (paper, eqs. 1-2, App. A). ::

        df(x_mu)/dt = eta sum_nu K_t(x_mu, x_nu) (y_nu - f(x_nu)),      (train, eq. 1)
        df(x)/dt    = eta sum_nu k_t(x, x_nu)   (y_nu - f(x_nu)),       (test)

    so that Delta_t = y - f obeys dDelta/dt = -eta K_t Delta (eq. 2). ``kernel_fn(t)`` -> (P, P),
    ``K_test_fn(t)`` -> (Q, P) (or None for no test points); ``y``, ``f0`` (P,), ``f0_test`` (Q,)
    (ignored when K_test_fn is None); ``t_grid`` increasing times starting at 0 (integration is
    done segment by segment between consecutive grid points with ``solve_ivp`` (LSODA, with the
    exact Jacobian), so put any kink of the schedule, such as tau, on the grid); ``eta``: default
    1/P, this library's convention (:func:`silentlib.train.train` with the unnormalized NTK).

    Returns (f_final (P,), f_test_final (Q,) or None), or with ``return_path=True`` the values
    at every grid time, (f (n, P), f_test (n, Q) or None).
    With eq. 3's schedule (:func:`silent_schedule`) and sigma -> 0, f_final_test ->
    f0_test + k_inf^T K_inf^{-1} (y - f0) (Theorem 1; error O(sigma^{2L-2} tau)).
    """
    y, f0 = as_float64(y, "y").reshape(-1), as_float64(f0, "f0").reshape(-1)
    P = y.shape[0]
    if f0.shape != (P,):
        raise ValueError(f"f0 must have shape ({P},), got {f0.shape}")
    tg = np.asarray(t_grid, dtype=np.float64).reshape(-1)
    if tg.size < 2 or not np.all(np.isfinite(tg)) or tg[0] < 0 or np.any(np.diff(tg) <= 0):
        raise ValueError("t_grid must have >= 2 strictly increasing finite times >= 0")
    eta = 1.0 / P if eta is None else _positive("eta", eta)
    test = K_test_fn is not None
    if test:
        ft0 = as_float64(f0_test, "f0_test").reshape(-1)
        Q = ft0.shape[0]
    else:
        ft0, Q = np.zeros(0), 0

    def Ktrain(t):
        K = np.asarray(kernel_fn(t), dtype=np.float64)
        if K.shape != (P, P):
            raise ValueError(f"kernel_fn(t) must return ({P}, {P}), got {K.shape}")
        return K

    def Ktest(t):
        K = np.asarray(K_test_fn(t), dtype=np.float64)
        if K.shape != (Q, P):
            raise ValueError(f"K_test_fn(t) must return ({Q}, {P}), got {K.shape}")
        return K

    def rhs(t, z):
        res = y - z[:P]
        out = eta * (Ktrain(t) @ res)
        if test:
            out = np.concatenate([out, eta * (Ktest(t) @ res)])
        return out

    def jac(t, z):
        J = np.zeros((P + Q, P + Q))
        J[:P, :P] = -eta * Ktrain(t)
        if test:
            J[P:, :P] = -eta * Ktest(t)
        return J

    z = np.concatenate([f0, ft0])
    path = [z.copy()]
    for a, b in zip(tg[:-1], tg[1:]):
        sol = scipy.integrate.solve_ivp(rhs, (a, b), z, method="LSODA", jac=jac, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"gradient_flow_kernel_solution: integration failed on [{a}, {b}]: {sol.message}")
        z = sol.y[:, -1]
        path.append(z.copy())
    path = np.array(path)
    if return_path:
        return path[:, :P], (path[:, P:] if test else None)
    return path[-1, :P], (path[-1, P:] if test else None)


# --------------------------------------------------------------------------- appendices F, G, H.2
__all__ += ["transfer_weights", "transfer_error", "finetune_weights", "finetune_error",
            "kernel_interpolant_linear", "min_norm_deviation", "imbalance_moments"]


def _span_projector(X):
    """(D, D) projector onto the row span of X (P, D); raises unless rank X = P <= D."""
    X = as_float64(X, "X", ndim=2)
    P, D = X.shape
    if P > D or np.linalg.matrix_rank(X) < P:
        raise ValueError(f"need X of full row rank P <= D, got shape {X.shape} and rank {np.linalg.matrix_rank(X)}")
    return np.linalg.pinv(X) @ X


def _unit(name, v, D):
    v = as_float64(v, name).reshape(-1)
    if v.shape != (D,) or abs(np.linalg.norm(v) - 1.0) > 1e-8:
        raise ValueError(f"{name} must be a unit vector of length {D}")
    return v


def transfer_weights(A, X, beta, w):
    """Kernel interpolant of the task w with the kernel K = x^T (A beta beta^T + I) x' (Appendix F).

    Ridgeless kernel regression with a linear kernel x^T M x' returns the linear function
    w_hat . x that interpolates the data and minimizes w_hat^T M^{-1} w_hat. For
    M = A beta beta^T + I and X (P, D) of full row rank P <= D, with Pi the projector on
    the row span of X and Pi_perp = I - Pi, the minimizer is, in closed form, ::

        w_hat = Pi w + mu Pi_perp beta,   mu = A (beta . Pi w) / (1 + A |Pi beta|^2).

    ``A`` >= 0 (``numpy.inf`` allowed: mu = beta.Pi w / ‖Pi beta‖^2), ``X`` (P, D),
    ``beta`` (D,) unit, ``w`` (D,) any target vector. Returns w_hat (D,); the test error on
    isotropic inputs is ‖w_hat - w‖^2.
    """
    Pi = _span_projector(X)
    D = Pi.shape[0]
    beta = _unit("beta", beta, D)
    w = as_float64(w, "w").reshape(-1)
    if w.shape != (D,):
        raise ValueError(f"w must have length {D}")
    A = float(A)
    if not (A >= 0):
        raise ValueError(f"A must be >= 0, got {A}")
    g, b2 = beta @ Pi @ w, beta @ Pi @ beta
    mu = g / b2 if math.isinf(A) else A * g / (1.0 + A * b2)
    return Pi @ w + mu * (beta - Pi @ beta)


def transfer_error(A, alpha, rho):
    """Large-D limit of ‖w_hat - w‖^2 for :func:`transfer_weights` (Appendix F).

    Task w = alpha beta + sqrt(1 - alpha^2) w_perp (unit, w_perp orthogonal to beta), P
    training inputs spanning a uniformly random subspace of R^D, D -> infinity with
    P/D = rho in (0, 1). Then ‖Pi v‖^2 -> rho ‖v‖^2 and Pi-inner products concentrate, so ::

        E_g = (1 - rho) [1 - alpha^2 kappa (2 - kappa)],   kappa = A rho / (1 + A rho),

    with kappa = 1 for A = inf. A = 0 (the isotropic kernel) gives 1 - rho for every alpha;
    E_g falls with A for every alpha != 0. Corrections are O(1/sqrt(D)) per draw (O(1/D) on
    average). ``A`` >= 0 scalar, ``alpha`` array in [-1, 1], ``rho`` in (0, 1). Returns the
    shape of ``alpha``.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if np.any(np.abs(alpha) > 1):
        raise ValueError("alpha must lie in [-1, 1]")
    rho = float(rho)
    if not 0 < rho < 1:
        raise ValueError(f"rho = P/D must lie in (0, 1), got {rho}")
    A = float(A)
    if not (A >= 0):
        raise ValueError(f"A must be >= 0, got {A}")
    kappa = 1.0 if math.isinf(A) else A * rho / (1.0 + A * rho)
    return _out((1.0 - rho) * (1.0 - alpha ** 2 * kappa * (2.0 - kappa)))


def finetune_weights(X, beta, w, s=1.0):
    """End point of gradient flow from a trained two-layer linear net to a new task (Appendix F).

    The net f = a^T W x was trained (from sigma -> 0) on the teacher s beta, so it is
    balanced and rank one: W = a1 beta^T, ‖a1‖^2 = s. Training it on (X, X w) with X (P, D),
    rank P <= D, moves W only inside the row span of X (gradients have rows in it), so
    W Pi_perp = a1 (Pi_perp beta)^T stays. The law a a^T - W W^T = const (= 0) forces
    a = lambda a1 with lambda^2 >= ‖Pi_perp beta‖^2 > 0, so lambda never changes sign, and the
    interpolation condition W^T a on the span = Pi w gives lambda^2 (lambda^2 - ‖Pi_perp beta‖^2)
    = ‖Pi w‖^2 / s^2. Hence ::

        w_ft = Pi w + mu Pi_perp beta,   mu = s lambda,
        lambda^2 = [b + sqrt(b^2 + 4 |Pi w|^2 / s^2)] / 2,   b = |Pi_perp beta|^2.

    Exact up to O(sigma) in the pretrained weights. Returns w_ft (D,).
    """
    Pi = _span_projector(X)
    D = Pi.shape[0]
    beta = _unit("beta", beta, D)
    w = as_float64(w, "w").reshape(-1)
    s = _positive("s", s)
    b = beta @ beta - beta @ Pi @ beta
    lam2 = 0.5 * (b + math.sqrt(b * b + 4.0 * (w @ Pi @ w) / s ** 2))
    return Pi @ w + s * math.sqrt(lam2) * (beta - Pi @ beta)


def finetune_error(alpha, rho, s=1.0):
    """Large-D limit of ‖w_ft - w‖^2 for :func:`finetune_weights` (Appendix F), unit task w as in
    :func:`transfer_error`: b -> 1 - rho, ‖Pi w‖^2 -> rho, so ::

        E_ft = (1 - rho) (1 - 2 mu alpha + mu^2),  mu = s sqrt([(1 - rho) + sqrt((1 - rho)^2 + 4 rho / s^2)] / 2),

    and mu = 1 for s = 1: E_ft = 2 (1 - rho)(1 - alpha), below the isotropic 1 - rho only for
    alpha > 1/2. Returns the shape of ``alpha``.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    rho, s = float(rho), _positive("s", s)
    if not 0 < rho < 1:
        raise ValueError(f"rho = P/D must lie in (0, 1), got {rho}")
    b = 1.0 - rho
    mu = s * math.sqrt(0.5 * (b + math.sqrt(b * b + 4.0 * rho / s ** 2)))
    return _out((1.0 - rho) * (1.0 - 2.0 * mu * alpha + mu * mu))


def kernel_interpolant_linear(M, X, y):
    """Interpolant of the linear kernel x^T M x' on (X, y), and its split (Appendix G).

    With X (P, D) of full row rank P <= D, Pi the projector on its row span and
    w_star = X^+ y the minimum-norm solution, every interpolant has Pi w = w_star, and the
    kernel's is ::

        w_K = M X^T (X M X^T)^{-1} y = w_star + Pi_perp M Pi (Pi M Pi)^+ w_star.

    So w_K = w_star exactly when the off-diagonal block Pi_perp M Pi annihilates
    (Pi M Pi)^+ w_star, e.g. when M maps the data span into itself (M = A v v^T + c I with v in
    the span). ``M`` (D, D) positive definite. Returns (w_K from the identity, w_star), both (D,).
    """
    Pi = _span_projector(X)
    M = as_float64(M, "M", ndim=2)
    X, y = as_float64(X, "X", ndim=2), as_float64(y, "y").reshape(-1)
    if M.shape != Pi.shape or y.shape != (X.shape[0],):
        raise ValueError(f"need M ({Pi.shape}) and y ({X.shape[0]},)")
    V = np.linalg.svd(X, full_matrices=False)[2].T           # (D, P) orthonormal basis of the span
    w_star = np.linalg.pinv(X) @ y
    # (Pi M Pi)^+ = V (V^T M V)^{-1} V^T, solved in the span's basis (no cutoff to choose)
    inner = V @ np.linalg.solve(V.T @ M @ V, V.T @ w_star)
    return w_star + (np.eye(Pi.shape[0]) - Pi) @ M @ inner, w_star


def min_norm_deviation(sigma, P, D, q):
    """Typical ‖w_K - w_star‖ / ‖w_star‖ for the NTK of a two-layer linear net (Appendix G).

    Gradient flow moves W only inside the data span, W_t = W_0 Pi_perp + W_t Pi, and W_t Pi, a_t do
    not depend on W_0 Pi_perp. So M_t = W_t^T W_t + ‖a_t‖^2 I has Pi_perp M_t Pi = (W_0 Pi_perp)^T W_t Pi.
    After Phase I on whitened data, W_t Pi ~ v beta^T, Pi M Pi ~ q (beta beta^T + Pi), ‖v‖^2 ~ q,
    w_star = s beta, and :func:`kernel_interpolant_linear` gives
    w_K - w_star ~ (W_0 Pi_perp)^T v s / (2 q), a Gaussian vector with
    E‖.‖^2 = sigma^2 (1 - P/D) s^2 / (4 q). Hence ::

        |w_K - w_star| / |w_star| ~ sigma sqrt(1 - P/D) / (2 sqrt(q(t))),

    valid for q >> sigma^2 (t >~ 1/s), with a chi_{D-P} spread (relative sd ~ 1/sqrt(2(D-P))).
    ``q`` scalar or array (q = beta^T M beta / 2). Returns its shape.
    """
    sigma = _positive("sigma", sigma)
    P, D = check_int("P", P), check_int("D", D)
    if P > D:
        raise ValueError("need P <= D")
    q = np.asarray(q, dtype=np.float64)
    if np.any(q <= 0):
        raise ValueError("q must be positive")
    return _out(sigma * math.sqrt(1.0 - P / D) / (2.0 * np.sqrt(q)))


def imbalance_moments(widths, sigma):
    """Expected imbalance between adjacent layers of a deep linear net (Appendix H.2).

    Layers W_l (N_l x N_{l-1}), widths = (N_0 = D, N_1, ..., N_L), entries N(0, sigma^2 / N_{l-1}).
    G_l = W_l W_l^T - W_{l+1}^T W_{l+1} (N_l x N_l, l = 1..L-1) is conserved by gradient flow, so
    it keeps its initial value, with ::

        E[G_l] = sigma^2 (1 - N_{l+1} / N_l) I_{N_l}.

    (The fan-in N_{l-1} cancels; equal widths N_{l+1} = N_l cancel the mean, but the last
    hidden layer, N_L = 1, keeps sigma^2 (1 - 1/N_{L-1}).) Fluctuations, from chi-square
    variances: the mean diagonal tr(G_l)/N_l has sd sigma^2 sqrt(2/(N_l N_{l-1}) + 2 N_{l+1}/N_l^3),
    an off-diagonal entry has rms sigma^2 sqrt(1/N_{l-1} + N_{l+1}/N_l^2).
    Returns a list over l = 1..L-1 of dicts with "mean", "sd_mean_diag", "rms_off".
    """
    n = [check_int("width", v) for v in widths]
    if len(n) < 3:
        raise ValueError("need at least two layers: widths = (D, N_1, ..., N_L)")
    s2 = _positive("sigma", sigma) ** 2
    out = []
    for l in range(1, len(n) - 1):
        lo, mid, hi = n[l - 1], n[l], n[l + 1]
        out.append({"mean": s2 * (1.0 - hi / mid),
                    "sd_mean_diag": s2 * math.sqrt(2.0 / (mid * lo) + 2.0 * hi / mid ** 3),
                    "rms_off": s2 * math.sqrt(1.0 / lo + hi / mid ** 2)})
    return out
