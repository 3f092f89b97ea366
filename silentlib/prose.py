"""The numbers in a chapter's prose, from the chapter's own run: one source for the HTML book and JupyterLab.

A chapter shows a computed number with MyST's inline-expression role::

    the alignment rises from {eval}`f"{prose.A0:.3f}"` to ...

The role holds a Python expression, evaluated in the chapter's kernel once the code cells above it
have run; what it shows is the value's plain text (a ``str`` without its quotes, so format numbers
in the expression with an f-string), or the markdown of an ``IPython.display.Markdown``. A value
that has no variable of its own (one computed in a loop, say) is kept with :func:`glue` in
:data:`prose`, the namespace the expressions read: ``glue("A0", float(A[0]))`` makes ``prose.A0``.

Where the expressions are evaluated:

* **JupyterLab** (Binder): jupyterlab-myst evaluates the ``{eval}`` roles of a markdown cell when the
  cell is run (Run All runs them in order), through the kernel's ``user_expressions``, and shows the
  results in place. Before that, each shows as its expression.
* **The HTML book, the tests and** ``python -m silentlib figures``: :func:`with_eval_cells` puts after
  every markdown cell with ``{eval}`` roles a hidden code cell (tag ``remove-cell``) that evaluates
  them the same way (:func:`evaluate`, through ``user_expressions``) and outputs the results as
  :data:`EVAL_MIME`. An expression that raises fails that cell, and so the build or the test. The
  book's Sphinx extension (``_ext/inline_eval.py``) shows these results in place of the roles; the
  build's execution cache keys on these cells like on any other.
"""
from __future__ import annotations

import re
import types

__all__ = ["glue", "prose", "evaluate", "with_eval_cells", "eval_roles", "show_glued", "EVAL_MIME", "GLUE_MIME"]

#: The values :func:`glue` keeps for the prose (``prose.name``).
prose = types.SimpleNamespace()

#: The mime type of an evaluation cell's output, a list of ``{"expression": ..., "result": ...}`` with each
#: result as the kernel's ``user_expressions`` gives it (``status``, ``data``, ``metadata``).
EVAL_MIME = "application/vnd.silentlib.eval+json"

#: The mime type of :func:`show_glued`'s output: ``{name: number}`` of every number glued so far.
GLUE_MIME = "application/vnd.silentlib.glue+json"

# an {eval} role: {eval}`expression` (or ``expression`` when the expression holds a backtick)
_ROLE = re.compile(r"\{eval\}(`+)(.+?)\1(?!`)", re.S)


def glue(name: str, value) -> None:
    """Keep ``value`` as ``prose.<name>`` for the chapter's ``{eval}`` roles (``name`` must be an identifier)."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"glue: the name must be a Python identifier, got {name!r}")
    setattr(prose, name, value)


def show_glued() -> None:
    """Display every number kept in :data:`prose` as one :data:`GLUE_MIME` output, ``{name: float}``
    (``python -m silentlib figures`` runs this after a chapter, and keeps the numbers in its summary, from
    which ``scripts/seed_sweep.py --record`` makes a :mod:`silentlib.records` record)."""
    import numbers

    from IPython.display import display

    values = {k: float(v) for k, v in vars(prose).items()
              if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    display({GLUE_MIME: values}, raw=True)


def eval_roles(markdown: str) -> list[str]:
    """The expressions of the ``{eval}`` roles in a markdown cell's source, in order."""
    return [m.group(2).strip() for m in _ROLE.finditer(markdown)]


def evaluate(expressions: list[str]) -> None:
    """Evaluate ``expressions`` in the running IPython kernel as jupyterlab-myst does (``user_expressions``)
    and display the results as one :data:`EVAL_MIME` output; raise if one of them fails."""
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    results = shell.user_expressions({str(i): e for i, e in enumerate(expressions)})
    out = [{"expression": e, "result": results[str(i)]} for i, e in enumerate(expressions)]
    failed = [f"{{eval}}`{o['expression']}`: {o['result'].get('ename')}: {o['result'].get('evalue')}"
              for o in out if o["result"].get("status") != "ok"]
    if failed:
        raise RuntimeError("an inline expression of the prose failed:\n" + "\n".join(failed))
    display({EVAL_MIME: out}, raw=True)


def with_eval_cells(nb):
    """``nb`` (a notebook read from a chapter) with an evaluation cell after every markdown cell that has
    ``{eval}`` roles: hidden (``remove-cell``), it runs :func:`evaluate` on that cell's expressions.
    A source map (myst-nb's ``nb.metadata["source_map"]``, one line per cell) gets the markdown cell's
    line for the new cell, so that the other cells keep theirs. Returns ``nb``, changed in place."""
    import nbformat

    source_map = nb.metadata.get("source_map")
    cells, lines = [], []
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        if source_map is not None:
            lines.append(source_map[i])
        expressions = eval_roles(cell.source) if cell.cell_type == "markdown" else []
        if expressions:
            code = f'__import__("silentlib.prose").prose.evaluate({expressions!r})'
            cells.append(nbformat.v4.new_code_cell(code, metadata={"tags": ["remove-cell"]}))
            if source_map is not None:
                lines.append(source_map[i])
    nb.cells = cells
    if source_map is not None:
        nb.metadata["source_map"] = lines
    return nb
