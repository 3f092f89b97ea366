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
* every image has an alt text that says what it shows: words, not a file name or a function's name; a
  slider's figure says the sliders' values, and follows them;
* every HTML slider moves from the keyboard (focus, arrow key) as well;
* axe-core (PyPI ``axe-playwright-python``, axe 4.x) finds no serious or critical violation of WCAG 2.1
  A and AA (contrast, names, labels, landmarks, ...);
* at 390 px wide the page does not scroll sideways (``scrollWidth <= 391``), and what is wider than the
  screen sits inside a box that scrolls on its own: code (``pre``, ``.highlight``), cell outputs, math.

A screenshot of every page at both widths goes to ``_build/screenshots/`` (``<page>.png``,
``<page>-390.png``) with ``summary.json``, the counts per page.

It needs the built book, ``_build/html``: the session fixture ``book_html`` (tests/conftest.py) builds
it first when it is missing or older than its sources (README command 1, minutes on a fresh clone).
Without chromium (``apt-get install -y chromium``; ``SILENT_CHROMIUM`` names another binary),
playwright or axe-playwright-python (both in requirements.txt), it is skipped, and says why; in CI
(``CI=true``) any of them missing is a failure.
"""
import fnmatch
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def browser_driver():
    """(playwright's sync_playwright, chromium's path), or a skip (a failure in CI) that says what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (python -m pip install -r requirements.txt)")
    exe = chromium_path()
    if exe is None:
        _missing("no chromium at /usr/bin/chromium (apt-get install -y chromium, or set SILENT_CHROMIUM)")
    return sync_playwright, exe


def pages(html):
    """Every page of the built book (``SILENT_BROWSER_PAGES``, a glob such as ``chapters/0*``, picks some)."""
    pick = os.environ.get("SILENT_BROWSER_PAGES", "*")
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_") and fnmatch.fnmatch(p.relative_to(html).as_posix(), pick))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(book_html):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(book_html)))
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
    // alt texts that do not say what an image shows: none, a file name, a function's name, one or two words
    // and a figure's (a cell's output, a slider's frame) says in words what it shows
    bad_alt: Array.from(document.images).filter(i => i.getAttribute("aria-hidden") !== "true")
      .filter(i => {
        const a = i.getAttribute("alt");
        if (a === null) return true;
        if (/\\.(png|jpe?g|gif|svg|webp)\\b|_images\\/|^\\s*\\w*_\\w*\\s*:/i.test(a)) return true;
        return !!i.closest("figure, .cell_output, .silent-slider") && a.trim().split(/\\s+/).length < 3;
      })
      .map(i => (i.getAttribute("alt") || "(no alt)").slice(0, 100)),
  };
}"""

MOVE_SLIDERS = """() => {
  // each range input to its two ends: the figure must differ between them, and its alt text must
  // give the parameter's value that the readout shows
  const out = [];
  document.querySelectorAll("[data-silent-slider]").forEach((root, s) => {
    const img = root.querySelector("img[data-silent-figure]");
    root.querySelectorAll('input[type="range"]').forEach(input => {
      const param = input.dataset.silentParam;
      const readout = root.querySelector(`output[data-silent-param="${param}"]`);
      const old = input.value, shown = [], alts = [];
      for (const v of [input.min, input.max, old]) {
        input.value = v;
        input.dispatchEvent(new Event("input", {bubbles: true}));
        shown.push(img.src);
        if (!img.alt.includes(`${param} = ${readout.textContent}`)) alts.push(img.alt.slice(0, 160));
      }
      out.push({slider: s, param: param, moved: shown[0] !== shown[1] && img.naturalWidth > 0, alt_off: alts});
    });
  });
  return out;
}"""

KEYBOARD = """() => {
  // each range input focused and sent an arrow key, as a keyboard user would: its figure must change
  const inputs = Array.from(document.querySelectorAll('[data-silent-slider] input[type="range"]'));
  return inputs.map((input, i) => ({i: i, param: input.dataset.silentParam,
    key: +input.value < +input.max ? "ArrowRight" : "ArrowLeft",
    src: input.closest("[data-silent-slider]").querySelector("img[data-silent-figure]").src}));
}"""

# preload off: axe would fetch the stylesheets' @import targets itself, resolved against the page (a 404 in the
# console for the theme's basic.css); only its css-orientation-lock rule needs them
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
        "resultTypes": ["violations"], "preload": False}


def axe_violations(page, axe):
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page: [(rule, impact, nodes, first target)]."""
    found = axe.run(page, options=WCAG).response["violations"]
    return [(v["id"], v["impact"], len(v["nodes"]), v["nodes"][0]["target"][0] if v["nodes"] else "")
            for v in found if v["impact"] in ("serious", "critical")]


def press_each_slider(page):
    """[(param, moved)] for every HTML slider input after a keyboard user's arrow key."""
    moved = []
    for k in page.evaluate(KEYBOARD):
        input = page.locator('[data-silent-slider] input[type="range"]').nth(k["i"])
        input.focus()
        page.keyboard.press(k["key"])
        after = input.evaluate('i => i.closest("[data-silent-slider]").querySelector("img[data-silent-figure]").src')
        moved.append((k["param"], after != k["src"]))
    return moved

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
def results(server, book_html):
    sync_playwright, exe = browser_driver()
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        _missing("axe-playwright-python is not installed (python -m pip install -r requirements.txt)")
    axe = Axe()
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
        page.on("console", lambda m: errors.append(f"console: {m.text} ({m.location.get('url', '')})") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        for name in pages(book_html):
            start = time.perf_counter()
            errors.clear()
            outside.clear()
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(server + name, wait_until="load")
            page.evaluate(WAIT_FOR_MATH)
            r = page.evaluate(INSPECT)
            r["sliders"] = page.evaluate(MOVE_SLIDERS)
            r["keyboard"] = press_each_slider(page)
            r["axe"] = axe_violations(page, axe)
            shot = SHOTS / (name.replace("/", "__").removesuffix(".html") + ".png")
            page.screenshot(path=str(shot), full_page=True)
            # the phone: no transitions, so that the closed sidebars are already off-canvas when measured
            page.add_style_tag(content="*, *::before, *::after { transition: none !important; animation: none !important; }")
            page.set_viewport_size({"width": NARROW, "height": 844})
            page.wait_for_timeout(50)
            r["narrow"] = page.evaluate(NARROW_CHECK, [NARROW, SCROLL_BOXES])
            page.screenshot(path=str(shot.with_name(shot.stem + f"-{NARROW}.png")), full_page=True)
            r["errors"], r["outside"] = list(errors), sorted(set(outside))
            r["bytes"] = (book_html / name).stat().st_size
            r["seconds"] = round(time.perf_counter() - start, 1)
            out[name] = r
        ctx.close()
    summary = {n: {"formulas": r["formulas"], "images": r["images"], "sliders": len({s["slider"] for s in r["sliders"]}),
                   "slider_inputs": len(r["sliders"]), "html_bytes": r["bytes"], "seconds": r["seconds"],
                   "axe": r["axe"], "bad_alt": r["bad_alt"], "errors": r["errors"]} for n, r in out.items()}
    (SHOTS / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\n" + "\n".join(f"{n:45} {s}" for n, s in summary.items()))
    return out


def test_every_page_checked(results, book_html):
    if os.environ.get("SILENT_BROWSER_PAGES"):
        pytest.skip("SILENT_BROWSER_PAGES picks some pages")
    assert set(results) == set(pages(book_html)) and "index.html" in results
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


def test_every_image_says_what_it_shows(results):
    bad = {n: r["bad_alt"] for n, r in results.items() if r["bad_alt"]}
    assert not bad, f"images whose alt text is missing, a file name or a function's name: {bad}"


def test_slider_figures_say_their_values(results):
    bad = {n: [s for s in r["sliders"] if s["alt_off"]] for n, r in results.items()}
    bad = {n: s for n, s in bad.items() if s}
    assert not bad, f"slider figures whose alt text does not give the sliders' values: {bad}"


def test_sliders_move_from_the_keyboard(results):
    stuck = {n: [p for p, moved in r["keyboard"] if not moved] for n, r in results.items()}
    stuck = {n: s for n, s in stuck.items() if s}
    assert not stuck, f"sliders whose figure did not change on an arrow key: {stuck}"
    assert sum(len(r["keyboard"]) for r in results.values()) == sum(len(r["sliders"]) for r in results.values())


def test_no_serious_accessibility_violations(results):
    bad = {n: r["axe"] for n, r in results.items() if r["axe"]}
    assert not bad, f"axe-core, WCAG 2.1 A/AA, serious or critical (rule, impact, nodes, first): {bad}"
