"""What a chapter checks: its hidden assertions, listed for the reader.

Every claim a chapter makes is asserted in a hidden cell (tag ``remove-cell``), so that running
the chapter tests the science. :func:`checks_box` turns those assertions into one folded box at
the end of the chapter, so the reader can see what is checked, with which tolerance, and the
spread measured over seeds where a comment above the assertion gives it. The box is generated from
the chapter's own source, so it cannot drift from the checks.
"""
from __future__ import annotations

import ast
import html
from pathlib import Path


def _message(node: ast.Assert) -> str:
    """The assertion's message with its placeholders as '...', cut before ', got ...'; else its condition."""
    msg = node.msg
    if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
        text = msg.value
    elif isinstance(msg, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "..." for v in msg.values)
    else:
        return ast.unparse(node.test)
    for cut in (", got", " got ..."):
        if cut in text:
            text = text[: text.index(cut)]
    return text.strip() or ast.unparse(node.test)


def _assertions(source: str) -> list[str]:
    """One line per assert statement in ``source``, preceded by the comment lines right above it."""
    lines = source.split("\n")
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assert):
            notes, k = [], node.lineno - 2
            while k >= 0 and lines[k].strip().startswith("#"):
                notes.insert(0, lines[k].strip().lstrip("#").strip())
                k -= 1
            note = f" ({' '.join(notes)})" if notes else ""
            out.append((node.lineno, _message(node) + note))
    return [text for _, text in sorted(out)]


def chapter_checks(chapter: str, chapters_dir: Path | None = None) -> list[str]:
    """The claims a chapter's hidden cells assert, in order, one string each.

    ``chapter`` is the chapter's file name without ``.md`` (e.g. ``"01_ntk_kernel_regression"``);
    ``chapters_dir`` defaults to the book's ``chapters/`` folder. Needs jupytext (a book tool).
    """
    try:
        import jupytext
    except ImportError:  # pragma: no cover - the book's requirements install it
        raise ImportError("chapter_checks reads the book's chapters and needs jupytext: "
                          "run from a checkout of the book with its requirements installed") from None
    if chapters_dir is None:
        chapters_dir = Path(__file__).resolve().parents[1] / "chapters"
    path = Path(chapters_dir) / f"{chapter}.md"
    if not path.is_file():
        raise ValueError(f"no chapter {chapter!r}: expected the file {path}")
    found = []
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code" and "remove-cell" in cell.metadata.get("tags", []):
            found += _assertions(cell.source)
    return found


def checks_box(chapter: str, chapters_dir: Path | None = None):
    """A folded HTML box, "What this chapter checks", listing :func:`chapter_checks` (an IPython HTML object)."""
    from IPython.display import HTML
    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in chapter_checks(chapter, chapters_dir))
    return HTML('<details class="silent-checks"><summary>What this chapter checks</summary>'
                "<p>Each line is an assertion in a hidden cell, run whenever the chapter is built or "
                "tested. The tolerances were set from the spread over the seeds 0 to 4 "
                "(<code>SILENT_SEED</code>) at the fast scale, and each check passes at all of them; "
                "where a comment gives that spread, it is shown in brackets.</p>"
                f"<ul>{items}</ul></details>")
