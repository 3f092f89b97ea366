"""Sphinx extension of the book: the HTML book as its readers see it, served by itself.

* **MathJax from the book.** ``mathjax_path`` (``_config.yml``) names ``mathjax/tex-chtml-full.js``
  under ``_static``; at ``builder-inited`` this extension copies that file and the CommonHTML output's
  woff-v2 fonts (the only files the pages load: the ``-full`` component holds every TeX extension,
  so nothing is loaded on demand) from the ``mathjax`` package (PyPI ``django-static-mathjax``,
  MathJax 3.2.2; in ``requirements.txt``) into the build's ``_static/mathjax/``. Nothing comes from a CDN.
* **No console errors.** sphinx-thebe and sphinx-togglebutton add inline scripts after the HTML builder
  has read its registry, so Sphinx 7.4 lists them twice (once as ``filename=None``, once as ``''``) and
  every page declared ``const THEBE_JS_URL`` twice (a SyntaxError in the console). ``html-page-context``
  drops the duplicates. (``html_context: default_mode`` in ``_config.yml`` fixes the theme's other
  error, "Got invalid theme mode".)
* **Sliders that move.** ``_static/silent-slider.js`` is :data:`silentlib.widgets.SLIDER_JS` (the
  headless sliders' frames, see :mod:`silentlib.widgets`), loaded by every page next to the inline copy
  each slider carries; ``_static/silent.css`` lets display math and the sliders' figures fit narrow
  screens (wide formulas scroll in their own box).
* **Author-year bibliography.** The pybtex style ``authoryear`` (``bibtex_default_style``) labels
  entries "Atanasov et al. 2022", "Shan & Bordelon 2021", matching the author-year citations in the text.
  Its entries are the items of the list they sit in (docutils gives them ARIA's deprecated
  ``doc-biblioentry``, which is no list item: axe-core's critical ``aria-required-children``).
"""
import shutil
from collections import Counter
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

HERE = Path(__file__).resolve().parent
MATHJAX_FILES = ("tex-chtml-full.js", "output/chtml/fonts/woff-v2")


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax 3 (the ``mathjax`` package of django-static-mathjax)."""
    try:
        import mathjax
    except ImportError as e:
        raise RuntimeError("MathJax is not installed: python -m pip install -r requirements.txt "
                           "(django-static-mathjax)") from e
    return Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"


def copy_mathjax(app):
    if app.builder.format != "html":
        return
    if "://" in app.config.mathjax_path:
        raise RuntimeError(f"mathjax_path is {app.config.mathjax_path!r}: the book serves MathJax itself "
                           "(set it to mathjax/tex-chtml-full.js)")
    src, dst = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for rel in MATHJAX_FILES:
        if (dst / rel).exists():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_dir():
            shutil.copytree(src / rel, dst / rel)
        else:
            shutil.copy2(src / rel, dst / rel)


def write_slider_js(app):
    if app.builder.format != "html":
        return
    from silentlib.widgets import SLIDER_JS
    out = Path(app.outdir) / "_static" / "silent-slider.js"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != SLIDER_JS:
        out.write_text(SLIDER_JS)


def _key(js):
    return (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        if _key(js) not in seen:
            seen.add(_key(js))
            unique.append(js)
    scripts[:] = unique


def bibliography_items(app, pagename, templatename, context, doctree):
    if "body" in context:
        context["body"] = context["body"].replace('role="doc-biblioentry"', 'role="listitem"')


def add_static(app, config):
    config.html_static_path.append(str(HERE / "static"))
    config.html_context.setdefault("default_mode", "light")


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Last 2022", "Last & Other 2022", "Last et al. 2022" (a, b, ... where two coincide)."""

    def format_labels(self, sorted_entries):
        labels = [self.format_label(e) for e in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label

    @staticmethod
    def _last(person):
        return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")

    def format_label(self, entry):
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [self._last(p) for p in persons]
        if not names:
            who = entry.key
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} & {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who} {entry.fields.get('year', '')}".strip()


class AuthorYearStyle(UnsrtStyle):
    """unsrt's formatting, sorted by author, year and title, with author-year labels."""
    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    app.connect("config-inited", add_static)
    app.connect("builder-inited", copy_mathjax)
    app.connect("builder-inited", write_slider_js)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("html-page-context", bibliography_items)
    app.add_css_file("silent.css")
    app.add_js_file("silent-slider.js", defer="defer")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
