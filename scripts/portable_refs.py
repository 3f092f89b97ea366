"""Give every reference that leaves a chapter its own text, so that JupyterLab shows it (re-runnable).

    jupyter-book build . -W -n --keep-going        # first: the build's environment knows every target
    python scripts/portable_refs.py chapters/*.md

In JupyterLab (Binder) a chapter is one notebook: jupyterlab-myst resolves references to its own
sections and equations, but not to another chapter, a page, a figure drawn by a code cell, an
exercise or a paper, and shows those as "Cross Reference Not Found" / "Citation Not Found". This
script rewrites exactly those references into forms both renderers show, with the text the HTML
book shows, read from the build's environment (``_build/.doctrees/environment.pickle``):

* ``{ref}`label``` to another page or a chapter's title becomes ``{ref}`Title <label>```, to a
  figure or an exercise ``{ref}`Fig. N <label>``` or ``{ref}`Exercise N <label>```;
* ``{numref}`label``` (a figure or an exercise) becomes ``{ref}`Fig. N <label>``` or ``{ref}`Exercise N <label>```;
* ``{eq}`label``` to another chapter's equation becomes ``[(N)](#label)`` (Sphinx shows the number it
  gives the equation; JupyterLab the text);
* ``{cite}`key``` and ``{cite:t}`key``` become ``[Author et al. 2022](#key)``, which sphinxcontrib-bibtex
  renders as the citation ``[Author et al., 2022]`` (so the bibliography lists every entry: ``:all:``).

References within a chapter to its own sections and equations, and references that carry a text of
their own, are left as they are; but the numbers this script wrote (``Fig. N``, ``Exercise N``,
``(N)``) are brought up to date, so that re-running it after figures or equations have moved
renumbers them (tests/test_book.py checks the built book's numbered references).
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r"\{(ref|numref|eq|cite|cite:t|cite:p)\}`([^`<>]+)`")
# what an earlier run wrote, whose numbers may have moved since (a figure added before it, ...)
NUMBERED = re.compile(r"\{ref\}`(?:Fig\.|Exercise) [\d.]+ <([\w-]+)>`|\[\([\d.]+\)\]\(#([\w-]+)\)")


def load_env(path: Path):
    sys.path.insert(0, str(ROOT / "_ext"))       # the book's extensions, pickled with the environment
    with open(path, "rb") as f:
        return pickle.load(f)


def author_year(keys: list[str]) -> str:
    """"Atanasov et al. 2022; Saxe et al. 2014": the book's author-year labels (_ext/webbook.py)."""
    import pybtex.database
    sys.path.insert(0, str(ROOT / "_ext"))
    from webbook import AuthorYearLabelStyle
    bib = pybtex.database.parse_file(str(ROOT / "references.bib"))
    style = AuthorYearLabelStyle()
    return "; ".join(style.format_label(bib.entries[k]) for k in keys)


class Targets:
    """What the HTML book shows for each target, from the build's environment."""

    def __init__(self, env):
        self.env = env
        self.labels = env.domaindata["std"]["labels"]              # label -> (docname, id, title)
        self.anon = env.domaindata["std"]["anonlabels"]            # label -> (docname, id)
        self.equations = env.domaindata["math"]["objects"]         # label -> (docname, number)

    def figure(self, label):
        docname, node_id = self.anon.get(label, (None, None))
        number = self.env.toc_fignumbers.get(docname, {}).get("figure", {}).get(node_id)
        return f"Fig. {'.'.join(map(str, number))}" if number else None

    def exercise(self, label):
        reg = getattr(self.env, "sphinx_exercise_registry", {}).get(label)
        if not reg:
            return None
        docname = reg["docname"]
        number = self.env.toc_fignumbers.get(docname, {}).get("exercise", {}).get(label)
        return f"Exercise {'.'.join(map(str, number))}" if number else None

    def equation(self, label):
        docname, number = self.equations[label]
        node_id = f"equation-{label}"
        numbers = self.env.toc_fignumbers.get(docname, {}).get("displaymath", {}).get(node_id)
        return docname, f"({'.'.join(map(str, numbers))})" if numbers else f"({number})"

    def is_title(self, label):
        docname, _, title = self.labels[label]
        return title == self.env.titles[docname].astext()


def convert(text: str, docname: str, targets: Targets) -> str:
    def rewrite(m):
        role, target = m.group(1), m.group(2).strip()
        if role.startswith("cite"):
            keys = [k.strip() for k in target.split(",")]
            return f"[{author_year(keys)}](#{','.join(keys)})"
        if role == "eq":
            where, number = targets.equation(target)
            return m.group(0) if where == docname else f"[{number}](#{target})"
        numbered = targets.figure(target) or targets.exercise(target)
        if role == "numref" and numbered is None:
            raise SystemExit(f"{docname}: {{numref}}`{target}` is neither a figure nor an exercise")
        if numbered:
            return f"{{ref}}`{numbered} <{target}>`"
        where, _, title = targets.labels[target]
        if where == docname and not targets.is_title(target):
            return m.group(0)
        return f"{{ref}}`{title.replace(chr(8217), chr(39))} <{target}>`"      # the source's ' for Sphinx's ’

    def renumber(m):
        if m.group(1):
            label = m.group(1)
            return f"{{ref}}`{targets.figure(label) or targets.exercise(label)} <{label}>`"
        return f"[{targets.equation(m.group(2))[1]}](#{m.group(2)})"

    return NUMBERED.sub(renumber, ROLE.sub(rewrite, text))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="+", type=Path)
    parser.add_argument("--env", type=Path, default=ROOT / "_build" / ".doctrees" / "environment.pickle")
    args = parser.parse_args(argv)
    targets = Targets(load_env(args.env))
    for path in args.chapters:
        docname = path.resolve().relative_to(ROOT).with_suffix("").as_posix()
        old = path.read_text()
        new = convert(old, docname, targets)
        if new != old:
            path.write_text(new)
            print(f"{path}: converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
