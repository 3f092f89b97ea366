"""Sphinx extension of the book: the chapters' ``{eval}`` roles show the numbers of their own run.

A chapter writes a computed number as ``{eval}`f"{prose.A0:.3f}"` `` (:mod:`silentlib.prose`; the
authoring rule is in ``conventions.md``). JupyterLab (jupyterlab-myst) evaluates these roles in the
live kernel. myst-nb evaluates them only when it executes a notebook inline, without its cache; so
instead, here:

* every chapter read by myst-nb gets, after each markdown cell with ``{eval}`` roles, a hidden cell
  that evaluates them in the kernel (:func:`silentlib.prose.with_eval_cells`, the same cells that the
  tests run). They are executed, and cached, with the chapter's other cells;
* the ``eval`` role takes the results from those cells' outputs, in order, and renders each as
  myst-nb renders a kernel's value inline (a string without its quotes, markdown as markdown).

A role whose expression does not match the next result (an evaluation out of order) or that is used
outside a chapter is a warning, so ``-W`` fails the build.
"""
from myst_nb import sphinx_ as nb_sphinx
from myst_nb.core.variables import VariableOutput, create_warning, render_variable_outputs
from myst_nb.ext.utils import RoleBase

from silentlib.prose import EVAL_MIME, with_eval_cells


def _results(client):
    """[(expression, result), ...] of the notebook's evaluation cells, in order (kept on the client)."""
    if not hasattr(client, "_silent_eval"):
        client._silent_eval = [(o["expression"], o["result"])
                               for cell in client.notebook.cells if cell.cell_type == "code"
                               for out in cell.get("outputs", []) if EVAL_MIME in out.get("data", {})
                               for o in out["data"][EVAL_MIME]]
        client._silent_eval_next = 0
    return client._silent_eval


class EvalRole(RoleBase):
    """``{eval}`expression```: the value the chapter's run gave ``expression`` at this point."""

    def run(self):
        def warn(msg):
            return [], [create_warning(msg, self.document, self.line, subtype="eval")]

        if "nb_renderer" not in self.document:
            return warn(f"{{eval}}`{self.text}`: inline expressions work in chapters (notebooks) only")
        element = self.document["nb_renderer"]
        client = element.renderer.nb_client
        results = _results(client)
        k = client._silent_eval_next
        if k >= len(results) or results[k][0] != self.text.strip():
            found = results[k][0] if k < len(results) else "nothing"
            return warn(f"{{eval}}`{self.text}`: the run evaluated {found!r} here (roles read out of order?)")
        client._silent_eval_next += 1
        result = results[k][1]
        output = VariableOutput(data=result["data"], metadata={**result["metadata"], "strip_text_quotes": True},
                                nb_renderer=element, vtype="eval", index=0)
        return render_variable_outputs([output], self.document, self.line, self.source, inline=True), []


def _patch_reader():
    """Make myst-nb's notebook reader add the evaluation cells (before the notebook is tokenized,
    executed or looked up in the cache)."""
    create = nb_sphinx.create_nb_reader
    if getattr(create, "silent_eval", False):
        return

    def create_nb_reader(*args, **kwargs):
        reader = create(*args, **kwargs)
        if reader is not None:
            read = reader.read
            reader.read = lambda text: with_eval_cells(read(text))
        return reader

    create_nb_reader.silent_eval = True
    nb_sphinx.create_nb_reader = create_nb_reader


def add_role(app):
    app.add_role("eval", EvalRole(), override=True)     # after myst-nb's own (which needs inline execution)


def setup(app):
    _patch_reader()
    app.connect("builder-inited", add_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
