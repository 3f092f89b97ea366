"""Gradient flow integrated with error control: Dormand-Prince 5(4) on every network of an ensemble.

The paper's dynamics is the gradient flow (eq. 4 and 9, eta = 1)::

    d theta / dt = -grad L(theta),     L = 1/(2P) sum_mu |f(x^mu) - y^mu|^2.

Gradient descent follows it with an error of order lr, one gradient per step of time lr, and needs lr
below 2 / lambda_max of the Hessian to be stable. :func:`integrate` instead takes adaptive
Runge-Kutta steps (Dormand & Prince 1980, the 7-stage RK5(4) pair with the first-same-as-last
property: 6 gradients a step; the method of scipy's ``RK45`` and torchdiffeq's ``dopri5``). Each
step's local error, estimated by the embedded 4th-order solution, must satisfy, in the root mean
square over the parameters::

    rms( err_i / (atol + rtol * max(|theta_i|, |theta_i'|)) ) <= 1,

else the step is retried with a smaller size; the next step size follows the estimate (safety 0.9,
factor between 0.2 and 10). Long stretches where the flow is slow (the plateau of a small
initialization) are crossed in few, long steps; where the flow is stiff (a converged network whose
Hessian has eigenvalues lambda) steps stay below about 3.3 / lambda, a little longer than
gradient descent's stable steps, at six gradients each.

**What the default tolerances give.** rtol = 1e-6 (float64) bounds each step's local error; the
error of the records, which accumulates over the steps, stays of that order on the tests' problems:
5e-7 of the initial residual for a linear model against its closed-form flow, 7e-8 of the parameters
for a tanh network against scipy's DOP853 at rtol 1e-12 (``tests/test_flow.py``). Gradient descent
with the chapters' steps (lr = 0.002 to 0.5) is off the flow by O(lr), 1e-3 to 1e-1 relative, and
the chapters compare simulations with the theory's ODEs at 1e-3 to 5e-2; a tighter rtol costs few
gradients where the steps are limited by stability rather than accuracy.

Every network has its own step size: network b's result is the one it would have by itself (to
rounding). The records fall on the same time grid as a gradient-descent run's, without shortening a
step: the parameters at a record time inside a step come from the method's continuous extension
(Shampine 1986, 4th order, the same accuracy as the step), and the last step ends on the final time.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .ensemble import Ensemble
from .threads import StepThreads

#: Default relative tolerance in float64; float32 gets 1000 times its rounding, 1.2e-4.
RTOL = 1e-6
#: The default absolute tolerance is ATOL_SHARE * rtol * (the RMS of the network's initial parameters).
ATOL_SHARE = 1e-3

# Dormand & Prince (1980), RK5(4)7M (Hairer, Norsett & Wanner, Solving ODEs I, Table 5.2): the stages'
# coefficients, the last row being the 5th-order weights, and E = those weights minus the 4th-order ones.
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
# Shampine's continuous extension: theta(t0 + x h) = theta0 + h sum_i k_i sum_j _P[i][j] x^(j+1).
_P = (
    (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
    (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
    (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
    (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
    (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def tolerances(theta: torch.Tensor, rtol: float | None = None, atol=None) -> tuple[float, torch.Tensor]:
    """``(rtol, atol)`` for the parameters ``theta`` (B, n): the defaults where None.

    rtol defaults to :data:`RTOL` (float64) or ``1000 * eps`` (float32); atol, one per network
    (B, 1), to ``ATOL_SHARE * rtol * rms(theta_b)``, which keeps the control relative for every
    parameter of the network's own scale and protects parameters that start at zero (biases).
    """
    if rtol is None:
        rtol = max(RTOL, 1e3 * torch.finfo(theta.dtype).eps)
    if not (rtol > 0 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be positive and finite, got {rtol}")
    if atol is None:
        rms = theta.pow(2).mean(dim=1, keepdim=True).sqrt()
        atol = ATOL_SHARE * rtol * torch.where(rms > 0, rms, torch.ones_like(rms))
    else:
        if not (atol > 0 and math.isfinite(atol)):
            raise ValueError(f"atol must be positive and finite, got {atol}")
        atol = torch.full((theta.shape[0], 1), float(atol), dtype=theta.dtype, device=theta.device)
    return float(rtol), atol


def _rms(v):
    return v.pow(2).mean(dim=1).sqrt()


def _first_step(ens, y0, f0, rtol, atol):
    """(B,) initial step sizes (Hairer, Norsett & Wanner, Solving ODEs I, II.4; as scipy's)."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    _, g1 = ens.loss_and_grad(y0 + h0[:, None] * f0)
    d2 = _rms((-g1 - f0) / scale) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / big) ** (1 / 5))
    return torch.minimum(100 * h0, h1).cpu().double().numpy()


def _step(ens, y, k1, h):
    """One Dormand-Prince step of sizes h (B, 1) from y with f(y) = k1: (y5, the 7 stages, error)."""
    ks = [k1]
    for row in _A:
        yi = y + h * sum(c * k for c, k in zip(row, ks) if c)
        ks.append(-ens.loss_and_grad(yi)[1])
    return yi, ks, h * sum(e * k for e, k in zip(_E, ks) if e)


def _between(y0, ks, h, x):
    """The parameters (n,) at t0 + x h inside a step of size h from y0 (n,) with stages ks (each (n,))."""
    powers = [x, x * x, x ** 3, x ** 4]
    return y0 + h * sum(k * sum(c * p for c, p in zip(row, powers)) for k, row in zip(ks, _P) if any(row))


def integrate(ens: Ensemble, times: Sequence[np.ndarray], record: Callable[[int], None], *,
              rtol: float | None = None, atol: float | None = None, threads: StepThreads | None = None,
              progress: bool = False) -> np.ndarray:
    """Integrate every network's gradient flow, calling ``record(b)`` at each of its times.

    Parameters
    ----------
    ens : silentlib.ensemble.Ensemble
        The networks; ``ens.theta`` (B, n) is updated in place, so each bound model holds its state
        (and, during ``record(b)``, model b holds its state at the record's time).
    times : sequence of numpy.ndarray
        ``times[b]``: network b's record times, increasing from 0; it is integrated up to the last.
    record : callable
        ``record(b)``, called when model b is at each of its times (in order).
    rtol, atol : float, optional
        The tolerances of the local error control (defaults: :func:`tolerances`).
    threads : silentlib.threads.StepThreads, optional
        Chooses the CPU threads of the steps (a step with a record is not timed).
    progress : bool
        A tqdm bar over the records.

    Returns
    -------
    numpy.ndarray
        (B,) the gradient evaluations spent on each network.

    Raises
    ------
    FloatingPointError
        When a network's step size collapses (its gradient is non-finite, or the flow blows up).
    """
    threads = threads or StepThreads(ens.theta.device)
    y, B = ens.theta, len(ens)
    rtol, atol = tolerances(y, rtol, atol)
    k1 = -ens.loss_and_grad(y)[1]
    h = _first_step(ens, y, k1, rtol, atol)
    evals, t, nxt = np.full(B, 2), np.zeros(B), np.zeros(B, dtype=int)
    t_end = np.array([tb[-1] for tb in times], dtype=float)
    bar = tqdm(total=sum(len(tb) for tb in times), disable=not progress, desc="gradient flow", leave=False)
    try:
        _records(record, threads, bar, y, times, nxt, t, None)
        while (rows := np.flatnonzero(t < t_end)).size:      # the networks not done (only they are computed)
            idx = torch.as_tensor(rows, device=y.device)
            lands = h[rows] >= t_end[rows] - t[rows]
            h_try = np.minimum(h[rows], t_end[rows] - t[rows])
            threads.tick()
            y0, k0 = y[idx], k1[idx]
            y5, ks, err = _step(ens, y0, k0, torch.as_tensor(h_try, dtype=y.dtype, device=y.device)[:, None])
            evals[rows] += 6
            norm = _rms(err / (atol[idx] + rtol * torch.maximum(y0.abs(), y5.abs()))).cpu().double().numpy()
            accept = norm <= 1
            keep = torch.as_tensor(accept, device=y.device)[:, None]
            y.index_copy_(0, idx, torch.where(keep, y5, y0))
            k1.index_copy_(0, idx, torch.where(keep, ks[-1], k0))
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.clip(SAFETY * norm ** -0.2, MIN_FACTOR, MAX_FACTOR)
            factor = np.where(np.isfinite(factor), factor, MIN_FACTOR)
            h_new = h_try * np.where(accept, factor, np.minimum(factor, 1.0))
            t_old = t.copy()
            t[rows] = np.where(accept, np.where(lands, t_end[rows], t[rows] + h_try), t[rows])
            h[rows] = np.where(accept & lands, np.maximum(h_new, h[rows]), h_new)
            _records(record, threads, bar, y, times, nxt, t, (rows, y0, ks, h_try, t_old))
            stuck = rows[h[rows] < 1e-12 * np.maximum(t[rows], 1.0)]
            if stuck.size:
                b = int(stuck[0])
                raise FloatingPointError(f"the gradient flow's step size collapsed to {h[b]:.1e} at t = {t[b]:g} "
                                         f"(network {b}): its gradient is non-finite there, or the flow blows up")
    finally:
        bar.close()
    return evals


def _records(record, threads, bar, y, times, nxt, t, step):
    """Call ``record(b)`` at every record time of network b up to its time t[b]. Inside the last
    step (``step``: the networks it advanced, their states before it, stages, sizes, and every
    network's time before it) model b is set for the call to the continuous extension's
    parameters; at the step's end it holds its state itself."""
    for b in range(len(times)):
        while nxt[b] < len(times[b]) and times[b][nxt[b]] <= t[b]:
            tr = times[b][nxt[b]]
            threads.untimed()
            if step is None or tr == t[b]:
                record(b)
            else:
                rows, y0, ks, h, t0 = step
                i = int(np.searchsorted(rows, b))
                state = y[b].clone()
                y[b] = _between(y0[i], [k[i] for k in ks], float(h[i]), (tr - t0[b]) / h[i])
                record(b)
                y[b] = state
            nxt[b] += 1
            bar.update(1)
