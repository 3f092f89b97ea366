"""Scaling laws and their fits: characteristic times and errors against the initial scale sigma,
half-loss times of the scale ODE, the final alignment against depth.
"""
from __future__ import annotations

import matplotlib.ticker
import numpy as np

from ..stats import fit_power_law
from .style import CYCLE, COLORS, as_curve


def plot_time_scaling(ax, x, t_half, t_align=None, *, slope=None, intercept=None, fit=None,
                      xlabel=r"$\log(1/\sigma^2)$"):
    """Half-loss times (and alignment times) against log(1/sigma^2), with a fitted line.

    ``fit`` = (slope, intercept) of a fitted line drawn solid grey; ``slope`` and
    ``intercept`` a reference line drawn dashed (e.g. the theory's 1/(2s)). Returns ax.
    """
    x = as_curve(x, "x")
    ax.plot(x, as_curve(t_half, "t_half"), "o", color=COLORS["loss"], label=r"half-loss time $t_{1/2}$")
    if t_align is not None:
        ax.plot(x, as_curve(t_align, "t_align"), "s", color=COLORS["alignment"], label=r"alignment time $t_{\rm align}$")
    xx = np.linspace(0, x.max() * 1.05, 50)
    if fit is not None:
        ax.plot(xx, fit[0] * xx + fit[1], color=COLORS["grey"], linewidth=1.0,
                label=f"fit: slope {fit[0]:.3f}")
    if slope is not None:
        ax.plot(xx, slope * xx + (intercept or 0.0), color=COLORS["theory"], linestyle="--", linewidth=1.2,
                label=f"theory: slope {slope:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("time")
    ax.legend()
    return ax


def plot_error_scaling(ax, sigmas, errors, *, label, color=None, marker="o", fit=True):
    """Log-log plot of an error against sigma, with its fitted power law (dashed).

    ``sigmas``, ``errors``: positive arrays of equal length. With ``fit``, the legend label
    carries the fitted slope. Returns the slope (or None without ``fit``)."""
    s, e = as_curve(sigmas, "sigmas"), as_curve(errors, "errors")
    color = color or COLORS["alignment"]
    slope = None
    if fit:
        slope, b = fit_power_law(s, e)
        grid = np.geomspace(s.min(), s.max(), 50)
        ax.plot(grid, np.exp(b) * grid ** slope, color=color, linestyle="--", linewidth=1.2)
        label = f"{label} (slope {slope:.2f})"
    ax.plot(s, e, marker=marker, linestyle="none", color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"initial scale $\sigma$")
    ax.legend()
    return slope


def plot_half_loss_times(ax, sigma2, times, *, colors=None):
    """Half-loss times against sigma^2 (log-log): the scale ODE (lines) and its asymptotic law (circles).

    ``sigma2`` (n,) initial variances; ``times`` {L: (exact (n,), asymptotic (n,))}, e.g.
    :func:`silentlib.theory.half_loss_time` with c0 = sigma^L and
    :func:`silentlib.theory.half_loss_time_asymptotic` with u0 = sigma (the sigma^{-L+2} law
    for L >= 3, the log(1/sigma^2) law for L = 2). The circles are drawn at every other
    sigma^2, so that the lines stay visible where both agree. Returns ``ax``.
    """
    sigma2 = as_curve(sigma2, "sigma2")
    colors = list(colors) if colors is not None else CYCLE
    for i, (L, (exact, asym)) in enumerate(times.items()):
        col = colors[i % len(colors)]
        ax.plot(sigma2, as_curve(exact, f"times[{L}][0]"), color=col, label=f"$L = {L}$")
        ax.plot(sigma2[::2], as_curve(asym, f"times[{L}][1]")[::2], color=col, linestyle="none", marker="o",
                markersize=6, markerfacecolor="none", markeredgewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"initial variance $\sigma^2$")
    ax.set_ylabel(r"half-loss time $t_{1/2}$")
    ax.legend(title="ODE (lines), asymptotic law (circles)")
    return ax


def plot_time_power_law(ax, sigma, series, *, theory_slope=None):
    """Characteristic times against sigma (log-log) with a fitted power law for each series.

    ``series``: {label: (times, color, marker)}. Each series is fitted with
    :func:`~silentlib.stats.fit_power_law` (slope in the legend, fit drawn dashed). ``theory_slope``: a grey
    reference line with that slope through the first series' geometric centre.
    Returns {label: slope}.
    """
    sig = as_curve(sigma, "sigma")
    grid = np.geomspace(sig.min(), sig.max(), 50)
    slopes = {}
    for label, (times, color, marker) in series.items():
        tt = as_curve(times, label)
        slope, b = fit_power_law(sig, tt)
        slopes[label] = slope
        ax.plot(sig, tt, marker=marker, linestyle="none", color=color, label=f"{label} (slope {slope:.2f})")
        ax.plot(grid, np.exp(b) * grid ** slope, color=color, linestyle="--", linewidth=1.1)
    if theory_slope is not None:
        first = as_curve(next(iter(series.values()))[0], "times")
        x0, y0 = np.exp(np.mean(np.log(sig))), np.exp(np.mean(np.log(first)))
        ax.plot(grid, 1.6 * y0 * (grid / x0) ** theory_slope, color=COLORS["theory"], linewidth=1.0,
                linestyle=":", label=f"slope {theory_slope:g} (theory)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # sigma often spans less than a decade: label 1, 2, 5 x 10^k plainly, and no minor labels (they collide)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(r"initial scale $\sigma$")
    ax.set_ylabel("time")
    ax.legend()
    return slopes


def plot_depth_alignment(ax, depths, measured, theory_depths, theory, *, rank):
    """Final kernel alignment against depth: the closed form L / sqrt(L^2 + r - 1) and measured points.

    ``depths`` (k,) and ``measured`` (k,): the alignments of trained networks;
    ``theory_depths`` (m,) and ``theory`` (m,): the closed form there
    (:func:`silentlib.theory.final_alignment` with ``rank`` r, named in the legend). Returns ``ax``.
    """
    ax.plot(np.asarray(theory_depths), as_curve(theory, "theory"), color=COLORS["theory"],
            linestyle="--", marker=".", label=rf"$L/\sqrt{{L^2 + r - 1}}$, $r = {rank}$")
    ax.plot(np.asarray(depths), as_curve(measured, "measured"), "o", color=COLORS["alignment"], markersize=8,
            label=r"trained network, $A(K_\infty, y)$")
    ax.set_xlabel("depth $L$")
    ax.set_ylabel(r"final alignment $A(K_\infty, y)$")
    ax.set_ylim(0, 1)
    ax.legend()
    return ax
