"""The house style: colours, rc parameters, the scale note and the time axis.

The colours follow the paper's Figure 1: training loss in blue, kernel norm in orange,
kernel-target alignment in green (:data:`COLORS`). Importing :mod:`silentlib.plotting`
applies :func:`use_style`.
"""
from __future__ import annotations

import matplotlib
import matplotlib.layout_engine
from cycler import cycler

from ..config import as_float64, device_name, scale, seed

#: The book's colours by role (loss blue, kernel norm orange, alignment green, as in the paper's
#: Figure 1), then named extra colours; also the order of matplotlib's colour cycle.
COLORS = {
    "loss": "#1f77b4",          # blue, as in the paper's Figure 1
    "kernel_norm": "#ff7f0e",   # orange
    "alignment": "#2ca02c",     # green
    "theory": "#444444",        # dark grey, dashed theory curves and lines
    "red": "#d62728",
    "purple": "#9467bd",
    "brown": "#8c564b",
    "pink": "#e377c2",
    "grey": "#7f7f7f",
    "olive": "#bcbd22",
    "cyan": "#17becf",
}

#: The order of the colour cycle (the role colours loss, kernel norm, alignment, then the others).
CYCLE = [COLORS[k] for k in ("loss", "kernel_norm", "alignment", "red", "purple",
                              "brown", "pink", "grey", "olive", "cyan")]

#: The widest figure, in inches. The book's text column is 672 px, so a figure W inches wide
#: shows F-point text at 9.33 F / W px, and every font below (>= 9 pt) stays at >= 9 px there.
FIGURE_MAX_WIDTH = 9.0

#: matplotlib rc parameters of the house style (applied by :func:`use_style`).
STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "lines.linewidth": 2.0,
    "lines.markersize": 5,
    "axes.prop_cycle": cycler(color=CYCLE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "figure.constrained_layout.use": True,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the house style to matplotlib's global rc parameters (idempotent)."""
    matplotlib.rcParams.update(STYLE)


def as_curve(a, name):
    """A plotted curve as a (n,) float64 array (None stays None); NaN and inf are allowed."""
    return None if a is None else as_float64(a, name, ndim=1, finite=False)


def scale_note(fig, *, loc="lower right"):
    """Mark ``fig`` with the scale that made it, in small grey text in a corner.

    The text reads "fast scale (CPU)" or "paper scale (NVIDIA H100 ...)" after
    :func:`~silentlib.config.scale` and :func:`~silentlib.config.device`, followed by ", seed N" when
    :func:`~silentlib.config.seed` is not 0. ``loc`` is one of
    "lower right", "lower left", "upper right", "upper left". Returns the Text.
    """
    label = "paper scale" if scale() == "paper" else "fast scale"
    text = f"{label} ({device_name()})" + (f", seed {seed()}" if seed() else "")
    x = 0.995 if "right" in loc else 0.005
    y = 0.005 if "lower" in loc else 0.995
    engine = fig.get_layout_engine()
    if isinstance(engine, matplotlib.layout_engine.ConstrainedLayoutEngine):
        # keep a strip of 0.22 inch free for the note, so that no axis label runs into it
        strip = 0.22 / fig.get_figheight()
        engine.set(rect=(0, strip, 1, 1 - strip) if "lower" in loc else (0, 0, 1, 1 - strip))
    return fig.text(x, y, text, fontsize=9, color="0.55",
                    ha="right" if "right" in loc else "left",
                    va="bottom" if "lower" in loc else "top")


def log_time_axis(ax, *, label="training time $t$"):
    """Log-scale the x axis of ``ax`` and label it. Returns ax.

    A point at t = 0 cannot appear on a log axis; :func:`~silentlib.plotting.dynamics.plot_dynamics`
    drops it
    (loss is still normalized by its t = 0 value before dropping)."""
    ax.set_xscale("log")
    if label:
        ax.set_xlabel(label)
    return ax


def positive_time(t, *curves):
    """Drop t <= 0 (for a log axis); returns the kept t and the curves cut alike."""
    keep = t > 0
    return (t[keep],) + tuple(None if c is None else c[keep] for c in curves)
