"""The chapters as a Binder learner reads them: JupyterLab with jupyterlab-myst, driven in chromium.

Binder builds its environment from ``binder/`` (requirements.txt, then postBuild). This test uses the
same: a virtual environment made from ``binder/requirements.txt`` (with ``torch==2.13.0`` for the
``+cpu`` wheel; the test builds it in ``_build/binder-venv`` when it is missing, from the package
registries, as Binder would; ``SILENT_BINDER_VENV`` names another, which it uses as it is),
a copy of the repository on which ``binder/postBuild`` has run, and JupyterLab serving it on
127.0.0.1 without a token. Each chapter is opened (``lab/tree/chapters/<chapter>.md``, as the launch
buttons do) and run with Run All. Checked, per chapter:

* it opens as a notebook (Jupytext), and opening it leaves it unmodified (no "unsaved changes");
* every cell runs without error;
* after the run, the prose shows numbers: every ``{eval}`` role has a value (none shows its
  expression, none an error), and nothing shows a glue key;
* no formula fails to typeset (an undefined macro), no reference or citation is "not found";
* the hidden check cells (``remove-cell``) print nothing;
* one live slider (chapter 1's) redraws its figure when moved from the keyboard.

And the environment: ``jupyter labextension list`` marks no extension as incompatible, and the page
loads every extension (no "No satisfying version" or "Failed to create module" in the console).

Without chromium or playwright, or when the environment cannot be built (no package registry), it is
skipped, and says why; in CI (``CI=true``) that is a failure. ``SILENT_JUPYTERLAB_CHAPTERS`` (a glob such as ``0[12]*``) runs some chapters only.
"""
import fnmatch
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import pytest

from silentlib.prose import eval_roles
from test_browser import _missing, browser_driver

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("SILENT_BINDER_VENV") or ROOT / "_build" / "binder-venv")
CHAPTERS = sorted(p.name for p in (ROOT / "chapters").glob("*.md")
                  if fnmatch.fnmatch(p.stem, os.environ.get("SILENT_JUPYTERLAB_CHAPTERS", "*")))
RUN_TIMEOUT = 600       # seconds for one chapter's Run All (each takes about a minute on two cores)
SLIDER_CHAPTER = "01_ntk_kernel_regression.md"

CURRENT = "jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"""() => {{ const w = window.jupyterapp && {CURRENT}; const s = w && w.sessionContext && w.sessionContext.session;
  return !!(w && w.content && w.content.widgets && s && s.kernel && s.kernel.status === "idle"); }}"""
RUN_DONE = f"""() => {{ const w = {CURRENT}, code = w.content.widgets.filter(c => c.model.type === "code");
  const outs = c => c.model.outputs.toJSON();
  const failed = code.some(c => outs(c).some(o => o.output_type === "error"));
  const pending = code.some(c => c.model.executionCount === null || /\\*/.test(c.promptNode ? c.promptNode.textContent : ""));
  return w.sessionContext.session.kernel.status === "idle" && (failed || !pending); }}"""
INSPECT = f"""() => {{
  const w = {CURRENT}, cells = w.content.widgets, md = cells.filter(c => c.model.type === "markdown");
  // jupyterlab-myst renders a markdown cell into a ".myst" widget (beside the cell's hidden editor)
  const text = md.map(c => c.node.querySelector(".jp-MarkdownOutput.myst, .lm-Widget.myst")).filter(n => n);
  const all = sel => text.flatMap(n => Array.from(n.querySelectorAll(sel)));
  const tags = c => (c.model.getMetadata("tags") || []);
  return {{
    dirty: w.context.model.dirty,
    markdown_cells: md.length,
    rendered: text.length,
    evaluated: md.reduce((n, c) => n + (c.model.getMetadata("user_expressions") || [])
      .filter(e => e.result && e.result.status === "ok").length, 0),
    // jupyterlab-myst keeps each markdown cell's evaluated {{eval}} roles in its metadata
    eval_errors: md.flatMap(c => c.model.getMetadata("user_expressions") || []).filter(e => !e.result || e.result.status !== "ok")
      .map(e => `${{e.expression}}: ${{e.result && e.result.ename}}: ${{e.result && e.result.evalue}}`),
    unevaluated: all("code").map(e => e.textContent).filter(t => /prose\\.|^f["']/.test(t)),
    glue_keys: text.map(n => n.textContent).filter(t => /\\{{glue|\\{{eval\\}}/.test(t)).map(t => t.slice(0, 120)),
    not_found: all("[title]").filter(e => /not found|undefined|error/i.test(e.title)).map(e => `${{e.title.slice(0, 60)}}: ${{e.textContent.slice(0, 60)}}`),
    katex_errors: all(".katex-error").map(e => e.textContent.slice(0, 80)),
    errors: cells.filter(c => c.model.type === "code").flatMap(c => c.model.outputs.toJSON())
      .filter(o => o.output_type === "error").map(o => `${{o.ename}}: ${{o.evalue}}`.slice(0, 200)),
    hidden_output: cells.filter(c => tags(c).includes("remove-cell") && c.model.outputs.length > 0)
      .map(c => c.model.sharedModel.getSource().slice(0, 80)),
  }};
}}"""
OPEN_DROPDOWNS = """() => document.querySelectorAll(".jp-Notebook details").forEach(d => { d.open = true; })"""
SLIDER_IMG = """() => { const out = document.querySelector(".jupyter-widgets .jp-OutputArea img, .widget-interact img");
  return out ? out.src : null; }"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binder_venv():
    """Binder's environment at VENV: built from binder/requirements.txt when missing or half-built (a few
    minutes, from the package registries; torch as the local ``torch==2.13.0`` CPU wheel, not Binder's ``+cpu``)."""
    if os.environ.get("SILENT_BINDER_VENV") or (VENV / ".complete").is_file():
        return
    reqs = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    reqs = [re.sub(r"^torch==(.*)\+cpu$", r"torch==\1", r) for r in reqs if not r.startswith("--extra-index-url")]
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    listed = VENV.parent / "binder-requirements.txt"
    listed.write_text("\n".join(reqs) + "\n")
    python = str(VENV / "bin" / "python")
    for step in ([sys.executable, "-m", "venv", str(VENV)],
                 [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                 [python, "-m", "pip", "install", "--quiet", "-r", str(listed)]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            shutil.rmtree(VENV, ignore_errors=True)
            _missing(f"could not build Binder's environment ({' '.join(step[2:])}): {done.stderr[-500:]}")
    (VENV / ".complete").touch()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(URL, console messages) of a JupyterLab over a Binder-prepared copy of the repository."""
    binder_venv()
    if not (VENV / "bin" / "jupyter-lab").is_file():
        _missing(f"no JupyterLab environment at {VENV} (SILENT_BINDER_VENV names one without jupyter-lab)")
    copy = tmp_path_factory.mktemp("binder") / "book"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("_build", ".git", "__pycache__", ".venv", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("SILENT_STATIC", "SILENT_SLIDER_FRAMES")}   # live sliders
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    home = tmp_path_factory.mktemp("jupyter")
    # every cell in the page (no windowing), so that the checks see every cell's rendering
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"))
    subprocess.run(["bash", "binder/postBuild"], cwd=copy, env=env, check=True, timeout=300)
    listed = subprocess.run([str(VENV / "bin" / "jupyter"), "labextension", "list"], env=env, text=True,
                            capture_output=True, timeout=120)
    port = free_port()
    server = subprocess.Popen(
        [str(VENV / "bin" / "jupyter-lab"), "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.root_dir={copy}", "--IdentityProvider.token=", "--ServerApp.password=",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.workspaces_dir={home / 'workspaces'}", f"--LabApp.user_settings_dir={home / 'settings'}"],
        cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "api/status", timeout=5)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("JupyterLab did not answer within two minutes")
        yield url, listed.stdout + listed.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def results(lab):
    sync_playwright, exe = browser_driver()
    url, listed = lab
    out, console = {}, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.on("console", lambda m: console.append(f"{m.type}: {m.text[:200]}") if m.type in ("error", "warning") else None)
        for name in CHAPTERS:
            try:
                out[name] = run_chapter(page, url, name)
            except Exception as err:                      # a timeout: say which chapter, check the others
                out[name] = {"failure": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            page.evaluate(f"async () => {{ const w = window.jupyterapp && {CURRENT}; if (!w || !w.sessionContext) return; "
                          "await w.sessionContext.shutdown(); w.context.model.dirty = false; w.close(); }")
        browser.close()
    return {"chapters": out, "console": console, "labextensions": listed}


def run_chapter(page, url, name):
    """Open the chapter, note what opening did, Run All, wait for every cell and expression; what it shows."""
    page.goto(f"{url}lab/tree/chapters/{name}?reset")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)
    page.wait_for_timeout(2000)                           # the kernel's metadata reach the model
    opened = page.evaluate(INSPECT)
    page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(3000)
    page.wait_for_function(RUN_DONE, timeout=RUN_TIMEOUT * 1000, polling=1000)
    try:    # jupyterlab-myst evaluates a markdown cell's expressions just after the cell has run
        page.wait_for_function(f"(n) => ({INSPECT})().evaluated >= n", arg=roles(name), timeout=60_000, polling=500)
    except Exception:
        pass                                              # the test reports the count
    page.evaluate(OPEN_DROPDOWNS)                         # solutions and other folded boxes, to see their text
    page.wait_for_timeout(1000)
    ran = page.evaluate(INSPECT)
    ran["dirty_on_open"] = opened["dirty"]
    if name == SLIDER_CHAPTER:
        ran["slider_moved"] = move_a_slider(page)
    return ran


def move_a_slider(page):
    """Focus the first live slider's handle and press an arrow key: does its figure change?"""
    handle = page.locator(".widget-slider .noUi-handle, .jupyter-widgets.widget-slider [role='slider']").first
    handle.scroll_into_view_if_needed()
    before = page.evaluate(SLIDER_IMG)
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(f"(b) => ({SLIDER_IMG})() !== b", arg=before, timeout=60_000)
    except Exception:
        return False
    return before is not None


def roles(name):
    """How many {eval} roles the chapter's markdown cells hold."""
    cells = jupytext.read(ROOT / "chapters" / name).cells
    return sum(len(eval_roles(c.source)) for c in cells if c.cell_type == "markdown")


def failing(results, key):
    return {n: r[key] for n, r in results["chapters"].items() if r.get(key)}


def test_every_chapter_opened_and_ran(results):
    assert sorted(results["chapters"]) == CHAPTERS
    assert not failing(results, "failure"), f"chapters that did not open or finish: {failing(results, 'failure')}"
    assert all(r["markdown_cells"] > 0 for r in results["chapters"].values()), "a chapter did not open as a notebook"
    unrendered = {n: f"{r['rendered']} of {r['markdown_cells']}" for n, r in results["chapters"].items()
                  if "failure" not in r and r["rendered"] != r["markdown_cells"]}
    assert not unrendered, f"markdown cells that jupyterlab-myst did not render: {unrendered}"
    assert not failing(results, "errors"), f"cells that raised in JupyterLab: {failing(results, 'errors')}"


def test_opening_a_chapter_leaves_it_unmodified(results):
    assert not failing(results, "dirty_on_open"), f"chapters marked modified on opening: {failing(results, 'dirty_on_open')}"


def test_the_prose_shows_numbers_after_run_all(results):
    for key in ("unevaluated", "eval_errors", "glue_keys"):
        assert not failing(results, key), f"{key}: {failing(results, key)}"
    for name, r in results["chapters"].items():        # every {eval} role of the chapter has its value
        assert r.get("evaluated") == roles(name), f"{name}: {r.get('evaluated')} of its {roles(name)} {{eval}} roles evaluated"


def test_no_undefined_macro_or_reference(results):
    for key in ("not_found", "katex_errors"):
        assert not failing(results, key), f"{key}: {failing(results, key)}"


def test_hidden_check_cells_print_nothing(results):
    assert not failing(results, "hidden_output"), f"hidden cells with output: {failing(results, 'hidden_output')}"


def test_a_live_slider_moves(results):
    if SLIDER_CHAPTER not in results["chapters"]:
        pytest.skip("SILENT_JUPYTERLAB_CHAPTERS leaves out chapter 1")
    assert results["chapters"][SLIDER_CHAPTER].get("slider_moved"), "chapter 1's slider did not redraw from the keyboard"


def test_extensions_are_compatible(results):
    listed = re.sub(r"\x1b\[[0-9;]*m", "", results["labextensions"])       # without its colours
    assert "jupyterlab-myst" in listed and "jupyterlab-jupytext" in listed and "jupyterlab-manager" in listed, listed
    assert " X" not in listed and "incompatible" not in listed.lower(), listed
    bad = [m for m in results["console"] if "No satisfying version" in m or "Failed to create module" in m]
    assert not bad, bad
