"""CPU threads for training: chosen by timing the loop's own steps under the machine's load.

A gradient step of the book's small networks is well under a millisecond of work: shared between
two OpenMP threads it gains nothing, and while other processes hold the cores each thread waits
for a time slice at every barrier (a depth-5 linear network of chapter 4: 12.6 ms a step on torch's
two threads of a busy 2-core machine, 0.9 ms on one). Larger networks do gain from threads on an
idle machine. So :class:`StepThreads` times the loop's own steps alternately on one thread and on
as many as other processes leave free (:func:`silentlib.ntk.products.threads_for`), keeps the faster,
chooses again every :data:`RETUNE_SECONDS`, and restores torch's setting around the tracked NTKs
(which choose their own threads) and at the end.
"""
from __future__ import annotations

import contextlib
import time

import torch

from .ntk.products import threads_for

#: Steps timed at each of the two thread counts when choosing.
TRIALS = 3
#: Seconds after which the choice is made again (the load of a shared machine changes).
RETUNE_SECONDS = 10.0


class StepThreads:
    """torch's CPU thread count for a loop of like steps: call :meth:`tick` before every step.

    Nothing changes on a GPU or when torch already uses one thread. Used as a context manager it
    restores torch's setting on exit; :meth:`paused` restores it for a block within the loop, and
    :meth:`untimed` leaves a step that did more than its work out of the timing.

    Parameters
    ----------
    device : torch.device or str
        Where the steps compute.
    """

    def __init__(self, device):
        self.requested = torch.get_num_threads()
        self.on = torch.device(device).type == "cpu" and self.requested > 1
        self.plan: list[int] = []          # thread counts of the steps still to time
        self.times: dict[int, list[float]] = {}
        self.timing = None                 # the count the current step is timed at (None: not timed)
        self.chosen = self.requested
        self.chosen_at = -float("inf")
        self.last = 0.0

    def __enter__(self) -> StepThreads:
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.requested)

    def tick(self) -> None:
        """Mark the start of a step: time the one that ended, set the threads for the next."""
        if not self.on:
            return
        now = time.perf_counter()
        if self.timing is not None:
            self.times.setdefault(self.timing, []).append(now - self.last)
            if not self.plan:            # every trial timed: keep the faster count
                self.chosen_at = now
                self.chosen = min(self.times, key=lambda n: sorted(self.times[n])[len(self.times[n]) // 2])
        if not self.plan and now - self.chosen_at > RETUNE_SECONDS:
            self.chosen_at, self.times, self.chosen = now, {}, 1
            free = threads_for(self.requested)
            if free > 1:
                self.plan = [free, 1] * TRIALS
        self.timing = self.plan.pop(0) if self.plan else None
        torch.set_num_threads(self.timing or self.chosen)
        self.last = time.perf_counter()

    def untimed(self) -> None:
        """Leave the current step out of the timing (it did more than a step: a record, say)."""
        if self.timing is not None:
            self.plan.insert(0, self.timing)     # time that count again on a later step
            self.timing = None

    @contextlib.contextmanager
    def paused(self):
        """Within the block torch has its own setting again (for a computation that chooses its own
        threads, such as an NTK); the step it falls in is not timed."""
        if not self.on:
            yield
            return
        self.untimed()
        torch.set_num_threads(self.requested)
        try:
            yield
        finally:
            torch.set_num_threads(self.timing or self.chosen)
