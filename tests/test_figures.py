"""``python -m silentlib figures``: chapters executed headless, figures written, failures reported."""
import json
import os
from pathlib import Path

import jupytext
import pytest
import torch

from silentlib import figures
from silentlib.__main__ import main as cli_main

from helpers import CHAPTER_HEADER

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

HEADER = CHAPTER_HEADER


def named_figure_cells(md_path):
    """Names of the code cells with ``mystnb.figure.name`` metadata, read from the .md with jupytext."""
    names = []
    for cell in jupytext.read(md_path).cells:
        meta = cell.metadata.get("mystnb") or {}
        if cell.cell_type == "code" and (meta.get("figure") or {}).get("name"):
            names.append(meta["figure"]["name"])
    return names


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC), f"{path.name} is not a PNG"


def test_chapter_8_at_fast_scale(tmp_path):
    saved = os.environ.get("SILENT_SCALE")
    chapter = ROOT / "chapters" / "08_fast_ntks.md"
    names = named_figure_cells(chapter)
    assert names, "chapter 8 should have at least one named figure"

    status = figures.main(["--scale", "fast", "--device", "cpu", "--chapters", "08", "--out", str(tmp_path)])

    assert status == 0
    pngs = sorted(tmp_path.glob("*.png"))
    assert sorted(p.name for p in pngs) == sorted(f"08_fast_ntks__{n}.png" for n in names)
    for p in pngs:
        assert_png(p)
    assert (tmp_path / "notebooks" / "08_fast_ntks.ipynb").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is True and (summary["scale"], summary["device"]) == ("fast", "cpu")
    assert [(r["chapter"], r["status"], r["figures"]) for r in summary["chapters"]] == \
        [("08_fast_ntks", "passed", len(names))]
    assert os.environ.get("SILENT_SCALE") == saved, "the parent's environment should be restored"


def test_a_failing_chapter_is_reported_and_the_next_one_runs(tmp_path, capsys):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_broken.md").write_text(HEADER + """
# Broken

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
assert x == 2, "the science failed at this scale"
```
""")
    (chapters / "02_fine.md").write_text(HEADER + """
# Fine

```{code-cell} ipython3
import os
from pathlib import Path
assert os.environ["SILENT_SCALE"] == "fast" and os.environ["SILENT_DEVICE"] == "cpu"
assert os.environ["SILENT_STATIC"] == "1"      # sliders draw once, headless
assert Path.cwd().resolve() == Path(%r).resolve()
```

```{code-cell} ipython3
:mystnb:
:  figure:
:    name: fig-two
:    caption: two panels shown one after the other
import matplotlib.pyplot as plt
for k in range(2):
    plt.plot([0, 1], [0, k])
    plt.show()
```
""" % str(chapters))
    out = tmp_path / "out"

    status = figures.main(["--scale", "fast", "--device", "cpu", "--chapters-dir", str(chapters), "--out", str(out)])

    assert status == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False
    broken, fine = summary["chapters"]
    assert broken["status"] == "FAILED" and broken["error"] == "AssertionError: the science failed at this scale"
    assert fine["status"] == "passed" and fine["figures"] == 2, fine
    for name in ("02_fine__fig-two_1.png", "02_fine__fig-two_2.png"):
        assert_png(out / name)
    assert "FAILED" in capsys.readouterr().out


def test_a_cell_that_runs_too_long_fails_its_chapter(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_slow.md").write_text(HEADER + """
# Slow

```{code-cell} ipython3
import time
time.sleep(60)
```
""")
    out = tmp_path / "out"
    status = figures.main(["--scale", "fast", "--device", "cpu", "--chapters-dir", str(chapters),
                           "--out", str(out), "--cell-timeout", "2"])
    assert status == 1
    row = json.loads((out / "summary.json").read_text())["chapters"][0]
    assert row["status"] == "FAILED" and "timed out" in row["error"].lower(), row   # the sleep itself succeeds


def test_unknown_chapter_number_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        figures.main(["--chapters", "99", "--device", "cpu", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "no chapter numbered [99]" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_fails_fast(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["figures", "--device", "cuda", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "--device cuda, but this torch has no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing should run or be written"


def test_seed_and_keep_going_report_every_failing_cell(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_two_failures.md").write_text(HEADER + """
# Two failures

```{code-cell} ipython3
import os
assert os.environ["SILENT_SEED"] == "3", os.environ.get("SILENT_SEED")
```

```{code-cell} ipython3
assert False, "first claim"
```

```{code-cell} ipython3
assert False, "second claim"
```
""")
    out = tmp_path / "out"
    status = figures.main(["--scale", "fast", "--device", "cpu", "--chapters-dir", str(chapters), "--out", str(out),
                           "--seed", "3", "--keep-going"])
    assert status == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3
    (row,) = summary["chapters"]
    assert row["errors"] == ["cell 2: AssertionError: first claim", "cell 3: AssertionError: second claim"], row
    assert os.environ.get("SILENT_SEED") != "3"          # the caller's environment is restored


def test_negative_seed_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        figures.main(["--out", str(tmp_path), "--seed", "-1", "--device", "cpu"])
    assert "--seed" in capsys.readouterr().err


def test_chapters_run_in_parallel_report_in_order(tmp_path, capsys):
    """--jobs 2: each chapter in its own process, the summary in the chapters' order, a failure reported."""
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_slow.md").write_text(HEADER + """
# Slow

```{code-cell} ipython3
import os, time
time.sleep(3)
from silentlib.prose import glue
glue("pid", os.getpid())
```
""")
    (chapters / "02_fails.md").write_text(HEADER + """
# Fails

```{code-cell} ipython3
import os
from silentlib.prose import glue
glue("pid", os.getpid())
assert os.environ["SILENT_SCALE"] == "fast" and os.environ["SILENT_SEED"] == "4"
assert False, "the claim"
```
""")
    out = tmp_path / "out"
    status = figures.main(["--scale", "fast", "--device", "cpu", "--chapters-dir", str(chapters), "--out", str(out),
                           "--seed", "4", "--keep-going", "--jobs", "2"])
    assert status == 1
    slow, fails = json.loads((out / "summary.json").read_text())["chapters"]
    assert (slow["chapter"], slow["status"], fails["chapter"], fails["status"]) == \
        ("01_slow", "passed", "02_fails", "FAILED")
    assert fails["errors"] == ["cell 1: AssertionError: the claim"], fails
    assert slow["glued"]["pid"] != fails["glued"]["pid"]          # two kernels
    printed = capsys.readouterr().out
    assert printed.index("02_fails: FAILED") < printed.index("01_slow: passed")   # as each ended
    assert (out / "notebooks" / "01_slow.ipynb").is_file() and (out / "notebooks" / "02_fails.ipynb").is_file()


def test_jobs_default_to_the_cores_at_the_fast_scale_on_a_cpu():
    assert figures.default_jobs("paper", "cpu") == 1 and figures.default_jobs("fast", "cuda") == 1
    assert 1 <= figures.default_jobs("fast", "cpu") <= 4
