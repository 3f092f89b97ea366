"""Sweeps over architectures: the paper's Appendix J (Wide-ResNet block sizes and widths).

:func:`plot_architecture_sweep` draws, for several trained networks, the loss and the
alignment against time and the distance of each network from kernel regression with its
initial and its final NTK -- the three quantities the paper's Figures J.2 and J.3 compare
across block sizes b and widening factors k.
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
    kernel regression with K_0 and K_inf, paper Figure 1(e)).
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
        axes[0].plot(t[keep], (loss / loss[0])[keep], color=c, label=label)
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
