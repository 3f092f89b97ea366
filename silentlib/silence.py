"""One operational test of "silent" for every run of the book.

The paper's claim (Sections 1-3, Theorem 1) is that when the alignment is silent the network ends
as kernel regression with its *final* NTK, because the kernel has settled in every respect that
matters to kernel regression before the function moved. This module measures exactly that, on
held-out points:

* The kernel machine of the kernel at time t, ``f_t(x) = k_t(x)^T K_t^{-1} y`` (kernel
  interpolation with the NTK K_t, :func:`~silentlib.kernels.kernel_regression`), evaluated on
  test points. It ignores the kernel's scale, which grows in Phase II without changing it.
* Its distance from the final machine, ``m(t) = |f_t - f_inf| / |f_inf|`` over all test outputs
  (:func:`machine_distance`): 0 at the end, ``m(0)`` the machine's whole change.
* The time ``t_drop`` at which the training loss has fallen by ``loss_drop`` (10%) of its initial
  value: before it, the network's function has barely changed.
* The silent fraction ``S = 1 - m(t_drop) / m(0)`` (:func:`silent_fraction`): the share of the
  kernel machine's whole change done before the loss fell by 10%.

Why the machine and not the kernel's Frobenius direction. The book first used
``d(t) = 1 - cos_F(K_t, K_inf)`` (:func:`kernel_direction_change`, still recorded as a description
of the kernel's turn). On near-orthogonal inputs (whitened images, P < D) the kernel's diagonal
carries almost all of its Frobenius norm, so ``d(0)`` is tiny and its ratio noisy, although the
off-diagonal part, which decides kernel regression, changes a lot; and a kernel can turn in
Frobenius direction in ways kernel regression does not see, or the reverse (chapter 11 shows runs
of each kind). The machine distance weighs every change of the kernel by what it does to the
predictor the network is compared with.

Why ``SILENT_AT`` = 2/3. If the network learns its function after ``t_drop`` with kernels whose
machines lie between ``f_{t_drop}`` and ``f_inf``, it ends within about ``(1 - S) m(0)`` of the
final machine and at least ``S m(0)`` from the initial one: ``S >= 2/3`` puts it at least twice
as close to K_inf regression as to K_0 regression. Chapter 11 measures how well that holds.

Where it is undefined. When every kernel the run passes through gives the same machine
(``m(0)`` zero to rounding, e.g. a linear network on P >= D inputs, whose kernel interpolants
are all the minimum-norm solution), ``S`` is NaN: kernel regression cannot tell the kernels
apart, so there is nothing to be silent about. Without test points it cannot be measured.
"""
from __future__ import annotations

import math

import numpy as np

from .stats import crossing_time

#: The loss drop, as a fraction of the initial loss, that marks the end of the silent period.
LOSS_DROP = 0.1
#: A run is called silent when its silent fraction is at least this (see the module docstring).
SILENT_AT = 2 / 3
#: Machines closer than this (relative to the final one) are the same machine up to rounding.
SAME_MACHINE = 1e-6


def kernel_direction_change(kernels, K_final) -> np.ndarray:
    """``d_t = 1 - cos(K_t, K_final)`` (Frobenius cosine) for every recorded kernel.

    A description of the kernel's turn in direction, blind to its scale; not the book's test of
    silence (see the module docstring for why).

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


def machine_distance(machines) -> np.ndarray:
    """``m_t = |f_t - f_final| / |f_final|``: how far each kernel machine is from the last one.

    Parameters
    ----------
    machines : array_like
        (n, Q) or (n, Q, C): the test predictions ``f_t = k_t(x)^T K_t^{-1} y`` of kernel
        regression with the kernel of each record, the last one with the final kernel (e.g.
        :attr:`~silentlib.train.Trajectory.machine_predictions`).

    Returns
    -------
    numpy.ndarray
        (n,) relative distances over all test outputs; the last is 0.
    """
    f = np.asarray(machines, dtype=np.float64)
    if f.ndim < 2 or len(f) < 2:
        raise ValueError(f"machines must have shape (n, Q) or (n, Q, C) with n >= 2, got {f.shape}")
    flat = f.reshape(len(f), -1)
    scale = np.linalg.norm(flat[-1])
    if not scale > 0:
        raise ValueError("the final kernel machine predicts 0 on every test point: distances are undefined")
    return np.linalg.norm(flat - flat[-1], axis=1) / scale


def done_by_drop(t, loss, distance, loss_drop: float = LOSS_DROP) -> float:
    """``1 - D(t_drop) / D(0)``: the share of a distance's decrease done before the loss fell by ``loss_drop``.

    ``t_drop`` is the first time ``loss / loss[0] <= 1 - loss_drop``
    (:func:`~silentlib.stats.crossing_time`), ``D(t_drop)`` is interpolated linearly between
    records. With the kernel machine's distance :func:`machine_distance` this is the silent
    fraction (:func:`silent_fraction`); with :func:`kernel_direction_change` it is the share of
    the kernel's turn in Frobenius direction done by then.

    Parameters
    ----------
    t, loss, distance : array_like
        (n,) record times, training losses and distances from the final state.
    loss_drop : float
        In (0, 1): the fractional loss drop that ends the silent period.

    Returns
    -------
    float
        At most 1 (negative if the distance first grew); NaN if the loss never fell by
        ``loss_drop`` or ``distance[0]`` is 0.
    """
    t, loss, d = (np.asarray(v, dtype=np.float64) for v in (t, loss, distance))
    if not (t.shape == loss.shape == d.shape and t.ndim == 1 and len(t) >= 2):
        raise ValueError(f"t, loss and distance must be (n,) arrays with n >= 2, got {t.shape}, {loss.shape}, "
                         f"{d.shape}")
    if not 0 < loss_drop < 1:
        raise ValueError(f"loss_drop must be in (0, 1), got {loss_drop}")
    t_drop = crossing_time(t, loss / loss[0], 1.0 - loss_drop, decreasing=True)
    if not math.isfinite(t_drop) or not d[0] > 0:
        return math.nan
    return float(1.0 - np.interp(t_drop, t, d) / d[0])


def silent_fraction(t, loss, machines, loss_drop: float = LOSS_DROP) -> float:
    """The book's test of silence: ``S = 1 - m(t_drop) / m(0)``, the share of the kernel machine's
    change done before the loss fell by ``loss_drop`` (module docstring; at least
    :data:`SILENT_AT` is called silent).

    Parameters
    ----------
    t, loss : array_like
        (n,) record times and training losses.
    machines : array_like
        (n, Q) or (n, Q, C) test predictions of kernel regression with each record's kernel
        (:func:`machine_distance`).
    loss_drop : float
        In (0, 1): the fractional loss drop that ends the silent period.

    Returns
    -------
    float
        ``S`` (at most 1); NaN if the loss never fell by ``loss_drop`` or every kernel of the run
        gave the same machine (``m(0) <`` :data:`SAME_MACHINE`).
    """
    m = machine_distance(machines)
    if not m[0] >= SAME_MACHINE:
        return math.nan
    return done_by_drop(t, loss, m, loss_drop)


def summarize(traj) -> dict[str, float]:
    """One run's row of the book's closing table: how silent it was and whose kernel machine it is.

    Compares the trained network's test predictions ``f = traj.test_predictions[-1]`` with kernel
    regression on the same test points using its initial and its final NTK
    (:meth:`~silentlib.train.Trajectory.kernel_predictions`, paper Figure 1(b)). Silent alignment
    (Theorem 1) predicts ``rel_Kinf`` well below ``rel_K0`` whenever ``S >= SILENT_AT``.

    Parameters
    ----------
    traj : Trajectory
        Trained with ``track_ntk=True``, ``x_test`` and ``keep_kernels=True``.

    Returns
    -------
    dict
        ``S``: the silent fraction (:func:`silent_fraction`; NaN if undefined); ``m0``: the
        kernel machine's whole change ``|f_K0 - f_Kinf| / |f_Kinf|`` (near 0: any kernel of the
        run gives the same predictor, and the comparison below cannot discriminate); ``d0``: the
        kernel's whole turn in Frobenius direction ``1 - cos(K_0, K_inf)``; ``rel_K0``,
        ``rel_Kinf``: ``|f_K - f| / |f|`` over all test outputs; ``corr_K0``, ``corr_Kinf``:
        Pearson correlations of ``f_K`` with ``f``; ``rel_lin``: the same relative error for the
        linearized network ``f_0 + k_0^T K_0^{-1} (y - f_0)`` (the lazy, NTK limit, which keeps
        the initial function ``f_0`` that the small-initialization theory drops); ``loss_end``:
        the final loss as a fraction of the initial one.

    Raises
    ------
    ValueError
        If the trajectory lacks tracked kernels or test predictions.
    """
    from .kernels import kernel_regression
    from .stats import correlation

    if traj.machine_predictions is None or traj.K0_test is None:
        raise ValueError("summarize needs a trajectory trained with track_ntk=True, x_test and keep_kernels=True")
    f = np.asarray(traj.test_predictions[-1], dtype=np.float64).ravel()
    out = {"S": traj.silence(), "m0": float(machine_distance(traj.machine_predictions)[0]),
           "d0": float(traj.kernel_direction[0])}
    for name, g in traj.kernel_predictions().items():
        g = np.asarray(g, dtype=np.float64).ravel()
        out["rel_" + name] = float(np.linalg.norm(g - f) / np.linalg.norm(f))
        out["corr_" + name] = correlation(f, g)
    resid = traj.y - traj.predictions[0]
    lin = traj.test_predictions[0] + kernel_regression(traj.K0, traj.K0_test, resid)
    out["rel_lin"] = float(np.linalg.norm(np.ravel(lin) - f) / np.linalg.norm(f))
    out["loss_end"] = float(traj.loss[-1] / traj.loss[0])
    return out
