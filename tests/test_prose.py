"""The numbers in the prose (silentlib.prose, _ext/inline_eval.py): ``{eval}`` roles evaluated by the
run, the same way in the book's build (with its cache), the tests and JupyterLab."""
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from silentlib import prose

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3 (ipykernel)
      language: python
      name: python3
    ---

    # A page

    ```{code-cell} ipython3
    from silentlib.prose import glue, prose
    x = 1 / 3
    glue("ratio", 2 / 3)
    ```

    x is {eval}`f"{x:.3f}"`, the ratio {eval}`f"{prose.ratio:.1%}"`.

    ```{code-cell} ipython3
    x = 2.5
    ```

    Now x is {eval}`f"{x:.3f}"` and {eval}`"a string"` shows without quotes.
    ''')


def test_eval_roles_and_glue():
    assert prose.eval_roles('a {eval}`f"{x:.2f}"` b {eval}``y`z`` c') == ['f"{x:.2f}"', "y`z"]
    assert prose.eval_roles("{glue:text}`k:.2f` and `{eval}` alone") == []
    prose.glue("answer", 42)
    assert prose.prose.answer == 42
    with pytest.raises(ValueError, match="identifier"):
        prose.glue("not a name", 1)


def test_eval_cells_follow_their_markdown_and_keep_the_source_map():
    nb = jupytext.reads(CHAPTER, fmt="md:myst")
    nb.metadata["source_map"] = list(range(10, 10 * (len(nb.cells) + 1), 10))
    kinds = [c.cell_type for c in prose.with_eval_cells(nb).cells]
    assert kinds == ["markdown", "code", "markdown", "code", "code", "markdown", "code"]
    assert nb.cells[3].metadata["tags"] == ["remove-cell"] and "'f\"{prose.ratio:.1%}\"'" in nb.cells[3].source
    assert nb.metadata["source_map"] == [10, 20, 30, 30, 40, 50, 50]


def run(nb, tmp_path):
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [[(o["expression"], o["result"]["data"]["text/plain"]) for o in out["data"][prose.EVAL_MIME]]
            for c in nb.cells for out in c.get("outputs", []) if prose.EVAL_MIME in out.get("data", {})]


def test_each_markdown_cell_sees_the_kernel_as_it_is_there(tmp_path):
    shown = run(prose.with_eval_cells(jupytext.reads(CHAPTER, fmt="md:myst")), tmp_path)
    assert shown == [[('f"{x:.3f}"', "'0.333'"), ('f"{prose.ratio:.1%}"', "'66.7%'")],
                     [('f"{x:.3f}"', "'2.500'"), ('"a string"', "'a string'")]]


def test_a_failing_expression_fails_the_run(tmp_path):
    nb = prose.with_eval_cells(jupytext.reads(CHAPTER.replace("prose.ratio", "prose.ratoi"), fmt="md:myst"))
    with pytest.raises(CellExecutionError, match="ratoi"):
        run(nb, tmp_path)


def sphinx_build(src, out):
    return subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "-q", str(src), str(out)],
                          capture_output=True, text=True, timeout=600)


def test_the_book_shows_the_run_s_values_from_its_cache(tmp_path):
    """myst-nb in cache mode with the book's extension: the values in the page, read from the cache the
    second time; an expression that fails, fails the build."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / '_ext')!r})\n"
                                 "extensions = ['myst_nb', 'inline_eval']\nnb_execution_mode = 'cache'\n"
                                 f"nb_execution_cache_path = {str(tmp_path / 'cache')!r}\n"
                                 "exclude_patterns = ['_build']\nnb_execution_show_tb = True\n")
    (src / "index.md").write_text(CHAPTER)
    for _ in range(2):
        done = sphinx_build(src, tmp_path / "html")
        assert done.returncode == 0, done.stdout + done.stderr
        page = (tmp_path / "html" / "index.html").read_text()
        assert "x is <span" in page and ">0.333<" in page and ">66.7%<" in page and ">2.500<" in page
        assert ">a string<" in page and "{eval}" not in page and "prose.ratio" not in page
        (src / "index.md").touch()                        # read again: the notebook comes from the cache
    assert len(list((tmp_path / "cache").rglob("*.ipynb"))) == 1
    (src / "index.md").write_text(CHAPTER.replace("prose.ratio", "prose.ratoi"))
    failed = sphinx_build(src, tmp_path / "html2")
    assert failed.returncode != 0 and "ratoi" in failed.stdout + failed.stderr
