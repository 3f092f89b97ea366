"""The book's test of silence against what it predicts (chapter 11).

:func:`plot_silence_evidence` draws each run's silent fraction ``S``
(:func:`silentlib.silence.silent_fraction`) against how close the trained network ended to
kernel regression with its final NTK, relative to its initial one, with the threshold
:data:`silentlib.silence.SILENT_AT` and the bound ``(1 - S) / S`` of the threshold argument.
"""
from __future__ import annotations

import numpy as np

from ..silence import SILENT_AT
from .style import COLORS


def plot_silence_evidence(ax, groups: dict, *, s_min: float = -1.0) -> None:
    """Scatter ``|f_Kinf - f| / |f_K0 - f|`` against ``S`` for groups of runs.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    groups : dict
        ``{label: (S, ratio, style)}``: (n,) silent fractions, (n,) distance ratios
        ``rel_Kinf / rel_K0`` (below 1: closer to K_inf regression) and a dict of
        ``ax.scatter`` keywords (colour, marker, ...).
    s_min : float
        Silent fractions below this are drawn at ``s_min`` (S is unbounded below).
    """
    for label, (S, ratio, style) in groups.items():
        ax.scatter(np.maximum(np.asarray(S, dtype=float), s_min), ratio, label=label, zorder=3,
                   **{"s": 28, **style})
    s = np.linspace(0.34, 0.999, 200)
    ax.plot(s, (1 - s) / s, color=COLORS["theory"], ls="--", lw=1.2,
            label=r"bound $(1 - S)/S$")
    ax.axvline(SILENT_AT, color=COLORS["grey"], ls=":", lw=1.2)
    ax.axhline(1.0, color=COLORS["grey"], lw=0.8)
    ax.set(yscale="log", xlabel=r"silent fraction $S$",
           ylabel=r"$|f_{K_\infty} - f|\,/\,|f_{K_0} - f|$")
