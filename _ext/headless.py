"""Sphinx extension of the book: chapters executed by the build run headless.

Sets ``SILENT_STATIC=1`` before myst-nb starts the chapters' kernels (they inherit the
environment), so that ``silentlib.widgets.slider`` builds no live widget (nbclient can stall on
the comm messages of a widget with no front end, jupyter/nbclient#312) and outputs instead HTML
range inputs over the plotting function's frames, drawn in advance on the sliders' grid: the
HTML page cannot run Python, but its sliders still move (see ``silentlib.widgets``).
"""
import os


def setup(app):
    os.environ.setdefault("SILENT_STATIC", "1")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
