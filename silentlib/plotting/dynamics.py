"""Training dynamics against time: loss, kernel norm and alignment, simulation against theory,
class means, the modes of a multi-output network, the scale of a deep linear network.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..config import as_float64
from .style import COLORS, as_curve, log_time_axis, positive_time

#: Colours of the modes of a multi-output network, mode 1 first.
MODE_COLORS = [COLORS[k] for k in ("red", "purple", "brown", "pink", "olive", "cyan", "grey")]


def plot_dynamics(ax, t, *, loss=None, alignment=None, kernel_norm=None, normalize=True,
                  log_time=True, label_suffix="", theory_alignment=None, **kw):
    """Draw training dynamics against time on ``ax`` (the paper's Figure 1 panels).

    Parameters
    ----------
    ax
        A matplotlib Axes.
    t
        (n,) training times, starting at 0 (``Trajectory.t``).
    loss
        (n,) training loss; with ``normalize`` divided by its value at t = 0
        (so it starts at 1).
    alignment
        (n,) kernel-target alignment, drawn as is.
    kernel_norm
        (n,) ``||K_t||_F``; with ``normalize`` divided by its final value
        (so it ends at 1).
    normalize
        Normalize loss and kernel norm as above.
    log_time
        Log-scale the time axis (t = 0 is then not drawn).
    label_suffix
        Appended to every legend label (e.g. " (depth 3)").
    theory_alignment
        if given, a dashed horizontal line at this alignment
        (e.g. :func:`silentlib.theory.final_alignment`).
    **kw
        Extra keyword arguments for every ``ax.plot`` call (e.g. ``alpha``,
        ``linestyle``); a ``color`` here overrides the house colours.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.
    """
    t = as_curve(t, "t")
    loss, alignment, kernel_norm = (as_curve(loss, "loss"), as_curve(alignment, "alignment"),
                                    as_curve(kernel_norm, "kernel_norm"))
    for name, c in (("loss", loss), ("alignment", alignment), ("kernel_norm", kernel_norm)):
        if c is not None and c.shape != t.shape:
            raise ValueError(f"{name} has shape {c.shape} but t has shape {t.shape}")
    if loss is None and alignment is None and kernel_norm is None:
        raise ValueError("plot_dynamics needs at least one of loss, alignment, kernel_norm")
    if normalize:
        if loss is not None:
            loss = loss / loss[0]
        if kernel_norm is not None:
            kernel_norm = kernel_norm / kernel_norm[-1]
    if log_time:
        t, loss, alignment, kernel_norm = positive_time(t, loss, alignment, kernel_norm)
    names = {"loss": "loss" + (" / loss(0)" if normalize else ""),
             "kernel_norm": r"$\|K\|_F$" + (r" / final" if normalize else ""),
             "alignment": "alignment $A(K, y)$"}
    for key, curve in (("loss", loss), ("kernel_norm", kernel_norm), ("alignment", alignment)):
        if curve is None:
            continue
        style = {"color": COLORS[key], **kw}
        ax.plot(t, curve, label=names[key] + label_suffix, **style)
    if theory_alignment is not None:
        ax.axhline(float(theory_alignment), color=COLORS["alignment"], linestyle="--",
                   linewidth=1.3, label="theory alignment" + label_suffix)
    if log_time:
        log_time_axis(ax)
    else:
        ax.set_xlabel("training time $t$")
    ax.legend()
    return ax


def plot_trajectory(traj, ax=None, **kw):
    """:func:`plot_dynamics` of a :class:`~silentlib.train.Trajectory` (loss, alignment and,
    when the kernel was tracked, kernel norm). Creates a figure if ``ax`` is None. Returns ax."""
    if ax is None:
        _, ax = plt.subplots()
    tracked = np.all(np.isfinite(traj.alignment))
    return plot_dynamics(ax, traj.t, loss=traj.loss,
                         alignment=traj.alignment if tracked else None,
                         kernel_norm=traj.kernel_norm if tracked else None, **kw)


def plot_sim_vs_theory(ax, t, sim=None, theory=None, *, color=None, label=None, theory_t=None,
                       log_time=True, log_y=False, **kw):
    """One simulated curve (solid) and its theory (dashed, same colour) against time.

    ``theory_t`` is the time grid of ``theory`` (default: ``t``). On a log time axis
    points at t <= 0 are dropped. Returns ax.
    """
    t = as_curve(t, "t")
    tt = t if theory_t is None else as_curve(theory_t, "theory_t")
    if sim is not None:
        ts, ys = positive_time(t, as_curve(sim, "sim")) if log_time else (t, as_curve(sim, "sim"))
        line, = ax.plot(ts, ys, color=color, label=label, **kw)
        color = line.get_color()
    if theory is not None:
        tth, yth = positive_time(tt, as_curve(theory, "theory")) if log_time else (tt, as_curve(theory, "theory"))
        ax.plot(tth, yth, color=color, linestyle="--", linewidth=1.4,
                label=None if sim is not None else label)
    if log_time:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    return ax


def plot_class_means(ax, t, predictions, y, *, labels=("targets $+1$", "targets $-1$"), log_time=False):
    """Mean network output over the training points of each class against time.

    ``predictions``: (n, P) outputs on the training set (``Trajectory.predictions``); ``y``: (P,)
    targets +-1. Draws the two class means and dashed lines at +-1. Returns ax."""
    t = as_curve(t, "t")
    F = np.asarray(predictions, dtype=np.float64)
    yv = as_curve(y, "y")
    if F.ndim != 2 or F.shape != (t.size, yv.size):
        raise ValueError(f"predictions must have shape ({t.size}, {yv.size}), got {F.shape}")
    pos = yv > 0
    if pos.all() or not pos.any():
        raise ValueError("y must contain both classes (+1 and -1)")
    curves = (F[:, pos].mean(axis=1), F[:, ~pos].mean(axis=1))
    if log_time:
        t, *curves = positive_time(t, *curves)
    for curve, lab, col in zip(curves, labels, (COLORS["red"], COLORS["purple"])):
        ax.plot(t, curve, color=col, label="mean output, " + lab)
    for level in (1.0, -1.0):
        ax.axhline(level, color=COLORS["theory"], linestyle=":", linewidth=1.0)
    if log_time:
        log_time_axis(ax)
    else:
        ax.set_xlabel("training time $t$")
    ax.set_ylabel("network output")
    ax.legend()
    return ax


def plot_modes(ax, t, strengths, singular_values, *, theory_t=None, theory=None, loss=None,
               mode_times=None, log_time=False, labels=None):
    """Mode-by-mode learning of a multi-output network (chapter 5, the paper's Section 4.2).

    Parameters
    ----------
    ax
        A matplotlib Axes.
    t
        (n,) training times.
    strengths
        (n, K) measured mode strengths z_a^T (A W) v_a, drawn divided by
        ``singular_values`` (so each rises from ~0 to 1), solid.
    singular_values
        (K,) the teacher's s_a.
    theory_t, theory
        Optional (m,) times and (m, K) predicted strengths (e.g.
        :func:`silentlib.theory.u_squared` per mode), drawn dashed, also divided by s_a.
    loss
        Optional (n,) training loss, drawn normalized to 1 at t = 0 (blue).
    mode_times
        Optional (K,) predicted half-point times, drawn as dotted vertical lines.
    log_time
        Log-scale the time axis (t = 0 is then dropped).
    labels
        Optional K legend labels (default "mode a (s = ...)").

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.
    """
    t = as_curve(t, "t")
    sv = np.asarray(singular_values, dtype=np.float64).ravel()
    S = np.asarray(strengths, dtype=np.float64)
    if S.ndim != 2 or S.shape != (t.size, sv.size):
        raise ValueError(f"strengths must have shape ({t.size}, {sv.size}), got {S.shape}")
    keep = t > 0 if log_time else np.ones_like(t, dtype=bool)
    colors = MODE_COLORS
    labels = labels or [f"mode {a + 1} ($s_{a + 1}$ = {s:.3g})" for a, s in enumerate(sv)]
    for a in range(sv.size):
        ax.plot(t[keep], S[keep, a] / sv[a], color=colors[a % len(colors)], label=labels[a])
    if theory is not None:
        tt = as_curve(theory_t, "theory_t")
        th = np.asarray(theory, dtype=np.float64)
        if th.shape != (tt.size, sv.size):
            raise ValueError(f"theory must have shape ({tt.size}, {sv.size}), got {th.shape}")
        kt = tt > 0 if log_time else np.ones_like(tt, dtype=bool)
        for a in range(sv.size):
            ax.plot(tt[kt], th[kt, a] / sv[a], color=COLORS["theory"], linestyle="--", linewidth=1.2,
                    label="theory (eq. 8 per mode)" if a == 0 else None)
    if mode_times is not None:
        for a, ta in enumerate(np.ravel(mode_times)):
            ax.axvline(ta, color=colors[a % len(colors)], linestyle=":", linewidth=1.0)
    if loss is not None:
        loss = as_curve(loss, "loss")
        ax.plot(t[keep], loss[keep] / loss[0], color=COLORS["loss"], label="loss / loss(0)")
    if log_time:
        log_time_axis(ax)
    else:
        ax.set_xlabel("training time $t$")
    ax.set_ylabel(r"mode strength / $s_\alpha$")
    ax.legend(fontsize=9)
    return ax


def plot_theory_modes(ax, t, u_squared, singular_values, *, mode_times=None):
    """Theory only: each mode's eq.-8 logistic u_a(t)^2 / s_a and the loss they imply.

    ``t`` (n,) times; ``u_squared`` (n, K) the modes' u_a(t)^2 (e.g.
    :func:`silentlib.theory.u_squared` with s = s_a); ``singular_values`` (K,) the s_a;
    ``mode_times`` optional (K,) half-point times (:func:`silentlib.theory.mode_times`),
    drawn as dotted lines. The loss on whitened data, sum_a (s_a - u_a^2)^2 / sum_a s_a^2,
    is drawn in blue. Returns ``ax``.
    """
    t = as_curve(t, "t")
    sv = as_curve(singular_values, "singular_values")
    U = as_float64(u_squared, "u_squared", ndim=2)
    if U.shape != (t.size, sv.size):
        raise ValueError(f"u_squared must have shape ({t.size}, {sv.size}), got {U.shape}")
    for a, s in enumerate(sv):
        color = MODE_COLORS[a % len(MODE_COLORS)]
        ax.plot(t, U[:, a] / s, color=color, label=f"$s_{a + 1}$ = {s:.3g}")
        if mode_times is not None:
            ax.axvline(np.ravel(mode_times)[a], color=color, linestyle=":", linewidth=1.0)
    ax.plot(t, np.sum((sv - U) ** 2, axis=1) / np.sum(sv ** 2), color=COLORS["loss"], label="loss / loss(0)")
    ax.set_xlabel("training time $t$")
    ax.set_ylabel(r"$u_\alpha(t)^2 / s_\alpha$")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=9)
    return ax


def plot_deep_scale(ax, t, c, *, s, c0, t_half=None, color=None, label=None, show_c=True):
    """Theory of a balanced depth-L linear net: normalized loss (solid) and c(t)/s (dashed).

    ``t`` (n,) positive times (a log axis); ``c`` (n,) the scale c(t) = u(t)^L there (e.g.
    :func:`silentlib.theory.deep_linear_scale`, which solves dc/dt = L c^{2-2/L} (s - c));
    ``c0`` its initial value, so that the loss is (s - c)^2 / (s - c0)^2; ``t_half`` (e.g.
    :func:`silentlib.theory.half_loss_time`) is marked with a dotted vertical line. Returns ``t_half``.
    """
    t, c = as_curve(t, "t"), as_curve(c, "c")
    line, = ax.plot(t, (s - c) ** 2 / (s - c0) ** 2, color=color, label=label)
    color = line.get_color()
    if show_c:
        ax.plot(t, c / s, color=color, linestyle="--", linewidth=1.3)
    if t_half is not None:
        ax.axvline(t_half, color=color, linestyle=":", linewidth=1.0)
    log_time_axis(ax)
    ax.set_ylim(-0.03, 1.03)
    return t_half
