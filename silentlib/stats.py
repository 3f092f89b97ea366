"""Statistics of measured curves: Pearson correlation, power-law fits and crossing times.

The book compares a trained network's predictions with kernel regression by their Pearson
:func:`correlation` (paper, Figure 1(c, e)), and reads the exponents of scaling laws
(half-loss times against sigma, errors against sigma) off :func:`fit_power_law`.
"""
from __future__ import annotations

import math

import numpy as np

from .config import as_float64


def correlation(a, b) -> float:
    """Pearson correlation of two arrays of the same size (flattened).

    Raises ``ValueError`` for arrays of different sizes, fewer than two values, non-finite
    entries or a constant array (for which the correlation is undefined).
    """
    a, b = as_float64(a, "a").ravel(), as_float64(b, "b").ravel()
    if a.shape != b.shape:
        raise ValueError(f"correlation needs arrays of the same size, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("correlation needs at least two values")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    if den == 0:
        raise ValueError("correlation is undefined for a constant array")
    return float(a @ b / den)


def fit_power_law(x, y):
    """Least-squares fit of log y = slope * log x + intercept. Returns (slope, intercept) as floats.

    ``x``, ``y``: at least two positive values each, of the same size (``ValueError`` otherwise).
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2 or not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("fit_power_law needs at least two positive (x, y) pairs of equal length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("fit_power_law needs finite values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def crossing_time(t, values, level: float, *, decreasing: bool = False) -> float:
    """First time a recorded curve crosses ``level``, interpolated linearly between records.

    Parameters
    ----------
    t : array_like
        (n,) increasing record times (e.g. :attr:`~silentlib.train.Trajectory.t`).
    values : array_like
        (n,) the curve at those times (e.g. :attr:`~silentlib.train.Trajectory.alignment`).
    level : float
        The level to cross.
    decreasing : bool
        True looks for the values falling to ``<= level``, False for them rising to ``>= level``.

    Returns
    -------
    float
        The interpolated crossing time; ``t[0]`` if the first value already crosses,
        ``inf`` if the curve never does.
    """
    t, v = np.asarray(t, float), np.asarray(values, float)
    hit = v <= level if decreasing else v >= level
    if not hit.any():
        return math.inf
    k = int(np.argmax(hit))
    if k == 0:
        return float(t[0])
    w = (level - v[k - 1]) / (v[k] - v[k - 1])
    return float(t[k - 1] + w * (t[k] - t[k - 1]))
