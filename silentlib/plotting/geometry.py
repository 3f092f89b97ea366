"""Kernel geometry and predictions: kernel regression against the network, RKHS level sets,
alignment matrices, the direction of the kernel's top eigenvector, the whitening sweep.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..config import as_float64
from ..kernels import kernel_regression
from ..stats import correlation
from ..stats import crossing_time
from .dynamics import plot_trajectory
from .style import COLORS, as_curve, log_time_axis


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

    Returns
    -------
    dict
        ``{label: correlation}``. Each entry's legend label carries its Pearson correlation
        with the network, and a dashed identity line y = x is drawn.
    """
    nn = as_float64(nn_pred, "nn_pred").ravel()
    if not kernel_preds:
        raise ValueError("kernel_preds must contain at least one prediction")
    default = [COLORS["red"], COLORS["loss"], COLORS["alignment"], COLORS["purple"], COLORS["brown"]]
    colors = list(colors) if colors is not None else default
    out, lo, hi = {}, nn.min(), nn.max()
    for i, (label, pred) in enumerate(kernel_preds.items()):
        p = as_float64(pred, f"prediction {label!r}").ravel()
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


def plot_realignment(ax, t, loss, angles, *, marks=(0.9, 0.1), title=None, legend=True):
    """Angles of the kernel's top direction (left axis, degrees) and the normalized loss (right axis).

    t : (n,) times (t = 0 is dropped on the log axis); loss : (n,) training loss, divided by its
    initial value; angles : {label: (n,) degrees}, e.g. from :func:`silentlib.kernels.top_direction_angles`
    (drawn solid, dashed, dotted, ... in turn). ``marks``: loss fractions at whose crossing times
    thin vertical lines are drawn (e.g. 90% and 10% of the initial loss). Returns (ax, ax_loss).
    """
    t = as_curve(t, "t")
    loss = as_curve(loss, "loss")
    loss = loss / loss[0]
    keep = t > 0
    styles = ["-", "--", ":", "-."]
    colors = [COLORS["red"], COLORS["purple"], COLORS["brown"], COLORS["grey"]]
    for i, (label, ang) in enumerate(angles.items()):
        ang = as_curve(ang, label)
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
        t = as_curve(r["t"], "t")
        keep = t > 0
        loss = as_curve(r["loss"], "loss")
        axes[1].plot(t[keep], (loss / loss[0])[keep], color=c, label=lab)
        axes[2].plot(t[keep], as_curve(r["test_error"], "test_error")[keep], color=c, label=lab)
        axes[3].plot(t[keep], as_curve(r["kernel_norm"], "kernel_norm")[keep], color=c, label=lab)
        axes[4].plot(t[keep], as_curve(r["alignment"], "alignment")[keep], color=c, label=lab)
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


def plot_nonlinear_run(ax_dyn, ax_scatter, traj, y_train=None, *, title=None, log_time=False):
    """One trained network as in the paper's Figure 1: dynamics (left) and test predictions (right).

    ``ax_dyn`` gets :func:`~silentlib.plotting.dynamics.plot_trajectory` of ``traj`` (loss, kernel norm and alignment);
    ``ax_scatter`` (may be None) gets :func:`plot_prediction_scatter` of the network's final test
    predictions against kernel regression with the initial and the final NTK,
    :meth:`Trajectory.kernel_predictions <silentlib.train.Trajectory.kernel_predictions>` (``traj``
    must have been trained with ``x_test``). ``y_train``, when given, must be the (P,) or (P, C)
    labels ``traj`` was trained on (a check; the labels are the trajectory's own). Returns
    {"$K_0$": r0, "$K_\\infty$": r_inf}, the Pearson correlations with the network (empty when
    ``ax_scatter`` is None).
    """
    plot_trajectory(traj, ax=ax_dyn, log_time=log_time)
    if title:
        ax_dyn.set_title(title)
    if ax_scatter is None:
        return {}
    if traj.test_predictions is None:
        raise ValueError("the trajectory has no test predictions; train with x_test=...")
    if y_train is not None:
        y = as_float64(y_train, "y_train")
        if y.size != traj.y.size or not np.allclose(y.reshape(-1), traj.y.reshape(-1)):
            raise ValueError(f"y_train (shape {y.shape}) is not the labels the trajectory was trained on "
                             f"(shape {traj.y.shape}); pass those, or leave y_train out")
    kr = traj.kernel_predictions()
    preds = {"$K_0$": kr["K0"], r"$K_\infty$": kr["Kinf"]}
    out = plot_prediction_scatter(ax_scatter, traj.test_predictions[-1], preds,
                                  xlabel="network (test points)", ylabel="kernel regression")
    if title:
        ax_scatter.set_title("test predictions")
    return out
