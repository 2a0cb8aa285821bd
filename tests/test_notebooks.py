"""Structure checks of every committed notebook (nbval checks their outputs separately)."""

import ast
import json
import re

import pytest

from common.course import SETUP_CELL, WEEK_ORDER, colab_url, declared_figures, notebooks, repo_root

NOTEBOOKS = notebooks()


def load(nb):
    return json.loads((repo_root() / nb).read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def code_cells(nb):
    return [c for c in load(nb)["cells"] if c["cell_type"] == "code"]


def test_course_has_notebooks_in_week_order():
    assert NOTEBOOKS, "no notebooks found"
    weeks = [nb.parts[0] for nb in NOTEBOOKS]
    assert weeks == sorted(weeks, key=WEEK_ORDER.index)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_title_cell_has_own_colab_badge_goals_and_runtime(nb):
    first = load(nb)["cells"][0]
    assert first["cell_type"] == "markdown"
    text = source(first)
    assert text.startswith("# "), "the first cell starts with the notebook's title"
    assert f"({colab_url(nb)})" in text, "the Colab badge must point at this notebook's own path"
    assert re.search(r"learning goals", text, re.I) and re.search(r"runtime", text, re.I)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_setup_cell_is_the_shared_one(nb):
    assert source(code_cells(nb)[0]) == SETUP_CELL


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_exactly_one_parameters_cell_with_quick_defaults(nb):
    cells = load(nb)["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells), (
        "stale papermill injected-parameters cell: refresh with `make refresh`"
    )
    values = {
        t.id: ast.literal_eval(node.value)
        for node in ast.parse(source(tagged[0])).body
        if isinstance(node, ast.Assign)
        for t in node.targets
    }
    assert {"PROFILE", "SEED", "DEVICE"} <= values.keys()
    assert values["PROFILE"] == "quick"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_outputs_stored_in_order_without_errors(nb):
    cells = code_cells(nb)
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, "every code cell is executed in the committed notebook"
    assert counts == list(range(1, len(cells) + 1)), "cells were executed out of order"
    outputs = [o for c in cells for o in c["outputs"]]
    assert outputs, "the notebook is committed with its outputs"
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("NBVAL_CHECK_OUTPUT" in source(c) for c in cells), "nbval has at least one checked cell"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_declared_figures_were_written(nb):
    figures = declared_figures(nb)
    assert figures, "declare the figures in metadata.course.figures"
    printed = "".join("".join(o.get("text", "")) for c in code_cells(nb) for o in c["outputs"])
    for fig in figures:
        assert fig.startswith(nb.parts[0] + "/") and fig.split("/")[1].startswith(nb.name[:3])
        assert f"saved outputs/{fig}" in printed, f"{fig} is declared but the stored run did not save it"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_no_machine_specific_paths(nb):
    text = json.dumps(load(nb))
    for marker in ("/work/", "/tmp/", "/home/", "/root/", "/usr/", "site-packages", "C:\\\\"):
        assert marker not in text, f"machine-specific path {marker!r} in {nb}"


HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_title_goals_and_summary_also_in_korean(nb):
    cells = [c for c in load(nb)["cells"] if c["cell_type"] == "markdown"]
    title = source(cells[0])
    assert re.search(r"^## 실습 \d\.\d", title, re.M), (
        "a Korean subtitle line '## 실습 N.M: ...' under the title"
    )
    assert "학습 목표" in title, "Korean learning goals (학습 목표) in the title cell"
    text = "\n".join(source(c) for c in cells)
    assert re.search(r"^## Summary$", text, re.M) and re.search(r"^## 요약$", text, re.M), (
        "an English '## Summary' and a Korean '## 요약'"
    )
    korean = text.split("\n## 요약\n", 1)[1].split("\n## ", 1)[0]
    assert len(HANGUL.findall(korean)) > 100, "the Korean summary says what the English one says"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=str)
def test_exercises_have_checks_and_a_solutions_section(nb):
    cells = load(nb)["cells"]
    text = "\n".join(source(c) for c in cells)
    if "Exercise" not in text:
        return
    assert "## Solutions (open after trying)" in text, "reference solutions a student can open after trying"
    assert "<summary>Solution" not in text, "one way: the Solutions section, not <details> cells"
    solutions = cells[next(i for i, c in enumerate(cells) if source(c).startswith("## Solutions")) :]
    run = [o for c in solutions if c["cell_type"] == "code" for o in c["outputs"]]
    printed = "".join("".join(o.get("text", "")) for o in run)
    assert "[pass]" in printed and "[fail]" not in printed and "[todo]" not in printed, (
        "the Solutions section runs every exercise's check on its reference solution"
    )
