"""Sweeps over runs: the paper's Appendix J (Wide-ResNet block sizes and widths) and the time
course of the kernel norm in its Figure 4(d).

:func:`plot_architecture_sweep` draws, for several trained networks, the loss and the
alignment against time and the distance of each network from kernel regression with its
initial and its final NTK -- the three quantities the paper's Figures J.2 and J.3 compare
across block sizes b and widening factors k. :func:`plot_kernel_norm_growth` draws each run's
kernel norm as a fraction of its final value, so that runs whose kernels end at different
magnitudes (e.g. differently whitened inputs) can be compared by how fast they grow, and
:func:`settle_time` says when such a curve has settled above a level.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .style import COLORS, as_curve, log_time_axis


def plot_architecture_sweep(axes, runs, *, cmap="plasma"):
    """Loss, alignment and kernel-regression errors for a sweep of trained networks.

    axes : three Axes. runs : ``{label: dict}``, each dict with the keys ``t``, ``loss``,
    ``alignment`` ((n,) arrays, e.g. from a :class:`~silentlib.train.Trajectory`) and
    ``rel_err_K0``, ``rel_err_Kinf`` (floats: ``|f_K - f_NN| / |f_NN|`` on test points for
    kernel regression with K_0 and K_inf, paper Figure 1(e)), and optionally ``S`` (float: the
    run's silent fraction, :meth:`~silentlib.train.Trajectory.silence`), shown in the legend.
    (1) loss / loss(0) and (2) alignment A(K_t, y) against time on log axes, one colour per
    run; (3) the two relative errors per run (log scale). Returns the axes.

    Raises ValueError unless there are exactly three axes and at least one run.
    """
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"plot_architecture_sweep needs 3 axes, got {len(axes)}")
    if not runs:
        raise ValueError("plot_architecture_sweep needs at least one run")
    cm = plt.get_cmap(cmap)
    labels = list(runs)
    for i, label in enumerate(labels):
        r, c = runs[label], cm(0.85 * i / max(len(labels) - 1, 1))
        t = as_curve(r["t"], "t")
        keep = t > 0
        loss = as_curve(r["loss"], "loss")
        name = label if r.get("S") is None else f"{label}, S = {r['S']:.2f}"
        axes[0].plot(t[keep], (loss / loss[0])[keep], color=c, label=name)
        axes[1].plot(t[keep], as_curve(r["alignment"], "alignment")[keep], color=c, label=label)
    for ax, title, logy in ((axes[0], "loss / loss(0)", True), (axes[1], "alignment $A(K_t, y)$", False)):
        log_time_axis(ax)
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
    axes[0].legend()
    x = np.arange(len(labels))
    axes[2].plot(x, [runs[k]["rel_err_K0"] for k in labels], "o", color=COLORS["red"],
                 label=r"$K_0$ regression")
    axes[2].plot(x, [runs[k]["rel_err_Kinf"] for k in labels], "s", color=COLORS["alignment"],
                 label=r"$K_\infty$ regression")
    axes[2].set_xticks(x, labels, rotation=30, ha="right")
    axes[2].set_yscale("log")
    axes[2].set_ylabel(r"$|f_K - f_{NN}| / |f_{NN}|$")
    axes[2].set_title("kernel regression vs network")
    axes[2].legend()
    return axes


def settle_time(t, values, level: float) -> float:
    """The time after which a recorded curve stays at or above ``level``.

    Unlike :func:`~silentlib.stats.crossing_time` (the *first* crossing), this is blind to an
    early transient that crosses ``level`` and falls back, e.g. the jump of a kernel norm in the
    first steps of Adam. Linear interpolation between the last record below ``level`` and the next.

    t, values : (n,) arrays (increasing times). Returns ``t[0]`` if no value is below ``level``,
    ``inf`` if the last one is.
    """
    t, v = as_curve(t, "t"), as_curve(values, "values")
    if t.shape != v.shape:
        raise ValueError(f"t and values must have the same shape, got {t.shape} and {v.shape}")
    below = np.flatnonzero(v < level)
    if below.size == 0:
        return float(t[0])
    k = int(below[-1])
    if k == len(v) - 1:
        return float("inf")
    w = (level - v[k]) / (v[k + 1] - v[k])
    return float(t[k] + w * (t[k + 1] - t[k]))


def plot_kernel_norm_growth(ax, runs, *, level=0.5, cmap="viridis"):
    """The kernel norm's time course, ``||K_t||_F / ||K_inf||_F``, one curve per run.

    The paper's Figure 4(d) says the kernel norm "grows more slowly" for anisotropic inputs. The
    final norm itself depends on the input spectrum, so the curves are normalized by their last
    value; the time after which each stays at or above ``level`` of it (:func:`settle_time`) is
    marked with a dot on the dashed line at ``level``.

    ax : one Axes. runs : ``{key: dict}`` with ``t`` and ``kernel_norm`` ((n,) arrays, e.g. a
    :class:`~silentlib.train.Trajectory`'s), keys sortable numbers (e.g. the whitening exponent
    gamma), coloured in sorted order with ``cmap`` as in
    :func:`~silentlib.plotting.geometry.plot_whitening_sweep`. level : float in (0, 1).
    Returns ``{key: settle time}`` (``inf`` where a run ends below ``level``).

    Raises ValueError without runs, with ``level`` outside (0, 1) or a non-positive final norm.
    """
    if not runs:
        raise ValueError("plot_kernel_norm_growth needs at least one run")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    keys = sorted(runs)
    cm = plt.get_cmap(cmap)
    times = {}
    for i, k in enumerate(keys):
        t = as_curve(runs[k]["t"], "t")
        kn = as_curve(runs[k]["kernel_norm"], "kernel_norm")
        if not kn[-1] > 0:
            raise ValueError(f"run {k!r}: the final kernel norm must be positive, got {kn[-1]}")
        c, frac, keep = cm(0.9 * i / max(len(keys) - 1, 1)), kn / kn[-1], t > 0
        lab = rf"$\gamma = {k:g}$" if isinstance(k, (int, float)) else str(k)
        ax.plot(t[keep], frac[keep], color=c, label=lab)
        times[k] = settle_time(t, frac, level)
        if np.isfinite(times[k]) and times[k] > 0:
            ax.plot([times[k]], [level], "o", color=c, markersize=5)
    ax.axhline(level, color="0.5", linestyle="--", linewidth=0.8)
    log_time_axis(ax)
    ax.set_yscale("log")
    ax.set_title(r"(d) $\|K_t\|_F / \|K_\infty\|_F$")
    return times
