"""Full-batch gradient descent (and Adam) on every network of an ensemble, with records at given steps.

Gradient descent ``theta <- theta - lr grad L`` with training time t = lr * step follows the paper's
gradient flow (eq. 4 and 9) as lr -> 0; Adam (Kingma & Ba 2015, torch's defaults: betas 0.9 and
0.999, eps 1e-8) is the paper's optimizer for CIFAR-10 and the Wide-ResNet. Each network of the
:class:`~silentlib.ensemble.Ensemble` has its own learning rate and number of steps; one that is done
stays where it is while the others go on.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .ensemble import Ensemble
from .threads import StepThreads

#: Steps between checks that the loss is finite (each check synchronizes a GPU).
CHECK_EVERY = 1000
#: Adam's moment decay rates and denominator offset (torch.optim.Adam's defaults).
BETAS, EPS = (0.9, 0.999), 1e-8


def descend(ens: Ensemble, lrs: Sequence[float], steps: Sequence[np.ndarray], record: Callable[[int], None],
            *, adam: bool = False, threads: StepThreads | None = None, progress: bool = False) -> None:
    """Train every network of ``ens`` by gradient descent (or Adam), calling ``record(b)`` at its steps.

    Parameters
    ----------
    ens : silentlib.ensemble.Ensemble
        The networks; ``ens.theta`` (B, n) is updated in place, so each bound model holds its state.
    lrs : sequence of float
        (B,) learning rates.
    steps : sequence of numpy.ndarray
        ``steps[b]``: network b's record steps, increasing from 0; its last is its number of steps.
    record : callable
        ``record(b)``, called when model b has taken each of its record steps.
    adam : bool
        Adam's update instead of plain gradient descent.
    threads : silentlib.threads.StepThreads, optional
        Chooses the CPU threads of the steps (a step with a record is not timed).
    progress : bool
        A tqdm bar over the steps.

    Raises
    ------
    FloatingPointError
        Naming the step, when a loss becomes non-finite. The loss is read (which synchronizes a GPU)
        only at the records and every :data:`CHECK_EVERY` steps.
    """
    theta, B = ens.theta, len(ens)
    threads = threads or StepThreads(theta.device)
    n_steps = np.array([s[-1] for s in steps])
    lr = torch.tensor(lrs, dtype=theta.dtype, device=theta.device)[:, None]
    moments = (torch.zeros_like(theta), torch.zeros_like(theta)) if adam else None
    nxt = np.zeros(B, dtype=int)
    bar = tqdm(total=int(n_steps.max()), disable=not progress, desc="training", leave=False)
    try:
        for step in range(int(n_steps.max()) + 1):
            rows = np.flatnonzero(step <= n_steps)         # the networks not done (a network that is
            idx = None if len(rows) == B else torch.as_tensor(rows, device=theta.device)   # done is not computed)
            threads.tick()
            loss, grad = ens.loss_and_grad(theta if idx is None else theta[idx])
            due = [b for b in rows if nxt[b] < len(steps[b]) and steps[b][nxt[b]] == step]
            if due or step % CHECK_EVERY == 0:
                _check_finite(loss.cpu().numpy(), step, [lrs[b] for b in rows], rows if B > 1 else None)
            for b in due:
                threads.untimed()
                record(b)
                nxt[b] += 1
            if step == n_steps.max():
                break
            rate = lr if idx is None else lr[idx]
            if (step == n_steps[rows]).any():             # a network at its last step stays
                rate = torch.where(torch.as_tensor(step < n_steps[rows], device=lr.device)[:, None], rate, 0.0)
            update = _adam(grad, moments, idx, rate, step + 1) if adam else rate * grad
            if idx is None:
                theta.sub_(update)
            else:
                theta.index_add_(0, idx, -update)
            bar.update(1)
    finally:
        bar.close()


def _adam(grad, moments, idx, lr, k):
    """Adam's update at its k-th step (as torch.optim.Adam computes it) of the rows ``idx`` (None: all),
    their moments updated in place."""
    m, v = moments if idx is None else (moments[0][idx], moments[1][idx])
    m.lerp_(grad, 1 - BETAS[0])
    v.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
    if idx is not None:
        moments[0].index_copy_(0, idx, m)
        moments[1].index_copy_(0, idx, v)
    denom = (v.sqrt() / math.sqrt(1 - BETAS[1] ** k)).add_(EPS)
    return (lr / (1 - BETAS[0] ** k)) * m / denom


def _check_finite(losses, step, lrs, rows):
    """Raise FloatingPointError naming the step (and the network ``rows[i]``) if a loss is not finite."""
    for i in np.flatnonzero(~np.isfinite(losses)):
        raise FloatingPointError(
            f"the training loss became non-finite by step {step} (t = {step * lrs[i]:g}); "
            f"try a smaller learning rate than lr={lrs[i]:g}" + (f" (network {rows[i]})" if rows is not None else ""))
