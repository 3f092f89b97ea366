"""Sphinx extension of the book: chapters executed by the build run headless.

Sets ``SILENT_STATIC=1`` before myst-nb starts the chapters' kernels (they inherit the
environment), so that ``silentlib.widgets.slider`` draws its default figure once instead of
building a live widget: the HTML cannot run Python, and nbclient can stall on the comm messages
of a widget with no front end (jupyter/nbclient#312).
"""
import os


def setup(app):
    os.environ.setdefault("SILENT_STATIC", "1")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
