"""The book's house style for figures (matplotlib; safe under the Agg backend).

Importing this module applies :func:`use_style`. The colours follow the
paper's Figure 1: training loss in blue, kernel norm in orange, kernel-target
alignment in green (:data:`COLORS`).

Main functions
--------------
* :func:`plot_dynamics` -- loss, kernel norm and alignment against training time
  on one axis (the paper's Figure 1 panels).
* :func:`plot_trajectory` -- the same, read from a :class:`~silentlib.train.Trajectory`.
* :func:`plot_prediction_scatter` -- kernel-regression predictions against the
  network's on test points, each with its Pearson correlation (Figure 1(c, e)).
* :func:`scale_note` -- marks a figure with the scale (fast / paper) and device
  that made it.
* :func:`correlation`, :func:`log_time_axis` -- small helpers.

Chapter authors: add chapter-specific functions only at the END of this file,
in a section headed ``# --- chapter N ---``.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.layout_engine
import matplotlib.ticker
import numpy as np
from cycler import cycler

from .config import device, scale, seed

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

_CYCLE = [COLORS[k] for k in ("loss", "kernel_norm", "alignment", "red", "purple",
                              "brown", "pink", "grey", "olive", "cyan")]

#: The widest figure, in inches. The book's text column is 672 px, so a figure W inches wide shows
#: F-point text at 9.33 F / W px, and every font below (9 pt or more) stays at 9 px or more there.
FIGURE_MAX_WIDTH = 9.0

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
    "axes.prop_cycle": cycler(color=_CYCLE),
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


use_style()


def _np1(a, name):
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    return a


def _device_name() -> str:
    dev = device()
    if dev.type == "cuda":
        import torch
        return torch.cuda.get_device_name(dev)
    return "CPU"


def scale_note(fig, *, loc="lower right"):
    """Mark ``fig`` with the scale that made it, in small grey text in a corner.

    The text reads "fast scale (CPU)" or "paper scale (NVIDIA H100 ...)" after
    :func:`~silentlib.config.scale` and :func:`~silentlib.config.device`, followed by ", seed N" when
    :func:`~silentlib.config.seed` is not 0. ``loc`` is one of
    "lower right", "lower left", "upper right", "upper left". Returns the Text.
    """
    label = "paper scale" if scale() == "paper" else "fast scale"
    text = f"{label} ({_device_name()})" + (f", seed {seed()}" if seed() else "")
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

    A point at t = 0 cannot appear on a log axis; :func:`plot_dynamics` drops it
    (loss is still normalized by its t = 0 value before dropping)."""
    ax.set_xscale("log")
    if label:
        ax.set_xlabel(label)
    return ax


def _positive_time(t, *curves):
    """Drop t <= 0 (for a log axis); returns the kept t and the curves cut alike."""
    keep = t > 0
    return (t[keep],) + tuple(None if c is None else c[keep] for c in curves)


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

    Returns ``ax``.
    """
    t = _np1(t, "t")
    loss, alignment, kernel_norm = (_np1(loss, "loss"), _np1(alignment, "alignment"),
                                    _np1(kernel_norm, "kernel_norm"))
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
        t, loss, alignment, kernel_norm = _positive_time(t, loss, alignment, kernel_norm)
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


def correlation(a, b) -> float:
    """Pearson correlation of two arrays of the same shape (flattened)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"correlation needs arrays of the same size, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("correlation needs at least two values")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    if den == 0:
        raise ValueError("correlation is undefined for a constant array")
    return float(a @ b / den)


def plot_prediction_scatter(ax, nn_pred, kernel_preds, *, colors=None, s=12, alpha=0.6,
                            xlabel="network prediction", ylabel="kernel regression prediction"):
    """Scatter kernel-regression predictions against the trained network's on test points.

    Parameters
    ----------
    ax
        A matplotlib Axes.
    nn_pred
        (Q,) or (Q, C) network outputs on the test points (flattened).
    kernel_preds
        {label: (Q,) or (Q, C) predictions}, e.g.
        ``{"$K_0$": kernel_regression(K0, K0_test, y), "$K_\\infty$": ...}``.
    colors
        Optional list of colours, one per entry of ``kernel_preds``.

    Each entry's legend label carries its Pearson correlation with the network,
    and a dashed identity line y = x is drawn. Returns ``{label: correlation}``.
    """
    nn = np.asarray(nn_pred.detach().cpu() if hasattr(nn_pred, "detach") else nn_pred,
                    dtype=np.float64).ravel()
    if not kernel_preds:
        raise ValueError("kernel_preds must contain at least one prediction")
    default = [COLORS["red"], COLORS["loss"], COLORS["alignment"], COLORS["purple"], COLORS["brown"]]
    colors = list(colors) if colors is not None else default
    out, lo, hi = {}, nn.min(), nn.max()
    for i, (label, pred) in enumerate(kernel_preds.items()):
        p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred, dtype=np.float64).ravel()
        if p.shape != nn.shape:
            raise ValueError(f"prediction {label!r} has {p.size} values but the network's has {nn.size}")
        r = correlation(nn, p)
        out[label] = r
        ax.scatter(nn, p, s=s, alpha=alpha, color=colors[i % len(colors)],
                   label=f"{label} (r = {r:.3f})", edgecolors="none")
        lo, hi = min(lo, p.min()), max(hi, p.max())
    pad = 0.03 * (hi - lo if hi > lo else 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=COLORS["theory"],
            linestyle="--", linewidth=1.0, label="identity")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return out


# --- chapter 3 ---

def plot_rkhs_level_sets(ax, M, *, x_train, y_train, w_path=None, lim=1.6, levels=(0.25, 1.0, 2.25, 4.0),
                         title=None, n_grid=201):
    """Level sets of the RKHS norm of linear functions f(x) = w.x for the kernel K = x^T M x' (D = 2).

    For K(x, x') = x^T M x' the RKHS norm of f(x) = w.x is ||f||^2 = w^T M^{-1} w. The
    contours are drawn for w^T M^{-1} w * lambda_bar (lambda_bar = mean eigenvalue of M), so
    that only the *shape* of the kernel matters and panels at very different kernel scales
    can be compared. Also drawn: the set of interpolating w (X w = y; a line when P = 1) in
    black, and ``w_path`` ((n, 2) positions of the network's function W^T a over time), its
    last point as a blue dot. Returns ax.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 2):
        raise ValueError(f"M must be 2 x 2, got shape {M.shape}")
    X = np.atleast_2d(np.asarray(x_train, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y_train, dtype=np.float64))
    g = np.linspace(-lim, lim, n_grid)
    W1, W2 = np.meshgrid(g, g)
    Minv = np.linalg.inv(M) * np.trace(M) / 2
    norm2 = Minv[0, 0] * W1 ** 2 + 2 * Minv[0, 1] * W1 * W2 + Minv[1, 1] * W2 ** 2
    ax.contour(W1, W2, norm2, levels=list(levels), colors=[COLORS["alignment"]], linewidths=1.2)
    for x, yy in zip(X, y):       # the line x . w = y
        if abs(x[1]) >= abs(x[0]):
            ax.plot(g, (yy - x[0] * g) / x[1], color="k", linewidth=1.5)
        else:
            ax.plot((yy - x[1] * g) / x[0], g, color="k", linewidth=1.5)
    if w_path is not None:
        w_path = np.asarray(w_path, dtype=np.float64)
        ax.plot(w_path[:, 0], w_path[:, 1], color=COLORS["loss"], linewidth=1.0, alpha=0.6)
        ax.plot(w_path[-1, 0], w_path[-1, 1], "o", color=COLORS["loss"], markersize=8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    if title:
        ax.set_title(title)
    return ax


def plot_sim_vs_theory(ax, t, sim=None, theory=None, *, color=None, label=None, theory_t=None,
                       log_time=True, log_y=False, **kw):
    """One simulated curve (solid) and its theory (dashed, same colour) against time.

    ``theory_t`` is the time grid of ``theory`` (default: ``t``). On a log time axis
    points at t <= 0 are dropped. Returns ax.
    """
    t = _np1(t, "t")
    tt = t if theory_t is None else _np1(theory_t, "theory_t")
    if sim is not None:
        ts, ys = _positive_time(t, _np1(sim, "sim")) if log_time else (t, _np1(sim, "sim"))
        line, = ax.plot(ts, ys, color=color, label=label, **kw)
        color = line.get_color()
    if theory is not None:
        tth, yth = _positive_time(tt, _np1(theory, "theory")) if log_time else (tt, _np1(theory, "theory"))
        ax.plot(tth, yth, color=color, linestyle="--", linewidth=1.4,
                label=None if sim is not None else label)
    if log_time:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    return ax


def plot_time_scaling(ax, x, t_half, t_align=None, *, slope=None, intercept=None, fit=None,
                      xlabel=r"$\log(1/\sigma^2)$"):
    """Half-loss times (and alignment times) against log(1/sigma^2), with a fitted line.

    ``fit`` = (slope, intercept) of a fitted line drawn solid grey; ``slope`` and
    ``intercept`` a reference line drawn dashed (e.g. the theory's 1/(2s)). Returns ax.
    """
    x = _np1(x, "x")
    ax.plot(x, _np1(t_half, "t_half"), "o", color=COLORS["loss"], label=r"half-loss time $t_{1/2}$")
    if t_align is not None:
        ax.plot(x, _np1(t_align, "t_align"), "s", color=COLORS["alignment"], label=r"alignment time $t_{\rm align}$")
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


# --- chapter 5 ---

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

    Returns ``ax``.
    """
    t = _np1(t, "t")
    sv = np.asarray(singular_values, dtype=np.float64).ravel()
    S = np.asarray(strengths, dtype=np.float64)
    if S.ndim != 2 or S.shape != (t.size, sv.size):
        raise ValueError(f"strengths must have shape ({t.size}, {sv.size}), got {S.shape}")
    keep = t > 0 if log_time else np.ones_like(t, dtype=bool)
    colors = [COLORS[k] for k in ("red", "purple", "brown", "pink", "olive", "cyan", "grey")]
    labels = labels or [f"mode {a + 1} ($s_{a + 1}$ = {s:.3g})" for a, s in enumerate(sv)]
    for a in range(sv.size):
        ax.plot(t[keep], S[keep, a] / sv[a], color=colors[a % len(colors)], label=labels[a])
    if theory is not None:
        tt = _np1(theory_t, "theory_t")
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
        loss = _np1(loss, "loss")
        ax.plot(t[keep], loss[keep] / loss[0], color=COLORS["loss"], label="loss / loss(0)")
    if log_time:
        log_time_axis(ax)
    else:
        ax.set_xlabel("training time $t$")
    ax.set_ylabel(r"mode strength / $s_\alpha$")
    ax.legend(fontsize=9)
    return ax


def plot_theory_modes(ax, singular_values, u0sq, *, t_max=None, n=400):
    """Theory only: each mode's eq.-8 logistic u_a(t)^2 / s_a and the loss they imply.

    Mode a follows u_squared(t, s_a, u0sq) (:func:`silentlib.theory.u_squared`) and
    crosses 1/2 at t_a = log(s_a/u0^2 - 1)/(2 s_a) (dotted lines); the loss on whitened
    data is sum_a (s_a - u_a^2)^2 / sum_a s_a^2 (blue). ``t_max`` defaults to 1.6 times the
    slowest mode's time. Returns ``ax``.
    """
    from . import theory
    sv = np.sort(np.asarray(singular_values, dtype=np.float64).ravel())[::-1]
    times = np.atleast_1d(theory.mode_times(sv, u0sq))
    t = np.linspace(0.0, t_max if t_max is not None else 1.6 * times.max(), n)
    U = np.stack([theory.u_squared(t, s, u0sq) for s in sv], axis=1)
    colors = [COLORS[k] for k in ("red", "purple", "brown", "pink", "olive", "cyan", "grey")]
    for a, s in enumerate(sv):
        ax.plot(t, U[:, a] / s, color=colors[a % len(colors)], label=f"$s_{a + 1}$ = {s:.3g}")
        ax.axvline(times[a], color=colors[a % len(colors)], linestyle=":", linewidth=1.0)
    ax.plot(t, np.sum((sv - U) ** 2, axis=1) / np.sum(sv ** 2), color=COLORS["loss"], label="loss / loss(0)")
    ax.set_xlabel("training time $t$")
    ax.set_ylabel(r"$u_\alpha(t)^2 / s_\alpha$")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=9)
    return ax


def plot_alignment_matrix(ax, A, *, labels=None, title=None, vmin=None, vmax=None):
    """Heat map of an alignment matrix A[c, c'] = A(K_cc, y_c') with the values written in.

    Rows: the kernel block K_cc of head c; columns: the target y_c'. Returns the image.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    im = ax.imshow(A, cmap="viridis", vmin=vmin, vmax=vmax)
    C = A.shape[0]
    labels = labels or [str(c) for c in range(C)]
    ax.set_xticks(range(C), labels)
    ax.set_yticks(range(C), labels)
    ax.set_xlabel(r"target $y_{c'}$")
    ax.set_ylabel(r"kernel block $K_{cc}$")
    ax.grid(False)
    mid = np.nanmean(A) if vmin is None or vmax is None else 0.5 * (vmin + vmax)
    for i in range(C):
        for j in range(C):
            ax.text(j, i, f"{A[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if A[i, j] > mid else "white")
    if title:
        ax.set_title(title)
    return im


# --- chapter 2 ---

def fit_power_law(x, y):
    """Least-squares fit of log y = slope * log x + intercept. Returns (slope, intercept)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("fit_power_law needs at least two positive (x, y) pairs of equal length")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def plot_error_scaling(ax, sigmas, errors, *, label, color=None, marker="o", fit=True):
    """Log-log plot of an error against sigma, with its fitted power law (dashed).

    ``sigmas``, ``errors``: positive arrays of equal length. With ``fit``, the legend label
    carries the fitted slope. Returns the slope (or None without ``fit``)."""
    s, e = _np1(sigmas, "sigmas"), _np1(errors, "errors")
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


def plot_class_means(ax, t, predictions, y, *, labels=("targets $+1$", "targets $-1$"), log_time=False):
    """Mean network output over the training points of each class against time.

    ``predictions``: (n, P) outputs on the training set (``Trajectory.predictions``); ``y``: (P,)
    targets +-1. Draws the two class means and dashed lines at +-1. Returns ax."""
    t = _np1(t, "t")
    F = np.asarray(predictions, dtype=np.float64)
    yv = _np1(y, "y")
    if F.ndim != 2 or F.shape != (t.size, yv.size):
        raise ValueError(f"predictions must have shape ({t.size}, {yv.size}), got {F.shape}")
    pos = yv > 0
    if pos.all() or not pos.any():
        raise ValueError("y must contain both classes (+1 and -1)")
    curves = (F[:, pos].mean(axis=1), F[:, ~pos].mean(axis=1))
    if log_time:
        t, *curves = _positive_time(t, *curves)
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


# --- chapter 4 ---

def plot_deep_scale(ax, s, L, c0, *, t_max=None, color=None, label=None, n=400, show_c=True):
    """Theory of a balanced depth-L linear net: normalized loss (solid) and c(t)/s (dashed).

    Solves dc/dt = L c^{2-2/L} (s - c) from c(0) = c0 (:func:`silentlib.theory.deep_linear_scale`)
    on a log time grid up to ``t_max`` (default 3 t_half) and marks the half-loss time
    (:func:`silentlib.theory.half_loss_time`) with a dotted vertical line. Returns t_half.
    """
    from . import theory
    t_half = theory.half_loss_time(s, L, c0)
    t_max = 3.0 * t_half if t_max is None else float(t_max)
    t = np.geomspace(t_max * 1e-4, t_max, n)
    c = np.asarray(theory.deep_linear_scale(t, s, L, c0))
    line, = ax.plot(t, (s - c) ** 2 / (s - c0) ** 2, color=color, label=label)
    color = line.get_color()
    if show_c:
        ax.plot(t, c / s, color=color, linestyle="--", linewidth=1.3)
    ax.axvline(t_half, color=color, linestyle=":", linewidth=1.0)
    log_time_axis(ax)
    ax.set_ylim(-0.03, 1.03)
    return t_half


def plot_half_loss_times(ax, sigma2, depths, *, s=1.0, colors=None):
    """Half-loss times of the scale ODE against sigma^2 (log-log), one curve per depth.

    Lines: :func:`silentlib.theory.half_loss_time` with c0 = sigma^L (per-layer scale u0 = sigma);
    open circles (every other sigma^2, so the lines stay visible where both agree):
    :func:`silentlib.theory.half_loss_time_asymptotic` (the sigma^{-L+2} law for L >= 3,
    the log(1/sigma^2) law for L = 2). Returns {L: (exact, asymptotic)} arrays over ``sigma2``.
    """
    from . import theory
    sigma2 = _np1(sigma2, "sigma2")
    colors = list(colors) if colors is not None else _CYCLE
    out = {}
    for i, L in enumerate(depths):
        u0 = np.sqrt(sigma2)
        exact = np.array([theory.half_loss_time(s, L, u ** L) for u in u0])
        asym = np.array([theory.half_loss_time_asymptotic(s, L, u) for u in u0])
        col = colors[i % len(colors)]
        ax.plot(sigma2, exact, color=col, label=f"$L = {L}$")
        ax.plot(sigma2[::2], asym[::2], color=col, linestyle="none", marker="o", markersize=6,
                markerfacecolor="none", markeredgewidth=1.2)
        out[L] = (exact, asym)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"initial variance $\sigma^2$")
    ax.set_ylabel(r"half-loss time $t_{1/2}$")
    ax.legend(title="ODE (lines), asymptotic law (circles)")
    return out


def plot_time_power_law(ax, sigma, series, *, theory_slope=None):
    """Characteristic times against sigma (log-log) with a fitted power law for each series.

    ``series``: {label: (times, color, marker)}. Each series is fitted with
    :func:`fit_power_law` (slope in the legend, fit drawn dashed). ``theory_slope``: a grey
    reference line with that slope through the first series' geometric centre.
    Returns {label: slope}.
    """
    sig = _np1(sigma, "sigma")
    grid = np.geomspace(sig.min(), sig.max(), 50)
    slopes = {}
    for label, (times, color, marker) in series.items():
        tt = _np1(times, label)
        slope, b = fit_power_law(sig, tt)
        slopes[label] = slope
        ax.plot(sig, tt, marker=marker, linestyle="none", color=color, label=f"{label} (slope {slope:.2f})")
        ax.plot(grid, np.exp(b) * grid ** slope, color=color, linestyle="--", linewidth=1.1)
    if theory_slope is not None:
        first = _np1(next(iter(series.values()))[0], "times")
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


def plot_depth_alignment(ax, depths, measured, rank, *, L_max=None):
    """Final kernel alignment against depth: closed form L / sqrt(L^2 + r - 1) and measured points.

    The curve is :func:`silentlib.theory.final_alignment` for L = 1..L_max (default
    max(depths) + 3); ``measured`` are the alignments of trained networks at ``depths``. Returns ax.
    """
    from . import theory
    depths = np.asarray(depths, dtype=int)
    L_max = int(depths.max()) + 3 if L_max is None else int(L_max)
    Ls = np.arange(1, L_max + 1)
    ax.plot(Ls, [theory.final_alignment(int(L), int(rank)) for L in Ls], color=COLORS["theory"],
            linestyle="--", marker=".", label=rf"$L/\sqrt{{L^2 + r - 1}}$, $r = {rank}$")
    ax.plot(depths, _np1(measured, "measured"), "o", color=COLORS["alignment"], markersize=8,
            label=r"trained network, $A(K_\infty, y)$")
    ax.set_xlabel("depth $L$")
    ax.set_ylabel(r"final alignment $A(K_\infty, y)$")
    ax.set_ylim(0, 1)
    ax.legend()
    return ax


# --- chapter 6 ---

def top_direction_angles(W, a, directions):
    """Angles (degrees, in [0, 90]) between the top eigenvector of ``M = W^T W + |a|^2 I`` and given directions.

    W : (n, N, D) first-layer weights at n records (or one (N, D) matrix); a : (n, N) (or (N,))
    read-out weights. For the two-layer linear network K(x, x') = x^T M x' (eq. 5 of the paper),
    so the top eigenvector of M is the kernel's top eigenvector in input space, and it is also
    the top right-singular vector of W. directions : {label: (D,) vector}.
    Returns {label: (n,) angles}; the sign of an eigenvector is irrelevant (``|cos|`` is used).
    """
    W, a = np.asarray(W, dtype=np.float64), np.asarray(a, dtype=np.float64)
    single = W.ndim == 2
    if single:
        W, a = W[None], a[None]
    if W.ndim != 3 or a.shape != W.shape[:2]:
        raise ValueError(f"expected W (n, N, D) and a (n, N), got {W.shape} and {a.shape}")
    D = W.shape[2]
    M = np.einsum("tnd,tne->tde", W, W) + np.sum(a ** 2, axis=1)[:, None, None] * np.eye(D)
    top = np.linalg.eigh(M)[1][:, :, -1]
    out = {}
    for label, v in directions.items():
        v = _np1(v, label)
        if v.shape != (D,):
            raise ValueError(f"direction {label!r} must have {D} entries, got {v.shape}")
        c = np.clip(np.abs(top @ (v / np.linalg.norm(v))), 0.0, 1.0)
        ang = np.degrees(np.arccos(c))
        out[label] = ang[0] if single else ang
    return out


def plot_realignment(ax, t, loss, angles, *, marks=(0.9, 0.1), title=None, legend=True):
    """Angles of the kernel's top direction (left axis, degrees) and the normalized loss (right axis).

    t : (n,) times (t = 0 is dropped on the log axis); loss : (n,) training loss, divided by its
    initial value; angles : {label: (n,) degrees}, e.g. from :func:`top_direction_angles`
    (drawn solid, dashed, dotted, ... in turn). ``marks``: loss fractions at whose crossing times
    thin vertical lines are drawn (e.g. 90% and 10% of the initial loss). Returns (ax, ax_loss).
    """
    from .train import crossing_time
    t = _np1(t, "t")
    loss = _np1(loss, "loss")
    loss = loss / loss[0]
    keep = t > 0
    styles = ["-", "--", ":", "-."]
    colors = [COLORS["red"], COLORS["purple"], COLORS["brown"], COLORS["grey"]]
    for i, (label, ang) in enumerate(angles.items()):
        ang = _np1(ang, label)
        ax.plot(t[keep], ang[keep], linestyle=styles[i % 4], color=colors[i % 4], label=label)
    ax.set_ylim(-2, 92)
    ax.set_yticks([0, 15, 30, 45, 60, 75, 90])
    ax.set_ylabel("angle of top eigenvector (deg)")
    log_time_axis(ax)
    ax2 = ax.twinx()
    ax2.plot(t[keep], loss[keep], color=COLORS["loss"], linewidth=1.5, label="loss / loss(0)")
    ax2.set_yscale("log")
    ax2.set_ylabel("loss / loss(0)", color=COLORS["loss"])
    ax2.grid(False)
    for frac in marks:
        tc = crossing_time(t, loss, frac, decreasing=True)
        if np.isfinite(tc) and tc > 0:
            ax.axvline(tc, color=COLORS["loss"], linestyle=":", linewidth=1.0)
    if title:
        ax.set_title(title)
    if legend:
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="center left")
    return ax, ax2


def plot_whitening_sweep(axes, runs, *, cmap="viridis"):
    """The paper's Figure 4 (a-f) from a partial-whitening sweep.

    axes : six Axes (a-f). runs : {gamma: dict} with keys ``spectrum`` (eigenvalues of
    Sigma_gamma), ``t``, ``loss``, ``test_error`` (n,), ``kernel_norm`` (n,), ``alignment``
    (n,), ``rel_err_K0``, ``rel_err_Kinf`` (floats).
    (a) spectra (log-log), (b) normalized loss, (c) test error, (d) ``||K_t||_F``, (e) alignment,
    all against time on log axes, (f) ``|f_K - f_NN| / |f_NN|`` for K_0 and K_inf regression against gamma.
    Returns the axes.
    """
    axes = list(np.ravel(axes))
    if len(axes) != 6:
        raise ValueError(f"plot_whitening_sweep needs 6 axes, got {len(axes)}")
    gammas = sorted(runs)
    cm = plt.get_cmap(cmap)
    colors = {g: cm(0.9 * i / max(len(gammas) - 1, 1)) for i, g in enumerate(gammas)}
    for g in gammas:
        r, c = runs[g], colors[g]
        lab = rf"$\gamma = {g:g}$"
        spec = np.sort(np.asarray(r["spectrum"], dtype=np.float64))[::-1]
        spec = spec[spec > 1e-12 * spec[0]]
        axes[0].loglog(np.arange(1, spec.size + 1), spec, color=c, label=lab)
        t = _np1(r["t"], "t")
        keep = t > 0
        loss = _np1(r["loss"], "loss")
        axes[1].plot(t[keep], (loss / loss[0])[keep], color=c, label=lab)
        axes[2].plot(t[keep], _np1(r["test_error"], "test_error")[keep], color=c, label=lab)
        axes[3].plot(t[keep], _np1(r["kernel_norm"], "kernel_norm")[keep], color=c, label=lab)
        axes[4].plot(t[keep], _np1(r["alignment"], "alignment")[keep], color=c, label=lab)
    axes[0].set_xlabel("index $k$")
    axes[0].set_ylabel(r"eigenvalue $\lambda_k$ of $\Sigma_\gamma$")
    axes[0].set_title("(a) spectra")
    for ax, name, logy in ((axes[1], "(b) loss / loss(0)", True), (axes[2], "(c) test error", False),
                           (axes[3], r"(d) $\|K_t\|_F$", True), (axes[4], "(e) alignment $A(K_t, y)$", False)):
        log_time_axis(ax)
        if logy:
            ax.set_yscale("log")
        ax.set_title(name)
    axes[0].legend()
    g = np.array(gammas, dtype=np.float64)
    e0 = [runs[k]["rel_err_K0"] for k in gammas]
    ei = [runs[k]["rel_err_Kinf"] for k in gammas]
    axes[5].plot(g, e0, "o-", color=COLORS["red"], label=r"$K_0$ regression")
    axes[5].plot(g, ei, "s-", color=COLORS["alignment"], label=r"$K_\infty$ regression")
    axes[5].set_yscale("log")
    axes[5].set_xlabel(r"whitening exponent $\gamma$")
    axes[5].set_ylabel(r"$|f_K - f_{NN}| / |f_{NN}|$ on test points")
    axes[5].set_title("(f) kernel regression vs network")
    axes[5].legend()
    return axes


# --- chapter 7 ---

def plot_nonlinear_run(ax_dyn, ax_scatter, traj, y_train, *, title=None, log_time=False):
    """One trained network as in the paper's Figure 1: dynamics (left) and test predictions (right).

    ``ax_dyn`` gets :func:`plot_trajectory` of ``traj`` (loss, kernel norm and alignment);
    ``ax_scatter`` (may be None) gets :func:`plot_prediction_scatter` of the network's final test
    predictions against kernel regression with the initial and the final NTK (``traj`` must have
    been trained with ``x_test``). Returns {"$K_0$": r0, "$K_\\infty$": r_inf}, the Pearson
    correlations with the network (empty when ``ax_scatter`` is None).
    """
    from .kernels import kernel_regression
    plot_trajectory(traj, ax=ax_dyn, log_time=log_time)
    if title:
        ax_dyn.set_title(title)
    if ax_scatter is None:
        return {}
    if traj.test_predictions is None:
        raise ValueError("the trajectory has no test predictions; train with x_test=...")
    preds = {"$K_0$": kernel_regression(traj.K0, traj.K0_test, y_train),
             r"$K_\infty$": kernel_regression(traj.Kinf, traj.Kinf_test, y_train)}
    out = plot_prediction_scatter(ax_scatter, traj.test_predictions[-1], preds,
                                  xlabel="network (test points)", ylabel="kernel regression")
    if title:
        ax_scatter.set_title("test predictions")
    return out
