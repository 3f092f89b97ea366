"""The book's house rules, checked without executing anything (the chapters themselves run under nbval)."""
import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
PAGES = CHAPTERS + [ROOT / "index.md", ROOT / "further_reading.md", ROOT / "conventions.md"]


def cell_option_blocks(text):
    """(line number, YAML text) of the option block of every code cell: ':key: value' lines, or a
    YAML block between '---' lines (the form jupytext writes for multi-line options)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("```{code-cell}"):
            opts, rest = [], lines[i + 1:]
            if rest and rest[0] == "---":
                for nxt in rest[1:]:
                    if nxt == "---":
                        break
                    opts.append(nxt)
            else:
                for nxt in rest:
                    if not nxt.startswith(":"):
                        break
                    opts.append(nxt[1:])
            if opts:
                yield i + 1, "\n".join(opts)


def test_there_are_chapters():
    assert len(CHAPTERS) >= 4, CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_a_myst_notebook_in_the_toc(chapter):
    text = chapter.read_text()
    toc = (ROOT / "_toc.yml").read_text()
    assert f"file: chapters/{chapter.stem}" in toc, f"{chapter.name} is not listed in _toc.yml"
    nb = jupytext.read(chapter)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert re.search(r"^\(ch-[\w-]+\)=\s*\n# \d+\. ", text, re.M), "a chapter opens with a label and '# N. Title'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    hidden_asserts = [c for c in code
                      if "remove-cell" in c.metadata.get("tags", []) and re.search(r"^\s*assert ", c.source, re.M)]
    assert hidden_asserts, f"{chapter.name} has no hidden (remove-cell) assertion cell"
    for heading in ("## Summary", "## Exercises"):
        assert heading in text, f"{chapter.name} lacks a '{heading}' section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_cell_options_are_valid_yaml(page):
    for line, block in cell_option_blocks(page.read_text()):
        try:
            yaml.safe_load(block)
        except yaml.YAMLError as err:  # myst-nb refuses such a cell and the build fails
            pytest.fail(f"{page.name}:{line}: cell options are not valid YAML ({err.problem}); quote the value or avoid ': '")


def test_references_resolve():
    texts = {p: p.read_text() for p in PAGES}
    labels = set()
    equations = set()
    for text in texts.values():
        labels |= set(re.findall(r"^\(([\w-]+)\)=", text, re.M))
        labels |= set(re.findall(r"^:?\s*name: ([\w-]+)", text, re.M))
        labels |= set(re.findall(r"^:label: ([\w-]+)", text, re.M))
        equations |= set(re.findall(r"^\s*\$\$ \(([\w-]+)\)", text, re.M))
    bib = set(re.findall(r"@\w+\{([\w-]+),", (ROOT / "references.bib").read_text()))
    problems = []
    for page, text in texts.items():
        for target in re.findall(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`", text):
            if target not in labels:
                problems.append(f"{page.name}: {{ref}} to unknown label {target}")
        for target in re.findall(r"\{(?:eq|numref)\}`([\w-]+)`", text):
            if target not in equations and target not in labels:
                problems.append(f"{page.name}: reference to unknown equation/figure {target}")
        for keys in re.findall(r"\{cite(?::[tp])?\}`([^`]+)`", text):
            for key in keys.split(","):
                if key.strip() not in bib:
                    problems.append(f"{page.name}: citation key {key.strip()} is not in references.bib")
        for targets in re.findall(r"\]\(#([\w,-]+)\)", text):     # [text](#label), [text](#key1,key2)
            for target in targets.split(","):
                if target not in labels | equations | bib:
                    problems.append(f"{page.name}: link to unknown label, equation or citation {target}")
    assert not problems, "\n".join(problems)


def test_numbered_references_match_their_targets(book_html):
    """A reference that carries its number as text (``{ref}`Fig. 5 <fig-x>```, written so that JupyterLab
    shows it: scripts/portable_refs.py) says the number the built book gives its figure or exercise."""
    numbers, refs = {}, []
    for page in book_html.glob("chapters/*.html"):
        html = page.read_text()
        for m in re.finditer(r'id="((?:fig|ex)-[\w-]+)"', html):
            found = re.search(r'caption-number">([^<]*?)\s*<', html[m.end():])
            numbers[m.group(1)] = found.group(1) if found else None
        refs += [(page.name, m.group(1), m.group(2))
                 for m in re.finditer(r'href="[^"]*#((?:fig|ex)-[\w-]+)"[^>]*>\s*<span[^>]*>((?:Fig\.|Exercise) [\d.]+)<', html)]
    assert len(refs) > 10, refs
    wrong = [f"{page}: {text} links to {target}, which is {numbers.get(target)}" for page, target, text in refs
             if numbers.get(target) != text]
    assert not wrong, "renumber with python scripts/portable_refs.py chapters/*.md:\n" + "\n".join(wrong)


def test_equation_labels_are_unique():
    seen = {}
    for page in PAGES:
        for label in re.findall(r"^\$\$ \(([\w-]+)\)", page.read_text(), re.M):
            assert label not in seen, f"equation label {label} in {page.name} and {seen[label]}"
            seen[label] = page.name


def test_no_generated_notebooks_in_chapters():
    assert not list((ROOT / "chapters").glob("**/*.ipynb"))


# A model's weights and outputs live on the training device (CUDA at paper scale on a GPU): inside
# `observe=` callables, and on any model moved there. `.numpy()` on them needs `.cpu()` first.
MODEL_TENSOR = re.compile(r"\.(weight|bias)\b|\.parameters\(|^\(?(\w*(model|net|mlp|wrn)\w*|_?m)[.(\[]")


def numpy_chains(code):
    """The expression chain before each ``.numpy()`` call, e.g. ``m.linears[0].weight.detach()``."""
    for match in re.finditer(r"\.numpy\(\)", code):
        i, depth = match.start(), 0
        while i > 0:
            ch = code[i - 1]
            if ch in ")]":
                depth += 1
            elif ch in "([":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and not (ch.isalnum() or ch in "_."):
                break
            i -= 1
        yield code[i:match.start()]


def device_unsafe_numpy(code):
    """Chains that look like a model's tensors turned into numpy without ``.cpu()``."""
    return [c for c in numpy_chains(code) if MODEL_TENSOR.search(c) and ".cpu()" not in c]


def test_numpy_scan_flags_model_tensors_without_cpu():
    bad = ('W = m.linears[0].weight.detach().numpy()\n'
           'a = net.linears[1].weight[0].numpy()\nf = model(x).detach().numpy()\nb = lin.bias.numpy()')
    good = ('W = m.linears[0].weight.detach().cpu().numpy()\ny_np = y.numpy()\nz = (x @ data.beta).numpy()\n'
            'K = K0.numpy() @ (y.numpy() - step.predictions[0])')
    assert len(device_unsafe_numpy(bad)) == 4, device_unsafe_numpy(bad)
    assert device_unsafe_numpy(good) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_model_tensors_go_through_cpu_before_numpy(chapter):
    problems = [f"{chapter.name}: {chain}.numpy()" for cell in jupytext.read(chapter).cells
                if cell.cell_type == "code" for chain in device_unsafe_numpy(cell.source)]
    assert not problems, "add .cpu() before .numpy() (the tensor may be on CUDA):\n" + "\n".join(problems)


SEED_LITERAL = re.compile(r"(?:\bseed=|manual_seed\(|default_rng\(|Generator\(\)\.manual_seed\()\s*\d")


def code_of(chapter):
    return "\n".join(c.source for c in jupytext.read(chapter).cells if c.cell_type == "code")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_draw_derives_from_the_book_seed(chapter):
    """One seed switch: the chapter calls ``sl.setup()`` once, and no draw uses a literal seed
    (``seed=SEED + 1`` is fine, ``seed=1`` is not), so SILENT_SEED changes every draw."""
    code = code_of(chapter)
    assert code.count("SEED = sl.setup()") == 1, f"{chapter.name}: the setup call SEED = sl.setup() should appear once"
    literal = [m.group(0) for m in SEED_LITERAL.finditer(code)]
    assert not literal, f"{chapter.name}: draws with a literal seed: {literal}"


def test_seed_literal_scan_flags_literal_seeds():
    assert SEED_LITERAL.search("linear_teacher(P, D, seed=0)")
    assert SEED_LITERAL.search("torch.manual_seed(3)")
    assert SEED_LITERAL.search("rng = np.random.default_rng(0)")
    assert not SEED_LITERAL.search("linear_teacher(P, D, seed=SEED + 1)")
    assert not SEED_LITERAL.search("torch.manual_seed(SEED)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_figures_fit_the_column_and_code_lines_are_short(chapter):
    """At most FIGURE_MAX_WIDTH inches wide (text >= 9 px in the 672 px column); shown code lines of at
    most 80 characters (they fit the column without a scroll bar)."""
    from silentlib.plotting import FIGURE_MAX_WIDTH, STYLE
    code = code_of(chapter)
    widths = [float(w) for w in re.findall(r"figsize=\(\s*([\d.]+)\s*,", code)]
    assert all(w <= FIGURE_MAX_WIDTH for w in widths), f"{chapter.name}: figure widths {widths}"
    for cell in jupytext.read(chapter).cells:
        if cell.cell_type == "code" and "remove-cell" not in cell.metadata.get("tags", []):
            long = [line for line in cell.source.split("\n") if len(line) > 80]
            assert not long, f"{chapter.name}: shown code lines over 80 characters: {long}"
    sizes = [v for k, v in STYLE.items() if k == "font.size" or k.endswith(("fontsize", "labelsize", "titlesize"))]
    assert min(sizes) >= 9 and STYLE["figure.dpi"] >= 150, (sizes, STYLE["figure.dpi"])
    assert not re.search(r"fontsize=[0-8]\b", code), f"{chapter.name}: a font below 9 pt"


def _defined_and_used(source):
    """(names a cell defines, names it reads), from its syntax tree."""
    import ast
    defined, used = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, ast.Store) else used).add(node.id)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return defined, used


def removed_dependencies(notebook):
    """(cell index, name) for every name a shown code cell reads that only a removed cell (other than
    the first, the setup cell) defines: a reader re-running the cells they see would hit a NameError."""
    removed, shown, found = set(), set(), []
    code = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    for k, (i, cell) in enumerate(code):
        defined, used = _defined_and_used(cell.source)
        if "remove-cell" in cell.metadata.get("tags", []):
            if k > 0:
                removed |= defined - shown
        else:
            found += [(i, n) for n in sorted(used & removed - shown - defined)]
            shown |= defined
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_shown_cell_depends_on_a_removed_one(chapter):
    assert not removed_dependencies(jupytext.read(chapter)), removed_dependencies(jupytext.read(chapter))


def test_removed_dependency_scan_flags_a_helper_hidden_from_the_reader():
    nb = jupytext.reads("```{code-cell} ipython3\n:tags: [remove-cell]\nimport numpy as np\n```\n\n"
                        "```{code-cell} ipython3\n:tags: [remove-cell]\ndef helper(x):\n    return x\n```\n\n"
                        "```{code-cell} ipython3\nfor k in range(2):\n    helper(np.ones(k))\n```\n", fmt="md:myst")
    assert removed_dependencies(nb) == [(2, "helper")]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_empty_code_cells(chapter):
    """JupyterLab's Run All leaves an empty cell unexecuted (no execution count), Sphinx does not mind."""
    empty = [i for i, c in enumerate(jupytext.read(chapter).cells) if c.cell_type == "code" and not c.source.strip()]
    assert not empty, f"{chapter.name}: empty code cells {empty}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_are_labelled_directives_with_solutions(chapter):
    """One exercise format: sphinx-exercise's {exercise} with a label, each followed by its {solution}."""
    text = chapter.read_text()
    exercises = re.findall(r"^```\{exercise\}[^\n]*\n:label: ([\w-]+)", text, re.M)
    solutions = re.findall(r"^```\{solution\} ([\w-]+)", text, re.M)
    assert exercises, f"{chapter.name}: no labelled exercise"
    assert exercises == solutions, f"{chapter.name}: exercises {exercises} vs solutions {solutions}"
    assert not re.search(r"^\*\*Exercise|^```\{admonition\} Exercise|^```\{admonition\} Solution", text, re.M), \
        f"{chapter.name}: an exercise or solution outside sphinx-exercise's directives"
    # a backtick fence's info string may hold no backtick (CommonMark): such a line is no directive, and the
    # directive's text would show as raw markup and its next fence swallow what follows
    bad = re.findall(r"^`{3,}\{[^}]*\}.*`.*$", text, re.M)
    assert not bad, f"{chapter.name}: directive lines with a backtick in their title: {bad}"


def test_checks_box_lists_the_hidden_assertions(tmp_path):
    from silentlib.checks import checks_box, chapter_checks
    (tmp_path / "99_demo.md").write_text(
        "```{code-cell} ipython3\nx = 2\nassert x == 2, 'shown cells are not listed'\n```\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell]\n# seeds 0-4: 1.9-2.1\n"
        "assert abs(x - 2) < 0.5, f'x should be about 2, got {x}'\nassert x > 0\n```\n")
    assert chapter_checks("99_demo", tmp_path) == ["x should be about 2 (seeds 0-4: 1.9-2.1)", "x > 0"]
    assert "<li><code>x &gt; 0</code></li>" in checks_box("99_demo", tmp_path).data
    with pytest.raises(ValueError, match="no chapter"):
        chapter_checks("00_missing", tmp_path)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_ends_with_its_checks_box(chapter):
    last = [c for c in jupytext.read(chapter).cells if c.cell_type == "code"][-1]
    assert f'checks_box("{chapter.stem}")' in last.source and "remove-input" in last.metadata.get("tags", [])


def test_no_math_is_left_as_dollar_text(book_html):
    """Every $...$ of a chapter, the prose's and that of a Markdown value an {eval} role shows, is typeset:
    none is left in the page's text (outside code and scripts)."""
    raw = {}
    for page in book_html.glob("chapters/*.html"):
        text = re.sub(r"<(script|pre|code)\b.*?</\1>", "", page.read_text(), flags=re.S)
        found = re.findall(r"\$[^$<>\n]{1,60}\$", re.sub(r"<[^>]+>", "", text))
        if found:
            raw[page.name] = found[:5]
    assert not raw, f"math left as text (nb_render_markdown_format: myst in _config.yml?): {raw}"
