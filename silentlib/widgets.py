"""Sliders over the book's plotting functions (ipywidgets), safe when run headless. ::

    >>> from silentlib.widgets import slider
    >>> def show(s=1.0, sigma=0.1, depth=2):
    ...     fig, ax = plt.subplots(); ...            # draw for these parameter values
    >>> slider(show, s=(0.5, 5.0, 0.5, 1.0), sigma=("log", 1e-3, 1.0, 0.1), depth=(1, 5, 1, 2))

A range is given per keyword argument of ``plot_fn``:

* ``("log", lo, hi, value)`` -- a :class:`ipywidgets.FloatLogSlider` from lo to hi (base 10);
* ``(lo, hi, step, value)`` with all four integers -- an :class:`ipywidgets.IntSlider`;
* ``(lo, hi, step, value)`` otherwise -- a :class:`ipywidgets.FloatSlider`;
* a list -- a dropdown over its entries (first entry the default);
* anything else -- passed to ``plot_fn`` unchanged (``ipywidgets.fixed``).

Every slider has ``continuous_update=False``: ``plot_fn`` runs when a slider
is released, not while it is dragged. Building the widget runs ``plot_fn`` once
with the default values and never waits for user input, so executing a
notebook headless does not wait for input. Without ipywidgets, or when the
environment variable ``SILENT_STATIC`` is set (as it is wherever the book runs
chapters headless: the book build, nbval, ``python -m silentlib figures``),
:func:`slider` calls ``plot_fn`` once with the defaults and returns None: nbclient
can stall on the comm messages of a widget built with no front end to answer them
(jupyter/nbclient#312), and a headless run has no use for a live widget.
"""
from __future__ import annotations

import math
import numbers
import os

__all__ = ["slider", "defaults"]


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _parse(name, spec):
    """-> (kind, args, default) with kind in log/int/float/choice/fixed."""
    if isinstance(spec, tuple) and len(spec) == 4 and spec[0] == "log":
        _, lo, hi, value = spec
        if not (lo > 0 and hi > lo and lo <= value <= hi):
            raise ValueError(f"slider {name!r}: a log range needs 0 < lo <= value <= hi, got {spec}")
        return "log", (lo, hi), value
    if isinstance(spec, tuple) and len(spec) == 4 and all(isinstance(v, numbers.Real) for v in spec):
        lo, hi, step, value = spec
        if not (hi > lo and step > 0 and lo <= value <= hi):
            raise ValueError(f"slider {name!r}: expected (lo, hi, step, value) with lo < hi, "
                             f"step > 0 and lo <= value <= hi, got {spec}")
        kind = "int" if all(_is_int(v) for v in spec) else "float"
        return kind, (lo, hi, step), value
    if isinstance(spec, tuple) and spec and spec[0] == "log":
        raise ValueError(f"slider {name!r}: a log range is ('log', lo, hi, value), got {spec}")
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"slider {name!r}: an empty list of choices")
        return "choice", (spec,), spec[0]
    return "fixed", (), spec


def defaults(**ranges) -> dict:
    """The default value of every range given to :func:`slider` (what it first draws)."""
    return {name: _parse(name, spec)[2] for name, spec in ranges.items()}


def _widget(name, kind, args, value):
    import ipywidgets as w
    style = {"description_width": "initial"}
    if kind == "log":
        lo, hi = args
        a, b = math.log10(lo), math.log10(hi)
        return w.FloatLogSlider(value=value, base=10, min=a, max=b, step=(b - a) / 100,
                                description=name, continuous_update=False, style=style,
                                readout_format=".3g")
    if kind == "int":
        lo, hi, step = args
        return w.IntSlider(value=value, min=lo, max=hi, step=step, description=name,
                           continuous_update=False, style=style)
    if kind == "float":
        lo, hi, step = args
        return w.FloatSlider(value=value, min=lo, max=hi, step=step, description=name,
                             continuous_update=False, style=style, readout_format=".3g")
    if kind == "choice":
        return w.Dropdown(options=args[0], value=value, description=name, style=style)
    return w.fixed(value)


def slider(plot_fn, **ranges):
    """An ``ipywidgets.interactive`` driving ``plot_fn`` with one control per range.

    Parameters
    ----------
    plot_fn
        Callable taking the keyword arguments named in ``ranges`` and
        drawing a figure (e.g. a chapter's plotting function, which the chapter
        also calls directly for its static figure).
    **ranges
        ``name=spec``, see the module docstring.

    Returns the ``interactive`` widget (display it, or leave it as the cell's
    last expression), or None when ipywidgets is not installed or ``SILENT_STATIC``
    is set, in which case ``plot_fn`` has been called once with the default values.
    """
    parsed = {name: _parse(name, spec) for name, spec in ranges.items()}
    values = {name: p[2] for name, p in parsed.items()}
    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    if ipywidgets is None or os.environ.get("SILENT_STATIC"):
        plot_fn(**values)
        return None

    # no functools.wraps: ipywidgets reads the wrapped signature and would turn every
    # defaulted argument of plot_fn that has no range into a widget of its own
    def run(**kwargs):
        import matplotlib
        import matplotlib.pyplot as plt
        before = set(plt.get_fignums())
        result = plot_fn(**kwargs)
        if matplotlib.get_backend().lower() == "agg":
            # headless (no inline backend flushes figures into the widget's
            # output): do not let every slider move leave an open figure behind
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
        return result

    run.__name__, run.__doc__ = getattr(plot_fn, "__name__", "plot"), plot_fn.__doc__
    controls = {name: _widget(name, *p) for name, p in parsed.items()}
    return ipywidgets.interactive(run, **controls)
