"""Shared test settings: float64 by default, and one CPU thread (the problems are tiny, and one
thread is both faster and immune to contention on a small shared machine). Session-scoped, so that
module-scoped fixtures see these settings too. Figures are drawn with the Agg backend and closed
after every test. No test reads or writes the user's data cache (silentlib.data.files.CACHE_DIR
points at a temporary folder) or reaches the network: only loopback and file:// URLs are opened.
The session fixture ``book_html`` builds the HTML book when it is missing or older than its sources."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import urllib.error  # noqa: E402

import silentlib.data.files as data_files  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def float64_one_thread():
    saved, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(saved)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(autouse=True)
def no_user_cache_no_network(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(data_files, "CACHE_DIR", tmp_path_factory.mktemp("user-cache"))
    opener = data_files._urlopen

    def loopback_only(url, timeout):
        if not url.startswith(("http://127.0.0.1", "file:")):
            raise urllib.error.URLError(f"the tests do not reach the network ({url}; tests/conftest.py)")
        return opener(url, timeout)

    monkeypatch.setattr(data_files, "_urlopen", loopback_only)



# --- the built book ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
BUILD_TIMEOUT = 1800   # seconds: a first build executes every chapter (about ten minutes on two busy cores)


def book_sources():
    """What the HTML book is built from: its pages, configuration, extensions, bibliography and library."""
    globs = ("*.md", "chapters/*.md", "_config.yml", "_toc.yml", "references.bib", "_ext/*.py", "_ext/static/*",
             "silentlib/**/*.py")
    return [p for g in globs for p in ROOT.glob(g) if p.name not in ("README.md", "CHANGELOG.md")]


def book_is_stale(html=HTML):
    """True when ``html`` holds no finished build (Sphinx writes ``objects.inv`` at the end of every HTML
    build) or one older than a source."""
    stamp = html / "objects.inv"
    return not stamp.is_file() or max(p.stat().st_mtime for p in book_sources()) > stamp.stat().st_mtime


@pytest.fixture(scope="session")
def book_html():
    """``_build/html``, built first (README command 1, with its execution cache) when it is missing or older
    than its sources, so that no test depends on command 1 having run. ``SILENT_BOOK_HTML`` names a book
    built elsewhere, taken as it is."""
    if os.environ.get("SILENT_BOOK_HTML"):
        return Path(os.environ["SILENT_BOOK_HTML"])
    if book_is_stale():
        exe = shutil.which("jupyter-book", path=os.path.dirname(sys.executable)) or shutil.which("jupyter-book")
        env = {k: v for k, v in os.environ.items() if k != "SILENT_SLIDER_FRAMES"}   # the book's own 40 frames
        done = subprocess.run([exe, "build", str(ROOT), "-W", "-n", "--keep-going"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0 or book_is_stale():
            pytest.fail("building the book (jupyter-book build . -W -n --keep-going) failed:\n"
                        f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    return HTML
