"""Gradient-flow training with kernel tracking.

:func:`train` (one network) and :func:`train_many` (a sweep of networks of one architecture,
trained together) follow the gradient flow d theta / dt = -grad L of the square loss::

    L(theta) = 1/(2P) sum_mu |f(x^mu) - y^mu|^2

(paper, eq. 4 and 9, learning rate eta = 1 there): by full-batch gradient descent
theta <- theta - lr * grad L with training time t = lr * step (:mod:`silentlib.descent`), or
integrated with error control (``optimizer="flow"``, :mod:`silentlib.flow`). In function space
this is eq. 1::

    d f(x, t) / dt = (1/P) sum_mu K(x, x^mu, t) (y^mu - f(x^mu, t)),

i.e. the paper's eta is 1/P for the unnormalized NTK K returned by
:func:`silentlib.ntk.ntk`. Records are taken on a log-spaced time grid.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import config, descent, flow
from .config import as_batch
from .ensemble import Ensemble
from .kernels import SingularKernelWarning, kernel_alignment, kernel_regression
from .silence import LOSS_DROP, kernel_direction_change, silent_fraction
from .stats import crossing_time  # noqa: F401  (re-exported: sl.crossing_time)
from .ntk import ntk
from .threads import StepThreads

OPTIMIZERS = ("gd", "flow", "adam")


@dataclasses.dataclass
class Trajectory:
    """What :func:`train` recorded, as numpy arrays on the host (n = number of records).

    Attributes
    ----------
    t : numpy.ndarray
        (n,) training times ``lr * step``, from 0 to ``t_max``.
    loss : numpy.ndarray
        (n,) training loss ``1/(2P) sum_mu |f(x^mu) - y^mu|^2``.
    alignment : numpy.ndarray
        (n,) kernel-target alignment A(K_t, y) (:func:`~silentlib.kernels.kernel_alignment`,
        paper Section 2); NaN when the kernel is not tracked.
    kernel_norm : numpy.ndarray
        (n,) Frobenius norm ``||K_t||_F`` on the training set; NaN when not tracked.
    predictions : numpy.ndarray
        (n, P) or (n, P, C) network outputs on the training set.
    kernels : numpy.ndarray | None
        (n, P, P) or (n, P, P, C, C): K_t on the training set at every record; None
        without ``track_ntk`` or with ``keep_kernels=False``.
    test_predictions : numpy.ndarray | None
        (n, Q) or (n, Q, C) outputs on ``x_test``; None without ``x_test``.
    K0 : numpy.ndarray | None
        (P, P) or (P, P, C, C): the initial NTK on the training set; None with
        ``keep_kernels=False``.
    Kinf : numpy.ndarray | None
        The final NTK on the training set, the same shape; None with ``keep_kernels=False``.
    K0_test : numpy.ndarray | None
        (Q, P) or (Q, P, C, C): the initial NTK between the test and the training points,
        ready for ``kernel_regression(K0, K0_test, y)``; None without ``x_test``.
    Kinf_test : numpy.ndarray | None
        The final NTK between the test and the training points, the same shape.
    observables : dict
        ``{name: (n, ...) array}``, the values of the ``observe`` callables at every record.
    steps : numpy.ndarray
        (n,) the gradient-descent step of each record (``t = lr * steps``; with the flow, the
        step at which gradient descent with this lr would have recorded).
    lr : float
        The learning rate (with the flow, the time grid's unit).
    optimizer : str
        ``"gd"``, ``"flow"`` or ``"adam"``.
    y : numpy.ndarray | None
        (P,) or (P, C) the training targets, in float64.
    kernel_direction : numpy.ndarray | None
        (n,) ``1 - cos(K_t, K_inf)``, how far the kernel's direction is from its final one
        (:func:`~silentlib.silence.kernel_direction_change`); None without ``track_ntk``. With
        ``keep_kernels=False`` it is computed again at the end from the recorded parameters.
    machine_predictions : numpy.ndarray | None
        (n, Q) or (n, Q, C): the kernel machine of every record on the test points,
        ``k_t(x)^T K_t^{-1} y`` (:func:`~silentlib.kernels.kernel_regression` with the NTK K_t),
        from which :meth:`silence` is measured; the first is K_0 regression, the last K_inf
        regression. None without ``track_ntk`` or ``x_test``, or when the training kernel has
        more than :data:`MACHINE_MAX_ROWS` rows (P C).
    """
    t: np.ndarray
    loss: np.ndarray
    alignment: np.ndarray
    kernel_norm: np.ndarray
    predictions: np.ndarray
    kernels: np.ndarray | None
    test_predictions: np.ndarray | None
    K0: np.ndarray | None
    Kinf: np.ndarray | None
    K0_test: np.ndarray | None
    Kinf_test: np.ndarray | None
    observables: dict
    steps: np.ndarray
    lr: float
    optimizer: str
    y: np.ndarray | None = None
    kernel_direction: np.ndarray | None = None
    machine_predictions: np.ndarray | None = None

    def kernel_predictions(self, ridge: float = 0.0) -> dict[str, np.ndarray]:
        """Kernel regression on the test points with the initial and the final NTK.

        The two kernel machines the trained network is compared with (paper, Figure 1(b)):
        silent alignment predicts that the network matches the one with the final NTK.

        Parameters
        ----------
        ridge : float
            Passed to :func:`~silentlib.kernels.kernel_regression` (0: interpolation).

        Returns
        -------
        dict
            ``{"K0": k_0(x)^T K_0^{-1} y, "Kinf": k_inf(x)^T K_inf^{-1} y}``, each of shape
            (Q,) or (Q, C).

        Raises
        ------
        ValueError
            If the trajectory was trained without ``x_test`` or with ``keep_kernels=False``.
        """
        if self.K0_test is None:
            raise ValueError("kernel_predictions needs a trajectory trained with x_test and keep_kernels=True")
        return {"K0": kernel_regression(self.K0, self.K0_test, self.y, ridge),
                "Kinf": kernel_regression(self.Kinf, self.Kinf_test, self.y, ridge)}

    def silence(self, loss_drop: float = LOSS_DROP) -> float:
        """The run's silent fraction: the share of its kernel machine's change (on the test points)
        done before the loss fell by ``loss_drop`` (:func:`~silentlib.silence.silent_fraction`; at
        least :data:`~silentlib.silence.SILENT_AT` is called silent; NaN where every kernel of the
        run gives the same machine).

        Raises
        ------
        ValueError
            If the trajectory has no kernel machines: trained without ``track_ntk`` or ``x_test``,
            or with more than :data:`MACHINE_MAX_ROWS` kernel rows.
        """
        if self.machine_predictions is None:
            raise ValueError("silence() compares kernel machines on held-out points: it needs a trajectory "
                             "trained with track_ntk=True and x_test, with P C <= MACHINE_MAX_ROWS "
                             f"({MACHINE_MAX_ROWS}) kernel rows")
        return silent_fraction(self.t, self.loss, self.machine_predictions, loss_drop)

    def time_to_loss_fraction(self, fraction: float = 0.5) -> float:
        """First time at which ``loss / loss[0] <= fraction``, interpolated linearly between
        records (as :func:`~silentlib.stats.crossing_time`); ``inf`` if never (e.g. the paper's half-loss time
        for ``fraction=0.5``)."""
        return crossing_time(self.t, self.loss / self.loss[0], fraction, decreasing=True)


def record_steps(n_steps: int, n_records: int) -> np.ndarray:
    """Step 0 plus about ``n_records - 1`` log-spaced steps from 1 to ``n_steps`` (unique, sorted),
    always ending at ``n_steps`` (with ``n_records <= 2``: step 0 and ``n_steps`` alone)."""
    n_steps = max(n_steps, 1)
    if n_records <= 2:
        return np.array([0, n_steps])
    grid = np.unique(np.round(np.geomspace(1, n_steps, n_records - 1)).astype(int))
    return np.concatenate([[0], grid[grid <= n_steps]])


#: Kernel machines are recorded (one P C x P C eigendecomposition per record) up to this many kernel rows.
MACHINE_MAX_ROWS = 2000


def train(model: nn.Module, x, y, *, lr: float, t_max: float, optimizer: str = "gd", n_records: int = 100,
          track_ntk: bool = True, x_test=None, seed: int | None = None,
          observe: dict[str, Callable[[nn.Module], object]] | None = None, ntk_method: str = "auto",
          progress: bool | None = None, device: str | torch.device | None = None,
          keep_kernels: bool = True, rtol: float | None = None, atol: float | None = None) -> Trajectory:
    """Train ``model`` in place on (x, y) and record its trajectory (paper, eqs. 1, 4 and 9).

    Gradient flow on ``L = 1/(2P) sum_mu |f(x^mu) - y^mu|^2`` up to time ``t_max``, by full-batch
    gradient descent with training time ``t = lr * step`` (the default), by Adam, or integrated with
    error control (``optimizer="flow"``, :mod:`silentlib.flow`), recording the loss, the
    predictions and, with ``track_ntk``, the NTK K_t, its alignment A(K_t, y) and its norm on a
    log-spaced time grid. The steps run on the CPU threads that are fastest for them under the
    machine's load (:class:`silentlib.threads.StepThreads`). To train several networks of one
    architecture together, use :func:`train_many`.

    Parameters
    ----------
    model : torch.nn.Module
        Network mapping (P, ...) inputs to (P,) or (P, C) outputs, e.g. a
        :class:`~silentlib.models.MLP`. Trained in place.
    x : array_like or torch.Tensor
        (P, ...) training inputs.
    y : array_like or torch.Tensor
        (P,) or (P, C) targets, the shape of the model's output on ``x``.
    lr : float
        Learning rate (> 0). With ``optimizer="flow"`` it takes no step: the records are at the
        times ``lr * step`` at which gradient descent with this lr would record.
    t_max : float
        Training time (> 0): ``round(t_max / lr)`` steps.
    optimizer : str
        ``"gd"`` (full-batch gradient descent, the paper's gradient flow as lr -> 0), ``"flow"``
        (the gradient flow itself, by adaptive Runge-Kutta steps with local error control; far
        fewer gradients where the flow is slow, no dependence on lr) or ``"adam"`` (full-batch
        Adam with step size lr, as in the paper's CIFAR-10 and Wide-ResNet runs; the tracked
        kernel stays the plain NTK).
    n_records : int
        About how many log-spaced records to keep (plus t = 0).
    track_ntk : bool
        Compute K_t on the training set at every record (alignment, kernel norm,
        snapshots). The initial and final NTKs are computed either way (unless
        ``keep_kernels=False``).
    x_test : array_like or torch.Tensor, optional
        (Q, ...) inputs whose predictions are recorded and whose cross-kernels with the
        training set are returned; with ``track_ntk``, kernel regression with each record's
        kernel is also evaluated there (:attr:`Trajectory.machine_predictions`, the book's test
        of silence).
    seed : int, optional
        If given, ``torch.manual_seed(seed)`` before training (only matters for
        randomized models; gradient descent itself is deterministic).
    observe : dict, optional
        ``{name: callable(model) -> number or array}``, evaluated at every record
        (:attr:`Trajectory.observables`).
    ntk_method : str
        Passed to :func:`silentlib.ntk.ntk` as ``method``.
    progress : bool, optional
        Show a tqdm bar; default: when there are more than 20,000 steps.
    device : str or torch.device, optional
        Where to train; default :func:`silentlib.config.device` (``SILENT_DEVICE``, else
        CUDA when available). The model is moved there for the run and handed back on its
        own device, trained; the recorded arrays are on the host.
    keep_kernels : bool
        Keep kernels on the Trajectory (on the host): K_0, K_inf, the test cross-kernels
        and, with ``track_ntk``, every K_t in ``kernels``. False keeps none of them, only
        the tracked alignment and kernel norm, for kernels too large to keep (e.g.
        P = 2000 with 10 outputs: 3.2 GB each in float64).
    rtol, atol : float, optional
        The flow's error control (``optimizer="flow"`` only): each step's local error in the
        parameters, in the RMS over them, at most ``atol + rtol |theta|``. Defaults: rtol 1e-6
        in float64, atol 1e-3 rtol times the RMS of the initial parameters
        (:func:`silentlib.flow.tolerances`).

    Returns
    -------
    Trajectory
        Everything recorded, as numpy arrays.

    Raises
    ------
    ValueError
        Before training: for an unknown optimizer, a non-positive or non-finite lr or
        t_max, a model without trainable parameters, inputs and targets whose shapes do not
        match the model, or tracked kernels that would not fit in host memory.
    FloatingPointError
        Naming the step, when the loss becomes non-finite (checked at every record and every
        1000 steps): use a smaller learning rate.
    """
    return train_many([model], x, y, lr=lr, t_max=t_max, optimizer=optimizer, n_records=n_records,
                      track_ntk=track_ntk, x_test=x_test, seed=seed, observe=observe, ntk_method=ntk_method,
                      progress=progress, device=device, keep_kernels=keep_kernels, rtol=rtol, atol=atol)[0]


def train_many(models: Sequence[nn.Module], x, y, *, lr: float | Sequence[float], t_max: float | Sequence[float],
               optimizer: str = "gd", n_records: int = 100, track_ntk: bool = True, x_test=None,
               seed: int | None = None, observe: dict[str, Callable[[nn.Module], object]] | None = None,
               ntk_method: str = "auto", progress: bool | None = None, device: str | torch.device | None = None,
               keep_kernels: bool = True, rtol: float | None = None,
               atol: float | None = None) -> list[Trajectory]:
    """Train several networks of one architecture together on (x, y): one :class:`Trajectory` each.

    A sweep (initial scales, seeds, learning rates) of networks that differ only in their
    parameters trains as one :class:`~silentlib.ensemble.Ensemble`: every gradient is one batched
    pass over all of them, and each network keeps its own learning rate, time, records and, with
    ``optimizer="flow"``, step sizes. Network b's trajectory equals, to rounding,
    ``train(models[b], x, y, lr=lr[b], t_max=t_max[b], ...)``.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        The networks, trained in place: the same trainable parameter names and shapes, and the
        same function of them (e.g. :class:`~silentlib.models.MLP` of one size and activation,
        any ``sigma``).
    lr, t_max : float or sequence of float
        One for all networks, or one per network.
    x, y, optimizer, n_records, track_ntk, x_test, seed, observe, ntk_method, progress, device, keep_kernels, rtol, atol
        As for :func:`train` (shared by every network).

    Returns
    -------
    list of Trajectory
        One per network, in order.

    Raises
    ------
    ValueError
        As :func:`train`; also when the networks do not share an architecture (train those one
        by one), a model appears twice, or ``lr`` or ``t_max`` has another length.
    """
    models = list(models)
    if not models or len({id(m) for m in models}) != len(models):
        raise ValueError("models must be a non-empty sequence of distinct networks")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    lrs, t_maxs = _per_model("lr", lr, len(models)), _per_model("t_max", t_max, len(models))
    if not all(v > 0 and math.isfinite(v) for v in lrs + t_maxs):
        raise ValueError(f"lr and t_max must be positive and finite, got lr={lr}, t_max={t_max}")
    for m in models:
        if not any(p.requires_grad for p in m.parameters()):
            raise ValueError("the model has no trainable parameters")
    dev = torch.device(device) if device is not None else config.device()
    homes = [next(p for p in m.parameters() if p.requires_grad).device for m in models]
    ens = None
    try:
        for m in models:
            m.to(dev)
        ref = next(p for p in models[0].parameters() if p.requires_grad)
        x, y, x_test = _check_data(models, ref, x, y, x_test)
        if seed is not None:
            torch.manual_seed(seed)
        steps = [record_steps(max(1, int(round(t / l))), n_records) for t, l in zip(t_maxs, lrs)]
        if track_ntk and keep_kernels:
            _check_host_memory(sum(len(s) for s in steps), y, ref)
        ens = Ensemble(models, x, y)
        recorders = [_Recorder(m, x, y, x_test, track_ntk=track_ntk, keep_kernels=keep_kernels,
                               observe=observe or {}, ntk_method=ntk_method) for m in models]
        show = progress if progress is not None else max(s[-1] for s in steps) > 20000

        with StepThreads(dev) as threads:
            def record(b):
                recorders[b].record(threads)

            if optimizer == "flow":
                flow.integrate(ens, [l * s for l, s in zip(lrs, steps)], record, rtol=rtol, atol=atol,
                               threads=threads, progress=show)
            else:
                descent.descend(ens, lrs, steps, record, adam=optimizer == "adam", threads=threads, progress=show)
        return [r.trajectory(s, lr=l, optimizer=optimizer) for r, s, l in zip(recorders, steps, lrs)]
    finally:
        if ens is not None:
            ens.release()
        for m, home in zip(models, homes):
            m.to(home)


def _per_model(name, value, n):
    """``value`` as a list of n floats: one number repeated, or a sequence of n."""
    if np.ndim(value) == 0:
        return [float(value)] * n
    values = [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name} must be one number or one per model ({n}), got {len(values)}")
    return values


def _check_data(models, ref, x, y, x_test):
    """x, y and x_test as tensors like ``ref``, checked against each other and the models' output."""
    x = as_batch(x, "x", ref)
    y = as_batch(y, "y", ref)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    with torch.no_grad():
        out = models[0](x)
    if out.shape != y.shape:
        raise ValueError(f"the model's output on x has shape {tuple(out.shape)} but y has shape "
                         f"{tuple(y.shape)}; use y of shape (P,) for a scalar output or (P, C) for C outputs")
    if x_test is not None:
        x_test = as_batch(x_test, "x_test", ref)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_test must have shape (Q,) + {tuple(x.shape[1:])}, got {tuple(x_test.shape)}")
    return x, y, x_test


def _check_host_memory(n_kernels, y, ref):
    """Refuse, before training, to keep ``n_kernels`` snapshots of the NTK that the host cannot hold."""
    P, C = y.shape[0], 1 if y.ndim == 1 else y.shape[1]
    need = n_kernels * (P * C) ** 2 * ref.element_size()
    have = config.free_memory(torch.device("cpu"))
    if need > have // 2:
        raise ValueError(
            f"tracking the NTK keeps {n_kernels} kernels of {P}x{P}x{C}x{C} entries, "
            f"{need / 2**30:.1f} GiB, but the host has {have / 2**30:.1f} GiB available; "
            f"use fewer records (n_records), fewer examples, keep_kernels=False (alignment and norm only) "
            f"or track_ntk=False")


class _Recorder:
    """Takes the records of one run (:meth:`record`) and assembles its :class:`Trajectory`.

    The initial kernels K_0 (and K_0 on the test points) are computed when it is made, the final
    ones in :meth:`trajectory`; only what is kept moves to the host.
    """

    def __init__(self, model, x, y, x_test, *, track_ntk, keep_kernels, observe, ntk_method):
        self.model, self.x, self.y, self.x_test = model, x, y, x_test
        self.track_ntk, self.keep_kernels, self.observe, self.ntk_method = track_ntk, keep_kernels, observe, ntk_method
        self.rec = {k: [] for k in ("loss", "alignment", "kernel_norm", "pred", "kernels", "test", "machine")}
        C = 1 if y.ndim == 1 else y.shape[1]
        self.machines = track_ntk and x_test is not None and len(x) * C <= MACHINE_MAX_ROWS
        self.obs = {name: [] for name in observe}
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.snapshots = []          # parameters at each record, when the kernels are not kept
        self.K0 = self._kernel(x) if keep_kernels else None
        self.K0_test = self._kernel(x_test, x) if x_test is not None and keep_kernels else None

    def _kernel(self, a, b=None):
        return ntk(self.model, a, b, method=self.ntk_method).detach().cpu().numpy()

    def record(self, threads=None):
        """Record the predictions, the loss, the kernel and the observables now, on the threads of the
        training steps, but the kernel on torch's own (``threads``, a
        :class:`~silentlib.threads.StepThreads`, restores them: the NTK chooses its own)."""
        model, rec = self.model, self.rec
        with torch.no_grad():
            pred = model(self.x)
            rec["pred"].append(pred.cpu().numpy())
            rec["loss"].append(float(0.5 * (pred - self.y).pow(2).sum() / self.x.shape[0]))
            if self.x_test is not None:
                rec["test"].append(model(self.x_test).cpu().numpy())
        if self.track_ntk:
            with threads.paused() if threads is not None else contextlib.nullcontext():
                K = ntk(model, self.x, method=self.ntk_method)  # on the device: only what is kept moves to the host
                if self.machines:
                    rec["machine"].append(self._machine(K))
            if self.keep_kernels:
                rec["kernels"].append(K.cpu().numpy())
            else:
                self.snapshots.append([p.detach().cpu().clone() for p in self.params])
            rec["alignment"].append(kernel_alignment(K, self.y))
            rec["kernel_norm"].append(float(torch.linalg.vector_norm(K)))
        else:
            rec["alignment"].append(math.nan)
            rec["kernel_norm"].append(math.nan)
        for name, fn in self.observe.items():
            with torch.no_grad():
                v = fn(model)
            self.obs[name].append(np.asarray(v.detach().cpu() if torch.is_tensor(v) else v, dtype=np.float64))

    def _machine(self, K):
        """Kernel regression with K on the test points (the pseudo-inverse where K is singular, as
        for a linear network on P > D inputs, whose machines are then all the min-norm one)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularKernelWarning)
            return kernel_regression(K, ntk(self.model, self.x_test, self.x, method=self.ntk_method), self.y)

    def _direction(self, Kinf):
        """(n,) ``1 - cos(K_t, K_inf)`` at every record: from the kept kernels, or else by computing
        each K_t again from its parameter snapshot (one kernel at a time, on the device)."""
        if not self.track_ntk:
            return None
        if self.keep_kernels:
            return kernel_direction_change(np.stack(self.rec["kernels"]), Kinf)
        Kf = ntk(self.model, self.x, method=self.ntk_method)
        final = [p.detach().clone() for p in self.params]
        d = []
        try:
            for snap in self.snapshots:
                with torch.no_grad():
                    for p, v in zip(self.params, snap):
                        p.copy_(v)
                K = ntk(self.model, self.x, method=self.ntk_method)
                d.append(float(1 - torch.sum(K * Kf) / (torch.linalg.vector_norm(K) * torch.linalg.vector_norm(Kf))))
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, final):
                    p.copy_(v)
        return np.array(d)

    def trajectory(self, steps, *, lr, optimizer):
        """The :class:`Trajectory` of the records, with the final kernels computed now."""
        rec, keep, test = self.rec, self.keep_kernels, self.x_test is not None
        Kinf = self._kernel(self.x) if keep else None
        return Trajectory(
            t=steps * lr,
            loss=np.array(rec["loss"]),
            alignment=np.array(rec["alignment"]),
            kernel_norm=np.array(rec["kernel_norm"]),
            predictions=np.stack(rec["pred"]),
            kernels=np.stack(rec["kernels"]) if self.track_ntk and keep else None,
            test_predictions=np.stack(rec["test"]) if test else None,
            K0=self.K0, Kinf=Kinf, K0_test=self.K0_test,
            Kinf_test=self._kernel(self.x_test, self.x) if test and keep else None,
            observables={k: np.stack(v) for k, v in self.obs.items()},
            steps=steps, lr=float(lr), optimizer=optimizer,
            y=self.y.detach().cpu().numpy().astype(np.float64),
            kernel_direction=self._direction(Kinf),
            machine_predictions=np.stack(rec["machine"]) if self.machines else None,
        )
