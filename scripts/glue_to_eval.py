"""Turn a chapter's myst-nb glue into inline expressions (re-runnable; a chapter already converted is left as is).

    python scripts/glue_to_eval.py chapters/*.md

The numbers of a chapter's prose used to be myst-nb's ``glue``: ``glue("key", value, display=False)`` in the
code and ``{glue:text}`key:.3f``` in the markdown, which only the HTML book could show (JupyterLab showed the
key). Now the markdown holds the expression itself (``silentlib.prose``; the rule is in conventions.md):

* ``{glue:text}`key:fmt``` becomes ``{eval}`f"{prose.key:fmt}"```, ``{glue:text}`key``` becomes
  ``{eval}`f"{prose.key}"``` (the same text: glue:text showed str() of the value, formatted);
* ``{glue:md}`key``` and ``{glue}`key``` become ``{eval}`prose.key``` (a Markdown object renders as markdown);
* ``from myst_nb import glue`` becomes ``from silentlib.prose import glue, prose``; the calls stay, without
  their ``display=False`` (silentlib's glue displays nothing).

Any other glue role or directive (``glue:figure``, ``glue:math``, ...) is reported and the file is left unchanged.

One thing the script cannot do: glue's values could come from a cell *after* the text that showed them (all
glue was collected before the page was written), while an ``{eval}`` role is evaluated where it stands. A
converted chapter whose paragraph uses a value glued further down fails to run (nbval, the book's build) with
"an inline expression of the prose failed: {eval}`f"{prose.key...}"`: AttributeError: ... 'key'"; move the
cell that computes the value before the paragraph (a hidden check cell usually can), or write the number as
an expression of what is already computed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

TEXT = re.compile(r"\{glue:text\}`([A-Za-z_][A-Za-z0-9_]*)(?::([^`]*))?`")
ANY = re.compile(r"\{glue(?::md|:any)?\}`([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?`")
LEFT = re.compile(r"\{glue[:a-z]*\}|```\{glue[:a-z]*\}|:::\{glue[:a-z]*\}")
DISPLAY = re.compile(r",\s*display\s*=\s*False\s*(,?)(\s*)\)")


def _text(m):
    key, fmt = m.group(1), m.group(2)
    return f'{{eval}}`f"{{prose.{key}:{fmt}}}"`' if fmt else f'{{eval}}`f"{{prose.{key}}}"`'


def _no_display(m):
    # keep the trailing comma of a call spread over several lines, drop it on one line
    return ("," if "\n" in m.group(2) else "") + m.group(2) + ")"


def convert(text: str) -> str:
    text = TEXT.sub(_text, text)
    text = ANY.sub(lambda m: f"{{eval}}`prose.{m.group(1)}`", text)
    text = text.replace("from myst_nb import glue\n", "from silentlib.prose import glue, prose\n")
    return DISPLAY.sub(_no_display, text)


def main(paths: list[str]) -> int:
    status = 0
    for path in map(Path, paths):
        old = path.read_text()
        new = convert(old)
        left = sorted(set(LEFT.findall(new)))
        if left:
            print(f"{path}: not converted, it uses {', '.join(left)}", file=sys.stderr)
            status = 1
            continue
        if new != old:
            path.write_text(new)
            print(f"{path}: converted")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
