"""The HTML book's own parts (_ext/webbook.py, _config.yml): MathJax served locally, only standard TeX
in the pages (no macros of the book's own, which JupyterLab would not know), no duplicated scripts, a
light default colour mode, author-year labels."""
import re
import types
from pathlib import Path

import pytest
import yaml

from helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
SPHINX = CONFIG["sphinx"]["config"]
PAGES = sorted((ROOT / "chapters").glob("*.md")) + [ROOT / "index.md", ROOT / "further_reading.md",
                                                    ROOT / "conventions.md"]


def webbook():
    return load_module(ROOT / "_ext" / "webbook.py")


def math_of(text):
    """The TeX of a MyST page: $...$, $$...$$, {math} blocks and amsmath environments, outside code."""
    prose, math, fence, block = [], [], None, []
    for line in text.split("\n"):
        m = re.match(r"^(`{3,}|:{3,})(\{[^}]*\})?", line)
        if fence is None and m:
            fence, block = (m.group(1), m.group(2)), []
        elif fence is not None and line.strip() == fence[0]:
            if fence[1] == "{math}":
                math.append("\n".join(block))
            elif fence[1] != "{code-cell}" and fence[1] is not None:
                prose.extend(block)              # admonitions, figures, ...: their text has math too
            fence = None
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
    text = re.sub(r"`[^`\n]*`", "", "\n".join(prose))
    math += re.findall(r"\$\$(.+?)\$\$", text, re.S)
    text = re.sub(r"\$\$(.+?)\$\$", "", text, flags=re.S)
    math += re.findall(r"\$([^$\n]+?)\$", text)
    math += re.findall(r"\\begin\{(?:equation|align|gather|multline)\*?\}(.+?)\\end", text, re.S)
    return math


def used_macros():
    used = {}
    for page in PAGES:
        for tex in math_of(page.read_text()):
            for name in re.findall(r"\\([A-Za-z]+)", tex):
                used.setdefault(name, set()).add(page.name)
    return used


def test_math_extraction_sees_the_chapters_math():
    used = used_macros()
    assert {"frac", "sigma", "mathbf", "boldsymbol", "infty"} <= set(used) and len(used) > 50


def test_no_macros_of_the_books_own():
    """The chapters are also read in JupyterLab (jupyterlab-myst), whose math knows no macros of ours: the
    pages write \\mathbf x, not \\bx, and _config.yml defines none."""
    assert "mathjax3_config" not in SPHINX
    custom = re.compile(r"^(b[A-Z][A-Za-z]*|b[a-z]|b(alpha|beta|gamma|delta|theta|mu|sigma|phi|xi|lambda)"
                        r"|Kinf|K0|tr|diag|R|E)$")   # \beta, \bar, \big are TeX's own
    used = {n: sorted(p) for n, p in used_macros().items() if custom.match(n)}
    assert not used, f"macros of the book's own (write them out): {used}"


def test_every_macro_is_known_to_mathjax():
    """Every \\name in the chapters' math is a command of MathJax 3's TeX input (its -full component)."""
    js = (webbook().mathjax_source() / "tex-chtml-full.js").read_text()
    unknown = {}
    for name, pages in used_macros().items():
        if not re.search(r'[{,]"?%s"?:|"\\\\%s"' % (name, name), js):
            unknown[name] = sorted(pages)
    assert not unknown, f"TeX commands MathJax does not know: {unknown}"


def test_mathjax_is_served_by_the_book(tmp_path):
    assert SPHINX["mathjax_path"] == "mathjax/tex-chtml-full.js"
    assert "webbook" in CONFIG["sphinx"]["local_extensions"]
    wb = webbook()
    app = types.SimpleNamespace(builder=types.SimpleNamespace(format="html"), outdir=str(tmp_path),
                                config=types.SimpleNamespace(mathjax_path=SPHINX["mathjax_path"]))
    wb.copy_mathjax(app)
    static = tmp_path / "_static" / "mathjax"
    assert (static / "tex-chtml-full.js").stat().st_size > 1_000_000
    assert '"3.2.2"' in (static / "tex-chtml-full.js").read_text()             # MathJax 3.2.2
    fonts = sorted(p.name for p in (static / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert "MathJax_Main-Regular.woff" in fonts and len(fonts) > 15
    assert sum(p.stat().st_size for p in static.rglob("*") if p.is_file()) < 3_000_000   # only what pages need
    app.config.mathjax_path = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    with pytest.raises(RuntimeError, match="serves MathJax itself"):
        wb.copy_mathjax(app)


def test_duplicate_inline_scripts_dropped():
    from sphinx.builders.html._assets import _JavaScript
    thebe = "const THEBE_JS_URL = 'x'"
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("", body=thebe),
               _JavaScript("_static/a.js"), _JavaScript("", body="let other = 1")]
    context = {"script_files": scripts}
    webbook().dedupe_scripts(None, "index", "page.html", context, None)
    assert context["script_files"] is scripts           # in place: the builder resets its own list per page
    assert [(s.filename, s.attributes.get("body")) for s in scripts] == \
        [("_static/a.js", None), (None, thebe), ("", "let other = 1")]


def test_theme_mode_set():
    """An empty data-default-mode made the theme log 'Got invalid theme mode: . Resetting to auto.'"""
    assert SPHINX["html_context"]["default_mode"] in ("light", "dark", "auto")


def test_author_year_labels():
    from pybtex.database import parse_file
    wb = webbook()
    assert SPHINX["bibtex_default_style"] == "authoryear" and SPHINX["bibtex_reference_style"] == "author_year"
    bib = parse_file(str(ROOT / "references.bib"))
    style = wb.AuthorYearLabelStyle()
    entries = list(bib.entries.values())
    labels = dict(zip((e.key for e in entries), style.format_labels(entries)))
    assert labels["atanasov2022silent"] == "Atanasov et al. 2022"
    assert labels["shan2021alignment"] == "Shan & Bordelon 2021"
    assert labels["domingos2020every"] == "Domingos 2020"
    assert labels["jacot2021saddle"] == "Jacot et al. 2021"
    assert labels["stoger2021small"] == "Stöger & Soltanolkotabi 2021"
    for key, label in labels.items():
        assert re.fullmatch(r"[^\W\d_][\w\-' ]*( & [^\W\d_][\w\-' ]*| et al\.)? \d{4}[a-z]?", label), (key, label)
    assert len(set(labels.values())) == len(labels)
    # names are Unicode, not LaTeX accents (pybtex's labels kept the accent commands' letters)
    assert not re.search(r"\\['\"`^~cvuH]", (ROOT / "references.bib").read_text())


def test_bibliography_entries_are_list_items():
    """docutils marks a bibliography entry role="doc-biblioentry" inside role="list": no list item (axe: critical)."""
    context = {"body": '<div role="list" class="citation-list"><div class="citation" role="doc-biblioentry">x</div></div>'}
    webbook().bibliography_items(None, "bibliography", "page.html", context, None)
    assert 'role="listitem"' in context["body"] and "doc-biblioentry" not in context["body"]


def test_links_in_admonitions_have_contrast():
    """The exercises' boxes (#ecf3ff) get a link colour of at least WCAG AA's 4.5:1 (the theme's has 4.3:1)."""
    css = (ROOT / "_ext" / "static" / "silent.css").read_text()
    color = re.search(r"div\.admonition a \{ color: (#[0-9a-f]{6}); \}", css).group(1)

    def luminance(hex_color):
        c = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        c = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    assert (luminance("#ecf3ff") + 0.05) / (luminance(color) + 0.05) >= 4.5
