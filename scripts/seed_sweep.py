"""Run the book's chapters at several seeds and report what varies (not part of CI).

    python scripts/seed_sweep.py --seeds 0-4 [--chapters 01,04] [--scale paper] [--out _build/seeds] [--jobs 2] [--record]

Each seed runs ``python -m silentlib figures --scale fast --keep-going --seed N`` (every cell runs,
so a chapter reports all of its failing checks). Then, per chapter, it prints every failing cell
at every seed and the range over seeds of every number the chapter shows in its prose (each
``{eval}`` role's result, from the evaluation cells ``silentlib.prose.with_eval_cells`` adds), and
writes both to ``<out>/sweep.json``. A claim's tolerance is set from these ranges.

``--record`` also writes, per chapter, every number it glued at every seed to
``silentlib/records/<scale>/<chapter>.json`` (:mod:`silentlib.records`), from which a chapter's prose
quotes runs its reader does not repeat (the paper's scale). Commit the record with the code it measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from silentlib.prose import EVAL_MIME
from silentlib.records import Record

ROOT = Path(__file__).resolve().parents[1]


def seeds_arg(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def shown(nb) -> dict[str, str]:
    """{expression: the text it shows} of every ``{eval}`` role of an executed chapter (the last, where an
    expression appears twice)."""
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            for item in out.get("data", {}).get(EVAL_MIME, []):
                text = item["result"].get("data", {}).get("text/plain", "")
                values[item["expression"]] = text[1:-1] if text[:1] in "'\"" and text[-1:] == text[:1] else text
    return values


def run_seed(seed: int, out: Path, chapters: str | None, scale: str) -> None:
    cmd = [sys.executable, "-m", "silentlib", "figures", "--scale", scale, "--device", "cpu", "--keep-going",
           "--jobs", "1", "--seed", str(seed), "--out", str(out / f"seed{seed}")]   # the seeds run in parallel
    if chapters:
        cmd += ["--chapters", chapters]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def as_number(text: str):
    try:
        return float(text.strip("'\"").rstrip("%").replace(",", ""))   # "12%" and "1,024" too
    except ValueError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--chapters", default=None)
    parser.add_argument("--scale", default="fast", choices=["fast", "paper"])
    parser.add_argument("--out", type=Path, default=Path("_build/seeds"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="summarize an earlier run in --out")
    parser.add_argument("--record", action="store_true",
                        help="write each chapter's glued numbers to silentlib/records/<scale>/<chapter>.json")
    args = parser.parse_args(argv)
    seeds = seeds_arg(args.seeds)
    commit = code_commit()    # what the runs measure (before they run)
    if not args.report_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda s: run_seed(s, args.out, args.chapters, args.scale), seeds))
    report, failed = {}, False
    for seed in seeds:
        summary = json.loads((args.out / f"seed{seed}" / "summary.json").read_text())
        for row in summary["chapters"]:
            entry = report.setdefault(row["chapter"], {"errors": {}, "shown": {}, "seconds": {}})
            entry["seconds"][seed] = row["seconds"]
            if row["errors"] or row["error"]:
                entry["errors"][seed] = row["errors"] or [row["error"]]
                failed = True
            nb = nbformat.read(args.out / f"seed{seed}" / "notebooks" / f"{row['chapter']}.ipynb", as_version=4)
            for name, text in shown(nb).items():
                entry["shown"].setdefault(name, {})[seed] = text
    for chapter, entry in report.items():
        secs = entry["seconds"].values()
        print(f"\n== {chapter}  ({min(secs):.0f}-{max(secs):.0f} s)")
        for seed, errors in entry["errors"].items():
            for e in errors:
                print(f"  seed {seed}: FAILED {e}")
        for name, by_seed in sorted(entry["shown"].items()):
            nums = [as_number(v) for v in by_seed.values()]
            if all(n is not None for n in nums) and nums:
                print(f"  {name:40s} {min(nums):.4g} .. {max(nums):.4g}   " +
                      " ".join(f"{n:.4g}" for n in nums))
            else:
                print(f"  {name:40s} " + " | ".join(by_seed.values()))
    (args.out / "sweep.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.record:
        for path in write_records(args.out, seeds, args.scale, commit):
            print("recorded", path)
    return 1 if failed else 0


def code_commit() -> str:
    """The checkout's commit, and whether the book's code (chapters, silentlib) differs from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    changed = git("status", "--porcelain", "--", "chapters", "silentlib", ":!silentlib/records")
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if changed else "")


def write_records(out: Path, seeds: list[int], scale: str, commit: str,
                  dest: Path = ROOT / "silentlib" / "records") -> list[Path]:
    """A :class:`silentlib.records.Record` per chapter from the seeds' summaries in ``out``, measured at
    ``commit``, written to ``dest/<scale>/<chapter>.json``; the paths written."""
    summaries = [json.loads((out / f"seed{s}" / "summary.json").read_text()) for s in seeds]
    machine = f"{os.cpu_count()} CPU cores ({platform.machine()}), torch threads as silentlib chooses"
    paths = []
    for i, row in enumerate(summaries[0]["chapters"]):
        rows = [s["chapters"][i] for s in summaries]
        names = sorted(set().union(*(r.get("glued", {}) for r in rows)))
        record = Record(
            chapter=row["chapter"], scale=scale, seeds=seeds,
            values={n: [r.get("glued", {}).get(n, math.nan) for r in rows] for n in names},
            commit=commit, date=datetime.date.today().isoformat(), device=summaries[0]["device"],
            machine=machine, seconds=[r["seconds"] for r in rows])
        path = dest / scale / f"{row['chapter']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.to_json())
        paths.append(path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
