"""Run every chapter of the book under nbval.

Each ``chapters/*.md`` (a jupytext MyST notebook) is converted to ``_build/nbval/<name>.ipynb``
(an ignored folder) and handed to nbval, so a chapter added to ``chapters/`` is tested without
editing the tests. nbval runs with ``--nbval-lax --nbval-current-env`` (set in pyproject.toml):
every cell must run without error; the chapters' hidden assertion cells check their claims, and
cells tagged ``nbval-check-output`` are compared with their stored outputs. Every markdown cell's
``{eval}`` roles are evaluated too, by the hidden cells :func:`silentlib.prose.with_eval_cells` adds (as
the book's build does), so an expression of the prose that fails, fails the chapter.

The data: when ``../shared/data`` (beside the project's folder) exists and ``SILENT_DATA`` is
unset, ``SILENT_DATA`` is set to its absolute path for this session and the chapters' kernels
(which inherit the environment), as ``.ci/run`` does; tests that need an empty data folder set
their own.
"""
import os
from pathlib import Path

import jupytext
import nbformat
from nbval.plugin import IPyNbFile

from silentlib.prose import with_eval_cells

ROOT = Path(__file__).parent
# the chapters' kernels inherit these: sliders build no widget that nobody answers, but their HTML
# version (see silentlib.widgets), here with at most 16 frames each to keep the test run short (the
# book's build draws up to 40; tests/test_browser.py moves those in a browser)
os.environ.setdefault("SILENT_STATIC", "1")
os.environ.setdefault("SILENT_SLIDER_FRAMES", "16")
NB_DIR = ROOT / "_build" / "nbval"


def point_silent_data_at_shared(root, environ):
    """Set ``environ["SILENT_DATA"]`` to ``root/../shared/data`` (absolute) if it exists and
    SILENT_DATA is unset or empty; returns the value SILENT_DATA then has (or None)."""
    shared = (Path(root) / ".." / "shared" / "data").resolve()
    if not environ.get("SILENT_DATA") and shared.is_dir():
        environ["SILENT_DATA"] = str(shared)
    return environ.get("SILENT_DATA") or None


point_silent_data_at_shared(ROOT, os.environ)


def pytest_collect_file(file_path, parent):
    path = Path(file_path)
    if path.suffix != ".md" or path.parent != ROOT / "chapters":
        return None
    NB_DIR.mkdir(parents=True, exist_ok=True)
    notebook = NB_DIR / (path.stem + ".ipynb")
    nbformat.write(with_eval_cells(jupytext.read(path)), notebook)
    return IPyNbFile.from_parent(parent, path=notebook)
