"""Run the book's chapters at several seeds and report what varies (not part of CI).

    python scripts/seed_sweep.py --seeds 0-4 [--chapters 01,04] [--out _build/seeds] [--jobs 2]

Each seed runs ``python -m silentlib figures --scale fast --keep-going --seed N`` (every cell runs,
so a chapter reports all of its failing checks). Then, per chapter, it prints every failing cell
at every seed and the range over seeds of every number the chapter shows in its prose (each
``{eval}`` role's result, from the evaluation cells ``silentlib.prose.with_eval_cells`` adds), and
writes both to ``<out>/sweep.json``. A claim's tolerance is set from these ranges.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from silentlib.prose import EVAL_MIME


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
           "--seed", str(seed), "--out", str(out / f"seed{seed}")]
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
    args = parser.parse_args(argv)
    seeds = seeds_arg(args.seeds)
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
