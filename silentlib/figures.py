"""Regenerate every figure of the book at one scale (``python -m silentlib figures``).

    python -m silentlib figures --scale paper --device cuda --out figures/ [--chapters 02,05] [--seed N]

Each chapter (``chapters/*.md``, a jupytext MyST notebook) is converted to a notebook and
executed headless with nbclient, cell by cell (one progress bar per chapter), in a kernel
started with ``SILENT_SCALE`` and ``SILENT_DEVICE`` set, with the chapters folder as its working
directory. ``--seed N`` runs the book at ``SILENT_SEED=N`` (every chapter derives its random
draws from it; figures made at a seed other than 0 say so in their corner note). ``--keep-going``
runs every cell even after one fails, so that a chapter reports *all* of its failing checks
(later cells may then fail only because an earlier one did). ``--jobs N`` runs N chapters at once,
each in its own process (by default, at the fast scale on a CPU, one per core: there every chapter
computes on one thread). Written into ``--out``:

* ``<chapter>__<figure-name>.png`` for every PNG output of a cell that carries
  ``mystnb.figure.name`` (``_1``, ``_2``, ... when one cell draws several);
* ``notebooks/<chapter>.ipynb``, the executed notebook (up to the failing cell);
* ``summary.json``, each chapter's status, number of figures, seconds and the numbers it glued for
  its prose (``glued``, :func:`silentlib.prose.show_glued`, from a cell run after the chapter's own).

Every chapter checks its claims in hidden assertion cells, so a chapter whose cell raises has
failed a check of the book's science at that scale: it is reported FAILED with the error's last
line, the next chapter runs, and the command exits with status 1. How long it takes: at
``--scale fast`` on two CPU cores, a few minutes for the whole book; at ``--scale paper`` on two CPU
cores, minutes per chapter (the README's table), dominated by the training runs with tracked kernels
and the sliders' frames (the summary reports each chapter's time).

It needs the book: its chapters and its tools (jupytext, nbformat, nbclient, ipykernel, all in
``requirements.txt`` but not dependencies of the ``silentlib`` package). From an installed wheel it
prints "run from a checkout of the book with its requirements installed" and exits with status 2.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import config
from .prose import GLUE_MIME, with_eval_cells

try:  # the book's tools (requirements.txt), not dependencies of the silentlib package
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
except ImportError:  # an installed wheel without the book: main() says what is needed
    jupytext = nbformat = NotebookClient = None
    CellExecutionError = RuntimeError

ENV = ("SILENT_SCALE", "SILENT_DEVICE", "SILENT_STATIC", "SILENT_SEED")
BOOK_TOOLS = ("jupytext", "nbformat", "nbclient", "ipykernel")
NEEDS_BOOK = "run from a checkout of the book with its requirements installed (python -m pip install -r requirements.txt -e .)"


def missing_tools() -> list[str]:
    """The book's tools (jupytext, nbformat, nbclient, ipykernel) that are not installed."""
    return [name for name in BOOK_TOOLS if importlib.util.find_spec(name) is None]


def default_chapters_dir() -> Path:
    """The ``chapters`` folder next to the (editable-installed) ``silentlib`` package."""
    import silentlib
    return Path(silentlib.__file__).resolve().parents[1] / "chapters"


def figure_pngs(nb):
    """(figure name, [PNG bytes, ...]) of every cell with ``mystnb.figure.name`` metadata, in order."""
    for cell in nb.cells:
        name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
        if cell.cell_type == "code" and name:
            pngs = [base64.b64decode(out["data"]["image/png"]) for out in cell.get("outputs", [])
                    if "image/png" in out.get("data", {})]
            yield name, pngs


def cell_errors(nb) -> list[str]:
    """``"cell N: Error: message"`` for every code cell of an executed notebook that raised."""
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                message = f"{out.get('ename', '')}: {out.get('evalue', '')}".strip().splitlines()
                found.append(f"cell {index}: {message[0] if message else ''}")
    return found


def run_chapter(path: Path, out: Path, cell_timeout: float = 3600, keep_going: bool = False,
                progress: bool = True) -> dict:
    """Execute one chapter, write its figures and executed notebook; return its summary row.

    A cell still running after ``cell_timeout`` seconds fails the chapter (nothing hangs forever).
    With ``keep_going`` every cell runs, and the row's ``errors`` lists each cell that raised.
    ``progress``: a bar over the chapter's cells.
    """
    nb = with_eval_cells(jupytext.read(path))   # the prose's {eval} roles are evaluated, as in the book
    nb.cells.append(nbformat.v4.new_code_cell('__import__("silentlib.prose").prose.show_glued()',
                                              metadata={"tags": ["remove-cell"]}))
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=keep_going,
                            resources={"metadata": {"path": str(path.parent)}})
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    status, error, start = "passed", None, time.perf_counter()
    with tqdm(total=len(code), desc=path.stem, unit="cell", disable=not progress) as bar:
        try:
            with client.setup_kernel():
                info = client.wait_for_reply(client.kc.kernel_info())
                nb.metadata["language_info"] = info["content"]["language_info"]
                for index, cell in code:
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                    bar.update(1)
        except CellExecutionError as err:
            status, error = "FAILED", f"{err.ename}: {err.evalue}".strip().splitlines()[-1]
        except Exception as err:  # a dead kernel, a kernel that never started, ...
            lines = [l for l in str(err).splitlines() if l.strip() and not set(l.strip()) <= set("-=")]
            status, error = "FAILED", f"{type(err).__name__}: {lines[0] if lines else ''}".strip()
    seconds = time.perf_counter() - start
    errors = cell_errors(nb)
    if errors and status == "passed":
        status, error = "FAILED", errors[0]
    n_figures = 0
    for name, pngs in figure_pngs(nb):
        for k, png in enumerate(pngs, start=1):
            suffix = f"_{k}" if len(pngs) > 1 else ""
            (out / f"{path.stem}__{name}{suffix}.png").write_bytes(png)
            n_figures += 1
    (out / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, out / "notebooks" / f"{path.stem}.ipynb")
    return {"chapter": path.stem, "status": status, "figures": n_figures,
            "seconds": round(seconds, 1), "error": error, "errors": errors, "glued": glued(nb)}


def glued(nb) -> dict[str, float]:
    """The numbers an executed chapter glued for its prose (its last cell's :data:`~silentlib.prose.GLUE_MIME` output)."""
    for out in nb.cells[-1].get("outputs", []):
        if GLUE_MIME in out.get("data", {}):
            return dict(out["data"][GLUE_MIME])
    return {}


def select_chapters(chapters_dir: Path, wanted: str | None) -> list[Path]:
    """``chapters_dir/*.md`` in order, or those whose number prefix is in the comma-separated ``wanted``."""
    paths = sorted(chapters_dir.glob("*.md"))
    if not wanted:
        return paths
    try:
        numbers = [int(w) for w in wanted.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--chapters must be comma-separated chapter numbers such as 02,05, got {wanted!r}") from None
    by_number = {int(p.stem.split("_")[0]): p for p in paths if p.stem.split("_")[0].isdigit()}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        raise ValueError(f"no chapter numbered {missing} in {chapters_dir} (have {sorted(by_number)})")
    return [by_number[n] for n in numbers]


def parser():
    """The command's options (an ``argparse.ArgumentParser``)."""
    p = argparse.ArgumentParser(prog="python -m silentlib figures",
                                description="Execute the book's chapters and write their figures.")
    p.add_argument("--scale", choices=["fast", "paper"], default="paper", help="the book's sizes (default: paper)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when available, else cpu")
    p.add_argument("--out", required=True, type=Path, help="folder for the PNGs, notebooks/ and summary.json")
    p.add_argument("--chapters", default=None, help="comma-separated chapter numbers (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="SILENT_SEED for every chapter (default: the environment's, else 0)")
    p.add_argument("--keep-going", action="store_true",
                   help="run every cell after a failing one and report every failing cell")
    p.add_argument("--cell-timeout", type=float, default=3600,
                   help="seconds after which a still-running cell fails its chapter (default 3600)")
    p.add_argument("--jobs", type=int, default=None,
                   help="chapters run at once (default: at the fast scale on a CPU, where each chapter computes on "
                        "one thread, as many as the cores, at most 4; else 1)")
    p.add_argument("--chapters-dir", type=Path, default=None,
                   help="folder of the chapter .md files (default: the repository's chapters/)")
    return p


def main(argv=None) -> int:
    """Run the command; returns 0 when every chapter passed, 1 otherwise.

    Returns 2, after a plain message on stderr (no traceback), when the book's tools
    (``BOOK_TOOLS``) are not installed or there is no chapters folder, as from an
    installed wheel: the command needs a checkout of the book with its requirements.
    """
    p = parser()
    args = p.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        p.error(f"--seed must be a non-negative integer, got {args.seed}")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs must be a positive integer, got {args.jobs}")
    missing = missing_tools()
    if missing:
        print(f"python -m silentlib figures executes the book's chapters and needs {', '.join(missing)}, "
              f"which {'is' if len(missing) == 1 else 'are'} not installed: {NEEDS_BOOK}.", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but this torch has no CUDA device (torch.cuda.is_available() is False); "
                "use --device cpu")
    chapters_dir = args.chapters_dir or default_chapters_dir()
    if not chapters_dir.is_dir():
        print(f"python -m silentlib figures: no chapters folder at {chapters_dir}; {NEEDS_BOOK}, "
              f"or pass --chapters-dir DIR (the book's chapters/).", file=sys.stderr)
        return 2
    try:
        paths = select_chapters(chapters_dir, args.chapters)
    except ValueError as err:
        p.error(str(err))
    if not paths:
        p.error(f"no chapter .md files in {chapters_dir}")
    args.out.mkdir(parents=True, exist_ok=True)
    with _book_environment(args.scale, device, args.seed):
        try:
            seed = config.seed()
        except ValueError as err:
            p.error(str(err))
        start = time.perf_counter()
        jobs = min(args.jobs or default_jobs(args.scale, device), len(paths))
        if jobs > 1:
            rows = _run_in_parallel(paths, args, jobs)
        else:
            rows = [_run_and_report(path, args) for path in paths]
    return _summarize(rows, time.perf_counter() - start, args, device, seed)


@contextlib.contextmanager
def _book_environment(scale, device, seed):
    """SILENT_SCALE, SILENT_DEVICE, SILENT_STATIC (and SILENT_SEED) set for the block, which the
    chapters' kernels inherit; the previous values put back afterwards."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(SILENT_SCALE=scale, SILENT_DEVICE=device,
                      SILENT_STATIC="1")  # sliders draw once (see silentlib.widgets)
    if seed is not None:
        os.environ["SILENT_SEED"] = str(seed)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_jobs(scale: str, device: str) -> int:
    """Chapters to run at once: at the fast scale on a CPU each chapter's kernel computes on one thread
    (:func:`silentlib.config.setup`), so one per core (at most 4); otherwise a chapter uses the whole machine."""
    if scale != "fast" or device != "cpu":
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _run_in_parallel(paths, args, jobs):
    """:func:`run_chapter` of every chapter, ``jobs`` at a time in fresh processes (each its own kernel);
    the rows in the chapters' order, each chapter reported as it ends."""
    rows = {}
    context = multiprocessing.get_context("spawn")    # no fork of a process that holds torch's threads
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(run_chapter, path, args.out, args.cell_timeout, args.keep_going, False): path
                   for path in paths}
        for done in concurrent.futures.as_completed(futures):
            row = rows[futures[done]] = done.result()
            print(f"{row['chapter']}: {row['status']} in {row['seconds']:.1f} s", flush=True)
            _report_errors(row)
    return [rows[path] for path in paths]


def _report_errors(row):
    for error in row["errors"] or ([row["error"]] if row["error"] else []):
        tqdm.write(f"{row['chapter']}: FAILED: {error}")


def _run_and_report(path, args):
    """:func:`run_chapter`, each failing cell written out as it is found."""
    row = run_chapter(path, args.out, args.cell_timeout, args.keep_going)
    _report_errors(row)
    return row


def _summarize(rows, total, args, device, seed):
    """Print the table of chapters, write summary.json; 0 when every chapter passed, else 1."""
    passed = all(r["status"] == "passed" for r in rows)
    width = max(len(r["chapter"]) for r in rows)
    print(f"\n{'chapter':{width}}  status  figures  seconds")
    for r in rows:
        print(f"{r['chapter']:{width}}  {r['status']:6}  {r['figures']:7d}  {r['seconds']:7.1f}")
    print(f"total: {total:.1f} s at scale {args.scale} on {device}, seed {seed}; "
          f"{sum(r['status'] == 'passed' for r in rows)}/{len(rows)} chapters passed; figures in {args.out}")
    summary = {"scale": args.scale, "device": device, "seed": seed, "passed": passed, "total_seconds": round(total, 1),
               "chapters": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if passed else 1
