"""Chapter 9 on a machine without CIFAR-10: its stand-in runs, and passes its own checks.

Every other run of chapter 9 (the book's build, nbval, CI) finds CIFAR-10's airplanes and automobiles
in ``../shared/data``. A reader's fresh clone has neither that folder nor the network, and the
chapter then runs its MNIST stand-in. This test runs the chapter once that way: ``SILENT_DATA``
names an empty folder (so conftest.py's ``../shared/data`` fallback is off) and the user cache is
another empty folder, then checks that every cell (its hidden checks included) passes and that the
run did use the stand-in.
"""
from pathlib import Path

import nbformat

from silentlib.figures import run_chapter

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "09_cifar10.md"


def test_chapter_9_runs_its_stand_in_without_cifar10(tmp_path, monkeypatch):
    for name in ("data", "cache", "out"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("SILENT_DATA", str(tmp_path / "data"))          # empty: no CIFAR-10, no fallback
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))      # the kernel's user cache, empty too
    monkeypatch.setenv("SILENT_STATIC", "1")
    row = run_chapter(CHAPTER, tmp_path / "out", cell_timeout=900, keep_going=True)
    assert row["status"] == "passed", f"chapter 9 without CIFAR-10: {row['errors'] or row['error']}"
    nb = nbformat.read(tmp_path / "out" / "notebooks" / f"{CHAPTER.stem}.ipynb", as_version=4)
    shown = " ".join(str(o.get("data", {})) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "not available" in shown.lower(), "the page does not say that CIFAR-10 was not available"
