"""Recorded runs: a chapter's glued numbers kept by ``figures``, stored per seed by
``scripts/seed_sweep.py --record``, read back by :mod:`silentlib.records`."""
import json
import math
from pathlib import Path

import pytest

from silentlib import figures, records
from silentlib.records import Record

from helpers import CHAPTER_HEADER as HEADER, load_module

ROOT = Path(__file__).resolve().parents[1]


def seed_sweep():
    return load_module(ROOT / "scripts" / "seed_sweep.py")


def test_figures_keeps_the_numbers_a_chapter_glues(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_glues.md").write_text(HEADER + """
# Glued

```{code-cell} ipython3
import os
import numpy as np
from IPython.display import Markdown
from silentlib.prose import glue
glue("seed_plus_half", int(os.environ["SILENT_SEED"]) + 0.5)
glue("count", np.int64(3))
glue("text", Markdown("*not* a number"))
glue("flag", True)
```
""")
    out = tmp_path / "out"
    assert figures.main(["--scale", "fast", "--device", "cpu", "--chapters-dir", str(chapters),
                         "--out", str(out), "--seed", "2"]) == 0
    (row,) = json.loads((out / "summary.json").read_text())["chapters"]
    assert row["glued"] == {"seed_plus_half": 2.5, "count": 3.0}


def summary(tmp_path, seed, glued, seconds):
    (tmp_path / f"seed{seed}").mkdir()
    rows = [{"chapter": "07_x", "seconds": seconds, "glued": glued}]
    (tmp_path / f"seed{seed}" / "summary.json").write_text(
        json.dumps({"device": "cpu", "chapters": rows}))


def test_seed_sweep_records_every_glued_number_per_seed(tmp_path):
    summary(tmp_path, 0, {"S": 0.5, "rho": -0.7}, 61.0)
    summary(tmp_path, 3, {"S": -0.25}, 59.0)          # a run that did not glue rho
    sweep = seed_sweep()
    (path,) = sweep.write_records(tmp_path, [0, 3], "paper", sweep.code_commit(), dest=tmp_path / "records")
    assert path == tmp_path / "records" / "paper" / "07_x.json"
    rec = Record(**json.loads(path.read_text()))
    assert (rec.chapter, rec.scale, rec.seeds, rec.seconds, rec.device) == ("07_x", "paper", [0, 3], [61.0, 59.0], "cpu")
    assert rec.values["S"] == [0.5, -0.25]
    assert rec.values["rho"][0] == -0.7 and math.isnan(rec.values["rho"][1])
    assert rec.commit and rec.date[:2] == "20"


def test_record_reads_values_by_seed_and_as_prose():
    rec = Record(chapter="02_x", scale="paper", seeds=[0, 1, 2, 3, 4],
                 values={"S": [-0.431, 0.2, 0.634, 0.1, 0.0], "n": [3.0] * 5})
    assert list(rec["S"]) == [-0.431, 0.2, 0.634, 0.1, 0.0]
    assert rec.at(2, "S") == 0.634
    assert rec.span("S") == "-0.43 to 0.63"
    assert rec.span("S", ".1f", sep=" and ") == "-0.4 and 0.6"
    assert rec.span("n", ".0f") == "3"
    assert rec.seeds_text() == "0\u20134"
    assert Record(chapter="x", scale="paper", seeds=[0, 2], values={}).seeds_text() == "0, 2"
    with pytest.raises(KeyError, match="no value 'rho'.*--record"):
        rec["rho"]
    with pytest.raises(KeyError, match="not 7"):
        rec.at(7, "S")


def test_a_missing_record_says_how_to_make_it():
    with pytest.raises(FileNotFoundError, match="seed_sweep.py --scale paper --chapters 99 --record"):
        records.recorded("99_nothing")


@pytest.mark.parametrize("chapter", ["02_silent_alignment", "11_when_silent"])
def test_the_book_s_paper_scale_records_are_shipped_and_complete(chapter):
    rec = records.recorded(chapter)
    assert rec.scale == "paper" and rec.seeds and len(rec.seconds) == len(rec.seeds)
    assert rec.commit and "uncommitted" not in rec.commit, "record the paper scale from committed code"
    assert all(len(v) == len(rec.seeds) for v in rec.values.values())
    assert records.record_path(chapter).is_file()
