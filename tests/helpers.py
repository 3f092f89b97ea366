"""What several test files need: a chapter written on the fly, and a file of the book loaded as a module."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The jupytext front matter of a MyST chapter; a test writes ``CHAPTER_HEADER + cells`` to a ``.md`` file.
CHAPTER_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def load_module(path, name=None):
    """The Python file ``path`` (a script, a Sphinx extension, a conftest) executed as a module named ``name``
    (default: its stem)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
