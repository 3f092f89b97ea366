"""Binder (binder/): pins that agree with the book's requirements.txt, a CPU torch, no book-build tools,
JupyterLab opening .md chapters as notebooks, and launch buttons naming files that exist. (The chapters
running in that JupyterLab: tests/test_jupyterlab.py.)"""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def pins(path):
    """{normalized name: version} of the ``name==version`` lines of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_binder_pins_match_the_book():
    book, binder = pins(ROOT / "requirements.txt"), pins(BINDER / "requirements.txt")
    text = (BINDER / "requirements.txt").read_text()
    # torch: the same release, as the CPU build from PyTorch's CPU wheel index
    assert binder["torch"] == book["torch"].split("+")[0] + "+cpu", binder["torch"]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    # what the chapters import when they run, pinned exactly as the book pins it
    runtime = ["numpy", "scipy", "matplotlib", "tqdm", "mlxtend", "scikit-learn", "threadpoolctl", "pandas",
               "ipywidgets", "ipykernel", "jupytext"]
    for name in runtime:
        assert binder.get(name) == book[name], f"binder pins {name}=={binder.get(name)}, the book {book[name]}"
    for name, version in binder.items():
        if name in book and name != "torch":
            assert version == book[name], f"binder pins {name}=={version}, the book {book[name]}"
    # JupyterLab with MyST and Jupytext; the library itself; none of the build or test stack
    assert "jupyterlab" in binder and "jupyterlab-myst" in binder
    assert re.search(r"^-e \.$|^\.$", text, re.M), "binder/requirements.txt must install silentlib (-e .)"
    for tool in ("jupyter-book", "myst-nb", "sphinx", "sphinx-book-theme", "pytest", "nbval", "playwright", "build",
                 "sphinxcontrib-bibtex", "django-static-mathjax", "axe-playwright-python"):
        assert tool not in binder, f"{tool} is for building or testing the book, not for Binder"
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_binder_opens_md_chapters_as_notebooks():
    overrides = json.loads((BINDER / "overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers == {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}
    post = (BINDER / "postBuild").read_text()
    assert post.startswith("#!") and (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    assert "binder/overrides.json" in post and "share/jupyter/lab/settings" in post


def launch_urls():
    """{page: Binder URL}, from the built HTML when it is there, else from _config.yml as Jupyter Book builds it."""
    html = ROOT / "_build" / "html"
    urls = {}
    if (html / "chapters").is_dir():
        for page in sorted((html / "chapters").glob("*.html")):
            found = set(re.findall(r'https://mybinder\.org/v2/gh/[^"\s]+', page.read_text()))
            assert len(found) == 1, f"{page.name}: expected one Binder launch URL, found {sorted(found)}"
            urls[page.stem] = found.pop().replace("&amp;", "&")
        return urls
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    org_repo = cfg["repository"]["url"].removeprefix("https://github.com/")
    prefix = {"jupyterlab": "lab/tree", "classic": "tree"}[cfg["launch_buttons"]["notebook_interface"]]
    for md in sorted((ROOT / "chapters").glob("*.md")):
        urls[md.stem] = (f"{cfg['launch_buttons']['binderhub_url']}/v2/gh/{org_repo}/{cfg['repository']['branch']}"
                         f"?urlpath={prefix}/{cfg['repository']['path_to_book']}chapters/{md.name}")
    return urls


def test_launch_buttons_name_files_that_exist():
    urls = launch_urls()
    assert set(urls) == {p.stem for p in (ROOT / "chapters").glob("*.md")}
    for page, url in urls.items():
        m = re.fullmatch(r"https://mybinder\.org/v2/gh/silent-alignment/silent-alignment-book/main"
                         r"\?urlpath=lab/tree/(.+)", url)
        assert m, f"{page}: unexpected launch URL {url}"
        assert (ROOT / m.group(1)).is_file(), f"{page}: the launch button opens {m.group(1)}, which does not exist"


def test_hidden_check_cells_collapsed_in_jupyterlab():
    """The book removes its check cells from the HTML; in JupyterLab (Binder) they start collapsed."""
    import jupytext
    open_cells = []
    for md in sorted((ROOT / "chapters").glob("*.md")):
        for i, cell in enumerate(jupytext.read(md).cells):
            if "remove-cell" in cell.metadata.get("tags", []) and \
                    cell.metadata.get("jupyter", {}).get("source_hidden") is not True:
                open_cells.append(f"{md.name} cell {i}")
    assert not open_cells, f"remove-cell cells without jupyter.source_hidden: {open_cells}"
