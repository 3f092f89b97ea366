"""Recorded runs: the numbers a chapter quotes from runs it does not repeat where it is read.

A chapter read at the fast scale also reports what its experiments gave at the paper's scale, over
several seeds (minutes to an hour of CPU per seed). Those numbers are not typed into the prose: the
chapter glues every number it computes (:func:`silentlib.prose.glue`), ``python -m silentlib figures``
keeps them in its summary, and ::

    python scripts/seed_sweep.py --scale paper --seeds 0-4 --chapters 02 --record

writes them, one list over the seeds per name, with where they came from (commit, date, device,
seconds), to ``silentlib/records/<scale>/<chapter>.json``. The chapter's prose reads them back::

    paper = recorded("02_silent_alignment")
    {eval}`paper.span("mn_S")`            # "-0.43 to 0.63"

A record is a measurement of the code at its commit: rerun the command after a change that moves
the chapter's results, and commit the new record with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

__all__ = ["Record", "recorded", "record_path"]


@dataclass(frozen=True)
class Record:
    """One chapter's glued numbers at one scale, over seeds.

    Attributes
    ----------
    chapter, scale : str
        The chapter's file stem (``"02_silent_alignment"``) and ``"fast"`` or ``"paper"``.
    seeds : list of int
        The ``SILENT_SEED`` of each run, in order.
    values : dict
        ``{name: [value at each seed]}``: each glued number, a float per seed (NaN where a run did not
        glue it).
    commit, date, device, machine : str
        Where the numbers came from.
    seconds : list of float
        Each run's time in seconds.
    """

    chapter: str
    scale: str
    seeds: list[int]
    values: dict[str, list[float]]
    commit: str = ""
    date: str = ""
    device: str = ""
    machine: str = ""
    seconds: list[float] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        """(n_seeds,) the value of ``name`` at each seed."""
        if name not in self.values:
            raise KeyError(f"the {self.scale}-scale record of {self.chapter} has no value {name!r}; rerun "
                           f"scripts/seed_sweep.py --scale {self.scale} --chapters {self.chapter[:2]} --record "
                           f"after gluing it in the chapter")
        return np.asarray(self.values[name], dtype=float)

    def at(self, seed: int, name: str) -> float:
        """The value of ``name`` at ``seed``."""
        if seed not in self.seeds:
            raise KeyError(f"the record of {self.chapter} has the seeds {self.seeds}, not {seed}")
        return float(self[name][self.seeds.index(seed)])

    def span(self, name: str, fmt: str = ".2f", sep: str = " to ") -> str:
        """``"min to max"`` of ``name`` over the seeds, each formatted with ``fmt`` (one value if equal)."""
        v = self[name]
        lo, hi = format(np.nanmin(v), fmt), format(np.nanmax(v), fmt)
        return lo if lo == hi else f"{lo}{sep}{hi}"

    def seeds_text(self) -> str:
        """The seeds as prose: ``"0-4"``, ``"0"`` or ``"0, 2, 5"``."""
        s = self.seeds
        if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
            return f"{s[0]}\u2013{s[-1]}"
        return ", ".join(map(str, s))

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, allow_nan=True) + "\n"


def record_path(chapter: str, scale: str = "paper"):
    """Where the record of ``chapter`` at ``scale`` lives (a path in the installed package)."""
    return resources.files("silentlib") / "records" / scale / f"{chapter}.json"


def recorded(chapter: str, scale: str = "paper") -> Record:
    """The recorded run of ``chapter`` (its file stem) at ``scale``.

    Raises
    ------
    FileNotFoundError
        If none was recorded: make it with ``scripts/seed_sweep.py --scale <scale> --record``.
    """
    path = record_path(chapter, scale)
    if not path.is_file():
        raise FileNotFoundError(f"no {scale}-scale record of {chapter} ({path}); make it with "
                                f"python scripts/seed_sweep.py --scale {scale} --chapters {chapter[:2]} --record")
    return Record(**json.loads(path.read_text()))
