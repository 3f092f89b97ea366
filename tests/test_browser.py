"""The built book in a real browser: Debian's chromium, driven by playwright, over ``_build/html``.

Every page of the book is served from a loopback HTTP server (python's http.server on 127.0.0.1,
port 0) and opened in headless chromium, at 1280 px and at 390 px wide. On every page:

* no request leaves the machine: every request is routed, anything not on 127.0.0.1 (or data:) is
  recorded and aborted (MathJax, fonts, scripts: the book serves them all itself);
* no console error and no uncaught exception (``console`` messages of type error, ``pageerror``);
* every formula is typeset: MathJax has finished, every ``.math`` element holds an ``mjx-container``,
  no ``mjx-merror``, no undefined macro (MathJax shows its name in red), no raw ``\\(`` or ``\\[`` left;
* every image has loaded (``naturalWidth > 0``);
* every HTML slider (``silentlib.widgets.StaticSlider``) changes its figure when moved: each range
  input is set to another position and sent an ``input`` event, and the image must change;
* at 390 px wide the page does not scroll sideways (``scrollWidth <= 391``), and what is wider than the
  screen sits inside a box that scrolls on its own: code (``pre``, ``.highlight``), cell outputs, math.

A screenshot of every page at both widths goes to ``_build/screenshots/`` (``<page>.png``,
``<page>-390.png``) with ``summary.json``, the counts per page.

It needs the built book: README command 1 (``jupyter-book build . -W -n --keep-going``) builds
``_build/html`` before command 2 runs the tests. Without ``_build/html`` this test fails and says so
(it does not build the book itself: a build executes every chapter, minutes). Without chromium
(``apt-get install -y chromium``; ``SILENT_CHROMIUM`` names another binary) or playwright (in
requirements.txt), it is skipped, and says why; in CI (``CI=true``) either missing is a failure.
"""
import fnmatch
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("SILENT_BOOK_HTML", ROOT / "_build" / "html"))   # the built book
SHOTS = ROOT / "_build" / "screenshots"
NARROW = 390
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# boxes that may be wider than a phone's screen because they scroll sideways on their own
SCROLL_BOXES = "pre, .highlight, .cell_output, .output, mjx-container, .math, .math-wrapper, .table-wrapper"


def _missing(what):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {what}")
    pytest.skip(what)


def chromium_path():
    path = os.environ.get("SILENT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.exists(path) else None


def pages():
    """Every page of the built book (``SILENT_BROWSER_PAGES``, a glob such as ``chapters/0*``, picks some)."""
    pick = os.environ.get("SILENT_BROWSER_PAGES", "*")
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0].startswith("_") and fnmatch.fnmatch(p.relative_to(HTML).as_posix(), pick))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} is not built: run README command 1 first "
                    "(jupyter-book build . -W -n --keep-going), then the tests")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


WAIT_FOR_MATH = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
}"""

INSPECT = """() => {
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest("pre, code, script, style, textarea, .highlight")) continue;
    if (/\\\\\\(|\\\\\\[/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80));
  }
  const maths = Array.from(document.querySelectorAll("span.math, div.math"));
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    math: maths.length,
    untypeset: maths.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 80)),
    formulas: document.querySelectorAll("mjx-container").length,
    merror: Array.from(document.querySelectorAll("mjx-merror")).map(e => e.textContent.slice(0, 80)),
    // an undefined macro: MathJax's noundefined package shows its name as red text
    undefined: Array.from(document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')).map(e => e.textContent),
    raw: raw,
    images: document.images.length,
    broken: Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 120)),
  };
}"""

MOVE_SLIDERS = """() => {
  // each range input to its two ends: the figure must differ between them (and the readout follow)
  const out = [];
  document.querySelectorAll("[data-silent-slider]").forEach((root, s) => {
    const img = root.querySelector("img[data-silent-figure]");
    root.querySelectorAll('input[type="range"]').forEach(input => {
      const old = input.value, shown = [];
      for (const v of [input.min, input.max, old]) {
        input.value = v;
        input.dispatchEvent(new Event("input", {bubbles: true}));
        shown.push(img.src);
      }
      out.push({slider: s, param: input.dataset.silentParam, moved: shown[0] !== shown[1] && img.naturalWidth > 0});
    });
  });
  return out;
}"""

NARROW_CHECK = """([vw, boxes]) => {
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || (r.right <= vw + 1 && r.left >= -1)) continue;
    if (el.closest(boxes)) continue;
    if (el.checkVisibility && !el.checkVisibility({checkVisibilityCSS: true})) continue;
    // off-canvas parts of the theme (the closed sidebars) are hidden, not scrolled to
    if (el.closest(".bd-sidebar-primary, .bd-sidebar-secondary, dialog:not([open])")) {
      const s = getComputedStyle(el.closest(".bd-sidebar-primary, .bd-sidebar-secondary, dialog"));
      if (s.visibility === "hidden" || s.display === "none" || r.left >= vw || r.right <= 0) continue;
    }
    let ok = false;    // inside something that clips it (overflow hidden/auto/scroll) and itself fits
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const ov = getComputedStyle(a).overflowX;
      if (ov !== "visible") { const ar = a.getBoundingClientRect(); if (ar.right <= vw + 1 && ar.left >= -1) { ok = true; } break; }
    }
    if (ok) continue;
    wide.push(`${el.tagName.toLowerCase()}.${Array.from(el.classList).join(".")} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
  }
  return {scrollWidth: document.scrollingElement.scrollWidth, wide: wide.slice(0, 10)};
}"""


@pytest.fixture(scope="module")
def results(server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (python -m pip install -r requirements.txt)")
    exe = chromium_path()
    if exe is None:
        _missing("no chromium at /usr/bin/chromium (apt-get install -y chromium, or set SILENT_CHROMIUM)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = {}
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="silent-chromium-") as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=exe, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 900})
        outside = []

        def route(r):
            url = r.request.url
            if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname == "127.0.0.1":
                r.continue_()
            else:
                outside.append(url)
                r.abort()

        ctx.route("**/*", route)
        page = ctx.new_page()
        errors = []
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        for name in pages():
            errors.clear()
            outside.clear()
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(server + name, wait_until="load")
            page.evaluate(WAIT_FOR_MATH)
            r = page.evaluate(INSPECT)
            r["sliders"] = page.evaluate(MOVE_SLIDERS)
            shot = SHOTS / (name.replace("/", "__").removesuffix(".html") + ".png")
            page.screenshot(path=str(shot), full_page=True)
            # the phone: no transitions, so that the closed sidebars are already off-canvas when measured
            page.add_style_tag(content="*, *::before, *::after { transition: none !important; animation: none !important; }")
            page.set_viewport_size({"width": NARROW, "height": 844})
            page.wait_for_timeout(50)
            r["narrow"] = page.evaluate(NARROW_CHECK, [NARROW, SCROLL_BOXES])
            page.screenshot(path=str(shot.with_name(shot.stem + f"-{NARROW}.png")), full_page=True)
            r["errors"], r["outside"] = list(errors), sorted(set(outside))
            r["bytes"] = (HTML / name).stat().st_size
            out[name] = r
        ctx.close()
    summary = {n: {"formulas": r["formulas"], "images": r["images"], "sliders": len({s["slider"] for s in r["sliders"]}),
                   "slider_inputs": len(r["sliders"]), "html_bytes": r["bytes"]} for n, r in out.items()}
    (SHOTS / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n" + "\n".join(f"{n:45} {s}" for n, s in summary.items()))
    return out


def test_every_page_checked(results):
    if os.environ.get("SILENT_BROWSER_PAGES"):
        pytest.skip("SILENT_BROWSER_PAGES picks some pages")
    assert set(results) == set(pages()) and "index.html" in results
    chapters = [n for n in results if n.startswith("chapters/")]
    assert len(chapters) == len(list((ROOT / "chapters").glob("*.md")))


def test_no_request_leaves_loopback(results):
    bad = {n: r["outside"] for n, r in results.items() if r["outside"]}
    assert not bad, f"requests that left 127.0.0.1: {bad}"


def test_no_console_errors(results):
    bad = {n: r["errors"] for n, r in results.items() if r["errors"]}
    assert not bad, f"console errors: {bad}"


def test_every_formula_typeset(results):
    keys = ("untypeset", "merror", "undefined", "raw")
    bad = {n: {k: r[k] for k in keys if r[k]} for n, r in results.items() if any(r[k] for k in keys)}
    assert not bad, f"math not typeset by MathJax: {bad}"
    assert all(r["mathjax"] for r in results.values() if r["math"]), "a page with math did not load MathJax"
    if not os.environ.get("SILENT_BROWSER_PAGES"):
        assert sum(r["formulas"] for r in results.values()) > 100


def test_every_image_loaded(results):
    bad = {n: r["broken"] for n, r in results.items() if r["broken"]}
    assert not bad, f"images that did not load: {bad}"


def test_every_slider_moves(results):
    sliding = {n for n, r in results.items() if r["sliders"]}
    expected = {f"chapters/{p.stem}.html" for p in (ROOT / "chapters").glob("*.md")
                if "slider(" in p.read_text() and f"chapters/{p.stem}.html" in results}
    assert sliding == expected, f"pages with HTML sliders {sorted(sliding)}, chapters calling slider() {sorted(expected)}"
    stuck = {n: [s for s in r["sliders"] if not s["moved"]] for n, r in results.items()}
    stuck = {n: s for n, s in stuck.items() if s}
    assert not stuck, f"sliders whose figure did not change when moved: {stuck}"


def test_narrow_screen_does_not_scroll_sideways(results):
    bad = {n: r["narrow"] for n, r in results.items()
           if r["narrow"]["scrollWidth"] > NARROW + 1 or r["narrow"]["wide"]}
    assert not bad, f"at {NARROW} px wide: {bad}"
