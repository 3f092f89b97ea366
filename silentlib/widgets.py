"""Sliders over the book's plotting functions (ipywidgets), safe when run headless. ::

    >>> from silentlib.widgets import slider
    >>> def show(s=1.0, sigma=0.1, depth=2):
    ...     fig, ax = plt.subplots(); ...            # draw for these parameter values
    >>> slider(show, alt="The loss and the kernel's alignment over time", s=(0.5, 5.0, 0.5, 1.0),
    ...        sigma=("log", 1e-3, 1.0, 0.1), depth=(1, 5, 1, 2))

``alt`` says what the figure shows, for readers who cannot see it (a screen reader reads it out); the
HTML slider's figures add the sliders' values to it ("..., at s = 1, sigma = 0.1, depth = 2") and
keep them current as the sliders move.

A range is given per keyword argument of ``plot_fn``:

* ``("log", lo, hi, value)`` -- a :class:`ipywidgets.FloatLogSlider` from lo to hi (base 10);
* ``(lo, hi, step, value)`` with all four integers -- an :class:`ipywidgets.IntSlider`;
* ``(lo, hi, step, value)`` otherwise -- a :class:`ipywidgets.FloatSlider`;
* a list -- a dropdown over its entries (first entry the default);
* anything else -- passed to ``plot_fn`` unchanged (``ipywidgets.fixed``).

Every slider has ``continuous_update=False``: ``plot_fn`` runs when a slider
is released, not while it is dragged. Building the widget runs ``plot_fn`` once
with the default values and never waits for user input.

**Headless: the same sliders as HTML.** When the environment variable ``SILENT_STATIC``
is set (as it is wherever the book runs chapters headless: the book build, nbval,
``python -m silentlib figures``), :func:`slider` builds no ipywidgets (nbclient can stall
on the comm messages of a widget with no front end to answer them, jupyter/nbclient#312).
It returns a :class:`StaticSlider` instead: an ``IPython.display.HTML`` output with one
``<input type="range">`` per range and ``plot_fn`` drawn in advance at every point of the
sliders' grid, each frame a PNG embedded in the page, and a few lines of plain JavaScript
(:data:`SLIDER_JS`, no library) that show the frame of the sliders' position and set its alt
text to the sliders' values. The page needs no Python to move them; the range inputs move from the
keyboard (arrow keys) too. The grid:

* an integer or float range keeps its own steps, a list its entries, a log range
  :data:`LOG_POSITIONS` positions (log-spaced), as long as the product of all grid
  sizes stays within ``max_frames`` (:data:`MAX_FRAMES`, or the environment variable
  ``SILENT_SLIDER_FRAMES``);
* otherwise the grids are coarsened, evenly over their positions, the smallest first
  raised until one more step would exceed ``max_frames``: two ranges of 21 steps each
  get 6 x 6 = 36 frames at ``max_frames=40``; every grid keeps its end points and the
  default value, which is the first drawing the page shows;
* the frames are drawn at :data:`FRAME_DPI` dots per inch (the book's static figures use
  more), as 256-colour PNGs: chapter 2's page, with its slider's 40 frames, weighs 0.96 MB
  (of which 0.6 MB the frames).

Without ipywidgets, in a live kernel, :func:`slider` calls ``plot_fn`` once with the defaults
and returns None.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import itertools
import json
import math
import numbers
import os

from .config import check_int, is_int

__all__ = ["slider", "defaults", "grid", "StaticSlider", "SLIDER_JS", "MAX_FRAMES", "FRAME_DPI", "LOG_POSITIONS"]

#: Most frames one headless slider draws (the product of its grids' sizes); ``SILENT_SLIDER_FRAMES`` overrides.
MAX_FRAMES = 40
#: Resolution of the frames of a headless slider (dots per inch).
FRAME_DPI = 72
#: Positions of a log range on the full grid (as many as the live FloatLogSlider's steps, 101).
LOG_POSITIONS = 101


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
        kind = "int" if all(is_int(v) for v in spec) else "float"
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


def _positions(kind, args):
    """Number of positions of a range on its full grid."""
    if kind in ("int", "float"):
        lo, hi, step = args
        return int(math.floor((hi - lo) / step + 1e-9)) + 1
    if kind == "log":
        return LOG_POSITIONS
    if kind == "choice":
        return len(args[0])
    return 1


def _full_value(kind, args, i, n):
    """Value at position i of n (evenly spread over the full grid)."""
    if kind in ("int", "float"):
        lo, hi, step = args
        full = _positions(kind, args)
        k = round(i * (full - 1) / (n - 1)) if n > 1 else 0
        v = lo + k * step
        return int(v) if kind == "int" else float(round(v, 12))
    if kind == "log":
        lo, hi = args
        return float(lo * (hi / lo) ** (i / (n - 1))) if n > 1 else float(lo)
    return args[0][round(i * (len(args[0]) - 1) / (n - 1)) if n > 1 else 0]


def _axis(kind, args, value, n):
    """n grid values of one range, end points and the default included, in slider order."""
    if kind == "fixed":
        return [value]
    values = [_full_value(kind, args, i, n) for i in range(n)]
    if value not in values:     # the default replaces its nearest grid point (never an end point if avoidable)
        if kind == "choice":
            key = lambda j: abs(args[0].index(values[j]) - args[0].index(value))
        elif kind == "log":
            key = lambda j: abs(math.log(values[j]) - math.log(value))
        else:
            key = lambda j: abs(values[j] - value)
        inner = range(1, n - 1) if n > 2 else range(n)
        values[min(inner, key=key)] = value
    return values


def grid(max_frames=None, **ranges) -> dict:
    """The grid a headless :func:`slider` draws for these ranges: ``{name: [values...]}``.

    The product of the lengths is at most ``max_frames`` (default :data:`MAX_FRAMES`, or
    ``SILENT_SLIDER_FRAMES``); see the module docstring for how the grids are coarsened.
    """
    if max_frames is None:
        env = os.environ.get("SILENT_SLIDER_FRAMES", "").strip()
        try:
            max_frames = int(env) if env else MAX_FRAMES
        except ValueError:
            raise ValueError(f"SILENT_SLIDER_FRAMES must be a positive integer, got {env!r}") from None
    max_frames = check_int("max_frames", max_frames)
    parsed = {name: _parse(name, spec) for name, spec in ranges.items()}
    full = {name: _positions(p[0], p[1]) for name, p in parsed.items()}
    n = {name: min(1 if full[name] == 1 else 2, full[name]) for name in parsed}
    if math.prod(n.values()) > max_frames:
        raise ValueError(f"slider: {len([v for v in n.values() if v > 1])} ranges need at least "
                         f"{math.prod(n.values())} frames, more than max_frames={max_frames}")
    while True:
        growable = [k for k in parsed if n[k] < full[k]
                    and math.prod(n.values()) // n[k] * (n[k] + 1) <= max_frames]
        if not growable:
            break
        k = min(growable, key=lambda k: n[k])
        n[k] += 1
    return {name: _axis(p[0], p[1], p[2], n[name]) for name, p in parsed.items()}


def _label(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _draw_pngs(plot_fn, values, dpi, quiet):
    """Call plot_fn(**values) and return the PNG bytes of every figure it opened (then closed)."""
    import matplotlib.pyplot as plt
    before = set(plt.get_fignums())
    show = plt.show
    plt.show = lambda *a, **k: None       # the inline backend would display (and close) the figure
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            plot_fn(**values)
    finally:
        plt.show = show
    pngs = []
    for num in sorted(set(plt.get_fignums()) - before):
        fig = plt.figure(num)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        pngs.append(_small_png(buf.getvalue()))
    return pngs


def _small_png(png):
    """The PNG with a 256-colour palette (a third of the size; the figures use few colours)."""
    try:
        from PIL import Image
    except ImportError:
        return png
    im = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


#: The JavaScript of a headless slider, which binds every ``[data-silent-slider]`` element once and,
#: on input, shows the frame of the sliders' positions (inlined after each slider, and also
#: served by the book as ``_static/silent-slider.js``).
SLIDER_JS = """\
(function () {
  function bind(root) {
    if (root.dataset.silentBound) return;
    root.dataset.silentBound = "1";
    var data = JSON.parse(root.querySelector("script.silent-slider-frames").textContent);
    var inputs = root.querySelectorAll("input[data-silent-param]");
    var images = root.querySelectorAll("img[data-silent-figure]");
    function draw() {
      var k = 0, at = [];
      inputs.forEach(function (input, i) {
        var j = Math.max(0, Math.min(data.shape[i] - 1, Math.round(+input.value)));
        k = k * data.shape[i] + j;
        var out = root.querySelector('output[data-silent-param="' + input.dataset.silentParam + '"]');
        if (out) out.textContent = data.labels[i][j];
        at.push(data.names[i] + " = " + data.labels[i][j]);
      });
      images.forEach(function (img, m) {
        var png = data.frames[k][m];
        if (png) img.src = "data:image/png;base64," + png;
        img.alt = data.alts[m] + (at.length ? ", at " + at.join(", ") : "");
      });
    }
    inputs.forEach(function (input) { input.addEventListener("input", draw); });
  }
  function bindAll() { document.querySelectorAll("[data-silent-slider]").forEach(bind); }
  window.silentSliders = bindAll;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", bindAll);
  else bindAll();
})();
"""

try:
    from IPython.display import HTML as _HTML
except ImportError:  # silentlib without IPython: an object with the same _repr_html_
    class _HTML:
        def __init__(self, data):
            self.data = data

        def _repr_html_(self):
            return self.data


class StaticSlider(_HTML):
    """A slider as HTML: ``<input type="range">`` controls over frames drawn in advance.

    What :func:`slider` returns headless; displayed (as a cell's last expression) it is a
    ``text/html`` output that needs no Python and no JavaScript library. ``alt`` says what the
    figure shows; each frame's alt text adds the sliders' values. Attributes: ``grid``
    (``{name: [values]}``, the sliders' positions), ``frames`` (one list of PNG bytes per grid
    point, in C order over ``grid``), ``default`` (the index of the first frame shown) and
    ``data`` (the HTML).
    """

    def __init__(self, plot_fn, ranges, alt, max_frames=None, dpi=None):
        parsed = {name: _parse(name, spec) for name, spec in ranges.items()}
        self.grid = grid(max_frames, **ranges)
        self.dpi = FRAME_DPI if dpi is None else dpi
        moving = [k for k in parsed if parsed[k][0] != "fixed"]
        fixed = {k: parsed[k][2] for k in parsed if parsed[k][0] == "fixed"}
        default_pos = tuple(self.grid[k].index(parsed[k][2]) for k in moving)
        shape = tuple(len(self.grid[k]) for k in moving)
        points = list(itertools.product(*(range(len(self.grid[k])) for k in moving)))
        self.default = points.index(default_pos)
        frames = [None] * len(points)
        # the default first, with its printed output; the other frames silently
        for i in [self.default] + [i for i in range(len(points)) if i != self.default]:
            values = dict(fixed, **{k: self.grid[k][j] for k, j in zip(moving, points[i])})
            frames[i] = _draw_pngs(plot_fn, values, self.dpi, quiet=i != self.default)
        self.frames = frames
        n_fig = max(len(f) for f in frames)
        if n_fig == 0:
            raise ValueError(f"slider: {getattr(plot_fn, '__name__', plot_fn)!r} drew no figure")
        alts = [alt if n_fig == 1 else f"{alt} (figure {m + 1} of {n_fig})" for m in range(n_fig)]
        super().__init__(self._html(moving, shape, default_pos, alts))

    def _html(self, moving, shape, default_pos, alts):
        b64 = [[base64.b64encode(p).decode("ascii") for p in f] for f in self.frames]
        data = {"names": moving, "shape": shape, "alts": alts,
                "labels": [[_label(v) for v in self.grid[k]] for k in moving], "frames": b64}
        controls = []
        for k, j, n in zip(moving, default_pos, shape):
            e = html.escape(k)
            controls.append(
                f'<label class="silent-slider-control">{e} <input type="range" min="0" max="{n - 1}" '
                f'step="1" value="{j}" data-silent-param="{e}" aria-label="{e}"> '
                f'<output data-silent-param="{e}">{html.escape(_label(self.grid[k][j]))}</output></label>')
        first = b64[self.default]
        at = ", ".join(f"{k} = {_label(self.grid[k][j])}" for k, j in zip(moving, default_pos))
        images = "".join(
            f'<img data-silent-figure="{m}" alt="{html.escape(a + (", at " + at if at else ""))}" '
            f'src="data:image/png;base64,{first[m] if m < len(first) else ""}">' for m, a in enumerate(alts))
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        return (f'<div class="silent-slider" data-silent-slider="{len(self.frames)}">'
                f'<div class="silent-slider-controls">{"".join(controls)}</div>'
                f'<div class="silent-slider-figures">{images}</div>'
                f'<script type="application/json" class="silent-slider-frames">{payload}</script>'
                f'</div><script>{SLIDER_JS}</script>')

    def __repr__(self):
        sizes = " x ".join(f"{k} ({len(v)})" for k, v in self.grid.items() if len(v) > 1)
        return f"<StaticSlider over {sizes or 'nothing'}: {len(self.frames)} frames>"


def slider(plot_fn, *, alt: str, **ranges):
    """An ``ipywidgets.interactive`` driving ``plot_fn`` with one control per range.

    Parameters
    ----------
    plot_fn
        Callable taking the keyword arguments named in ``ranges`` and
        drawing a figure (e.g. a chapter's plotting function, which the chapter
        also calls directly for its static figure).
    alt
        What the figure shows, in words (the HTML slider's alt text, to which its frames add the
        sliders' values).
    **ranges
        ``name=spec``, see the module docstring.

    Returns
    -------
    ipywidgets.interactive, StaticSlider or None
        The ``interactive`` widget (display it, or leave it as the cell's
        last expression). With ``SILENT_STATIC`` set, a :class:`StaticSlider` (HTML sliders
        over frames of ``plot_fn`` drawn in advance on the grid :func:`grid` gives; no
        ipywidgets). Without ipywidgets otherwise, None, ``plot_fn`` having been called
        once with the default values.
    """
    parsed = {name: _parse(name, spec) for name, spec in ranges.items()}
    values = {name: p[2] for name, p in parsed.items()}
    if not (isinstance(alt, str) and len(alt.split()) >= 3):
        raise ValueError(f"slider: alt must say in words what the figure shows, got {alt!r}")
    if os.environ.get("SILENT_STATIC"):
        return StaticSlider(plot_fn, ranges, alt)
    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    if ipywidgets is None:
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
