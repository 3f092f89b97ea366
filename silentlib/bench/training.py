"""Training timed several ways on the book's sweeps (``python -m silentlib bench --training``).

Each sweep is one of the chapters' experiments (at their fast sizes, or the paper's with ``--full``)
and is trained, in the same run and in turn:

* ``loop`` -- the training loop as it was before :mod:`silentlib.threads` and :mod:`silentlib.flow`
  (:func:`loop_train`): ``loss.backward()`` and ``p -= lr p.grad`` on torch's threads, one network
  after another, with the same records and tracked NTKs;
* ``gd`` -- :func:`silentlib.train.train`, gradient descent on the threads its steps run fastest on;
* ``flow`` -- the same with ``optimizer="flow"`` (adaptive Dormand-Prince, default tolerances);
* ``gd, together`` and ``flow, together`` -- :func:`silentlib.train.train_many`, the sweep's networks
  as one ensemble (sweeps of more than one network).

It also times one gradient step of the sweep's first network (the loop's, and the library's on the
threads it chooses) and, for sweeps of several networks, one step of all of them together (per
network). Every time is a ratio to the loop's, measured in the same run, so that the load of a shared
machine falls on all of them alike.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from .. import config
from .. import theory as th
from ..data import linear_teacher
from ..ensemble import Ensemble
from ..models import MLP
from ..ntk import ntk
from ..threads import StepThreads
from ..train import record_steps, train, train_many

#: The ways every sweep is trained, in the table's order.
WAYS = ("loop", "gd", "flow", "gd, together", "flow, together")
#: Gradient steps timed for the one-step times.
STEPS_TIMED = 50


@dataclasses.dataclass
class Sweep:
    """One chapter's sweep: ``models()`` makes its networks afresh (the same draw every time)."""
    name: str
    models: Callable[[], list]
    x: torch.Tensor
    y: torch.Tensor
    lr: float
    t_max: list
    n_records: int
    track_ntk: bool


def _nets(seed, make, values):
    out = []
    for v in values:
        torch.manual_seed(seed)
        out.append(make(v))
    return out


def sweeps(full: bool) -> list[Sweep]:
    """The sweeps of chapters 3, 4 and 5 at the fast sizes, or at the paper's with ``full``."""
    pick = (lambda fast, paper: paper) if full else (lambda fast, paper: fast)
    two = linear_teacher(pick(50, 100), 25, s=1.0, seed=0)
    deep = linear_teacher(100, 30, s=1.0, seed=0)
    modes = linear_teacher(100, 20, out_dim=3, singular_values=(4.0, 2.0, 1.0), seed=0)
    grid = pick([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1], [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    lr4, sg5 = pick(0.2, 0.05), pick(0.2, 0.1)
    return [
        Sweep("ch. 3: two-layer linear, 4 sigmas, NTK tracked",
              lambda: _nets(1, lambda s: MLP(25, 10, 2, sigma=s), [1e-1, 1e-2, 1e-3, 1e-4]),
              two.x, two.y, 0.01, [14.0] * 4, 200, True),
        Sweep(f"ch. 4: depth-3 linear, {len(grid)} sigma^2",
              lambda: _nets(1, lambda v: MLP(30, 50, 3, sigma=float(np.sqrt(v))), grid),
              deep.x, deep.y, lr4, [max(3 / np.sqrt(v), 20.0) for v in grid], 3000, False),
        Sweep("ch. 4: depth-5 linear, NTK tracked",
              lambda: _nets(1, lambda s: MLP(30, 50, 5, sigma=s), [sg5]),
              deep.x, deep.y, pick(0.6, 0.2) / 5, [2 * th.half_loss_time_asymptotic(1.0, 5, 0.8 * sg5) + 20],
              80, True),
        Sweep("ch. 5: three outputs, NTK tracked",
              lambda: _nets(0, lambda s: MLP(20, 50, 2, out_dim=3, sigma=s), [0.01]),
              modes.x, modes.y, pick(0.005, 0.002), [7.0], 50, True),
    ]


def loop_train(model, x, y, *, lr, t_max, n_records, track_ntk):
    """The training loop as it was: full-batch gradient descent by ``loss.backward()`` on torch's
    threads, the loss and predictions (and the NTK) recorded at the same steps as
    :func:`silentlib.train.train`'s. Returns the recorded losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    steps = record_steps(max(1, int(round(t_max / lr))), n_records)
    losses, nxt = [], 0
    for step in range(int(steps[-1]) + 1):
        model.zero_grad(set_to_none=True)
        loss = 0.5 * (model(x) - y).pow(2).sum() / x.shape[0]
        if step == steps[nxt]:
            losses.append(float(loss.detach()))
            with torch.no_grad():
                model(x)
            if track_ntk:
                ntk(model, x)
            nxt += 1
        if step == steps[-1]:
            break
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.sub_(lr * p.grad)
    return np.array(losses)


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_seconds(sweep: Sweep, device) -> dict:
    """Seconds of one gradient step: the loop's and the library's (one network), and the library's
    for all the sweep's networks together, per network."""
    model = sweep.models()[0].to(device)
    x, y = sweep.x.to(device), sweep.y.to(device)
    loop = _seconds(lambda: loop_train(model, x, y, lr=1e-9, t_max=1e-9 * STEPS_TIMED, n_records=2,
                                       track_ntk=False)) / STEPS_TIMED
    out = {"loop": loop}
    for key, models in (("gd", [model]), ("gd, together", [m.to(device) for m in sweep.models()])):
        if key == "gd, together" and len(models) == 1:
            continue
        ens = Ensemble(models, x, y)
        with StepThreads(device) as threads:
            def steps():
                for _ in range(STEPS_TIMED):
                    threads.tick()
                    ens.theta.sub_(1e-9 * ens.loss_and_grad(ens.theta)[1])
            steps()   # the threads are chosen in these
            out[key] = _seconds(steps) / STEPS_TIMED / len(models)
        ens.release()
    return out


def run_sweep(sweep: Sweep, way: str, device) -> float:
    """Seconds to train the whole sweep one way (see :data:`WAYS`)."""
    models = [m.to(device) for m in sweep.models()]
    x, y = sweep.x.to(device), sweep.y.to(device)
    kw = dict(lr=sweep.lr, n_records=sweep.n_records, track_ntk=sweep.track_ntk, device=device, progress=False)
    if way == "loop":
        return _seconds(lambda: [loop_train(m, x, y, lr=sweep.lr, t_max=t, n_records=sweep.n_records,
                                            track_ntk=sweep.track_ntk) for m, t in zip(models, sweep.t_max)])
    optimizer = way.split(",")[0]
    if way.endswith("together"):
        return _seconds(lambda: train_many(models, x, y, t_max=sweep.t_max, optimizer=optimizer, **kw))
    return _seconds(lambda: [train(m, x, y, t_max=t, optimizer=optimizer, **kw)
                             for m, t in zip(models, sweep.t_max)])


def run_training_bench(*, full: bool = False, device=None, verbose: bool = True) -> dict:
    """Every sweep of :func:`sweeps` trained every way of :data:`WAYS`, and its one-step times."""
    dev = torch.device(device) if device is not None else config.device()
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        report = {"device": config.device_name(dev, detailed=True), "sizes": "paper" if full else "fast",
                  "load": _load(), "rows": []}
        for sweep in sweeps(full):
            row = {"sweep": sweep.name, "networks": len(sweep.t_max), "step": step_seconds(sweep, dev)}
            for way in WAYS:
                if way.endswith("together") and len(sweep.t_max) == 1:
                    continue
                row[way] = run_sweep(sweep, way, dev)
                if verbose:
                    print(f"  {sweep.name}: {way} {row[way]:.2f} s", flush=True)
            report["rows"].append(row)
        report["load_after"] = _load()
        return report
    finally:
        torch.set_default_dtype(saved)


def _load():
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except OSError:
        return None


def format_training(report: dict) -> str:
    """The report as a table: seconds of every way, and its ratio to the loop's."""
    lines = [f"training, {report['sizes']} sizes, float64, {report['device']}; load average "
             f"{report['load']} before, {report['load_after']} after (other processes share the cores)",
             f"{'sweep':<46} {'nets':>4} | {'one step (ms): loop':>19} {'gd':>6} {'x':>5} {'together':>8} {'x':>5} | "
             + " | ".join(f"{w:>14} {'x':>5}" for w in WAYS)]
    for r in report["rows"]:
        st = r["step"]
        cells = [f"{st['loop'] * 1e3:>19.3f} {st['gd'] * 1e3:>6.3f} {st['loop'] / st['gd']:>5.1f}"]
        cells.append(f"{st['gd, together'] * 1e3:>8.3f} {st['loop'] / st['gd, together']:>5.1f}"
                     if "gd, together" in st else f"{'-':>8} {'':>5}")
        runs = [f"{r[w]:>13.2f}s {r['loop'] / r[w]:>5.1f}" if w in r else f"{'-':>14} {'':>5}" for w in WAYS]
        lines.append(f"{r['sweep']:<46} {r['networks']:>4} | {' '.join(cells)} | " + " | ".join(runs))
    lines.append("x: the loop's time over this way's (higher is faster), measured in the same run; one step "
                 "'together' is per network")
    return "\n".join(lines)
