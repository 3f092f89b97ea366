"""One operational test of "silent" for every run of the book.

The paper calls alignment *silent* when the NTK has turned into its final direction before the
loss has moved (Sections 1 and 3): the network is then a kernel machine of its final kernel. This
module turns that into one number per run.

* The kernel's distance in direction from its final value,
  ``d(t) = 1 - <K_t, K_inf>_F / (||K_t||_F ||K_inf||_F)``: 0 once the kernel points where it ends,
  blind to the kernel's scale (which grows in Phase II without changing the predictor).
* The time ``t_drop`` at which the training loss has fallen by ``loss_drop`` (10%) of its initial
  value: before it, the network's function has barely changed.
* The silent fraction ``S = 1 - d(t_drop) / d(0)``: the share of the kernel's whole change in
  direction that happened before the loss fell by 10%.

Why these choices. The cosine to the *final* kernel, not the kernel-target alignment, because
silent alignment is a statement about the kernel the network ends with (Theorem 1): alignment
to y saturates below 1 and at a value that depends on the data, while d(t) always ends at 0. A
10% loss drop, not the half-loss time, because by t_1/2 half of the function has already been
learned and any kernel change before it would no longer be "silent"; 10% is still well above the
loss's noise at the start. ``S`` near 1 means the kernel did all its turning first (silent
alignment: the network matches kernel regression with K_inf); ``S`` well below 1 means it kept
turning while the function was being learned (not silent: the network is no kernel machine of
one kernel). When the kernel hardly turns at all (d(0) near 0, the lazy regime) ``S`` is
ill-conditioned and says nothing; the total turn ``d(0)`` is reported with it for that reason.
"""
from __future__ import annotations

import math

import numpy as np

from .stats import crossing_time

#: The loss drop, as a fraction of the initial loss, that marks the end of the silent period.
LOSS_DROP = 0.1
#: A run is called silent when its silent fraction is at least this.
SILENT_AT = 0.9


def kernel_direction_change(kernels, K_final) -> np.ndarray:
    """``d_t = 1 - cos(K_t, K_final)`` (Frobenius cosine) for every recorded kernel.

    Parameters
    ----------
    kernels : array_like
        (n, ...) the kernels K_t, e.g. :attr:`~silentlib.train.Trajectory.kernels` (n, P, P) or (n, P, P, C, C).
    K_final : array_like
        The final kernel, the shape of one K_t (e.g. :attr:`~silentlib.train.Trajectory.Kinf`).

    Returns
    -------
    numpy.ndarray
        (n,) values in [0, 2]; 0 where K_t points along K_final.
    """
    Ks = np.asarray(kernels, dtype=np.float64)
    Kf = np.asarray(K_final, dtype=np.float64)
    if Ks.shape[1:] != Kf.shape:
        raise ValueError(f"kernels must have shape (n,) + {Kf.shape}, got {Ks.shape}")
    flat = Ks.reshape(len(Ks), -1)
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(Kf)
    if np.any(norms == 0):
        raise ValueError("a kernel is zero: its direction is undefined")
    return 1.0 - flat @ Kf.reshape(-1) / norms


def silent_fraction(t, loss, direction, loss_drop: float = LOSS_DROP) -> float:
    """The share of the kernel's change in direction done before the loss fell by ``loss_drop``.

    ``S = 1 - d(t_drop) / d(0)`` with ``d`` from :func:`kernel_direction_change`, ``t_drop`` the
    first time ``loss / loss[0] <= 1 - loss_drop`` (:func:`~silentlib.stats.crossing_time`) and
    ``d(t_drop)`` interpolated linearly between records. See the module docstring for why.

    Parameters
    ----------
    t, loss, direction : array_like
        (n,) record times, training losses and kernel direction changes (e.g. a
        :class:`~silentlib.train.Trajectory`'s ``t``, ``loss``, ``kernel_direction``).
    loss_drop : float
        In (0, 1): the fractional loss drop that ends the silent period.

    Returns
    -------
    float
        ``S``, at most 1 (negative if the kernel first turned away from its final direction);
        NaN if the loss never fell by ``loss_drop`` or the kernel never changed direction.
    """
    t, loss, d = (np.asarray(v, dtype=np.float64) for v in (t, loss, direction))
    if not (t.shape == loss.shape == d.shape and t.ndim == 1 and len(t) >= 2):
        raise ValueError(f"t, loss and direction must be (n,) arrays with n >= 2, got {t.shape}, {loss.shape}, "
                         f"{d.shape}")
    if not 0 < loss_drop < 1:
        raise ValueError(f"loss_drop must be in (0, 1), got {loss_drop}")
    t_drop = crossing_time(t, loss / loss[0], 1.0 - loss_drop, decreasing=True)
    if not math.isfinite(t_drop) or not d[0] > 0:
        return math.nan
    return float(1.0 - np.interp(t_drop, t, d) / d[0])


def summarize(traj) -> dict[str, float]:
    """One run's row of the book's closing table: how silent it was and whose kernel machine it is.

    Compares the trained network's test predictions ``f = traj.test_predictions[-1]`` with kernel
    regression on the same test points using its initial and its final NTK
    (:meth:`~silentlib.train.Trajectory.kernel_predictions`, paper Figure 1(b)). Silent alignment
    (Theorem 1) predicts ``rel_Kinf`` near 0 whenever ``S`` is near 1 and ``d0`` is not tiny.

    Parameters
    ----------
    traj : Trajectory
        Trained with ``track_ntk=True``, ``x_test`` and ``keep_kernels=True``.

    Returns
    -------
    dict
        ``S``: the silent fraction (:func:`silent_fraction`; NaN if undefined); ``d0``: the kernel's
        whole turn ``d(0) = 1 - cos(K_0, K_inf)`` (when tiny, the lazy regime, ``S`` means nothing);
        ``rel_K0``, ``rel_Kinf``: ``|f_K - f| / |f|`` over all test outputs; ``corr_K0``,
        ``corr_Kinf``: Pearson correlations of ``f_K`` with ``f``; ``rel_lin``: the same relative
        error for the linearized network ``f_0 + k_0^T K_0^{-1} (y - f_0)`` (the lazy, NTK limit, which
        keeps the initial function ``f_0`` that the small-initialization theory drops); ``loss_end``:
        the final loss as a fraction of the initial one.

    Raises
    ------
    ValueError
        If the trajectory lacks tracked kernels or test predictions.
    """
    from .kernels import kernel_regression
    from .stats import correlation

    if traj.kernel_direction is None or traj.test_predictions is None:
        raise ValueError("summarize needs a trajectory trained with track_ntk=True and x_test")
    f = np.asarray(traj.test_predictions[-1], dtype=np.float64).ravel()
    out = {"S": traj.silence(), "d0": float(traj.kernel_direction[0])}
    for name, g in traj.kernel_predictions().items():
        g = np.asarray(g, dtype=np.float64).ravel()
        out["rel_" + name] = float(np.linalg.norm(g - f) / np.linalg.norm(f))
        out["corr_" + name] = correlation(f, g)
    resid = traj.y - traj.predictions[0]
    lin = traj.test_predictions[0] + kernel_regression(traj.K0, traj.K0_test, resid)
    out["rel_lin"] = float(np.linalg.norm(np.ravel(lin) - f) / np.linalg.norm(f))
    out["loss_end"] = float(traj.loss[-1] / traj.loss[0])
    return out
