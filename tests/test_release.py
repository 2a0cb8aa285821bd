"""`make release`: the students' edition holds no reference solution or grading case, and still runs unsolved."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from common.course import REPO_SLUG, notebooks, repo_root
from scripts.release import HIDDEN_BLOCK, STUDENT_REPO, is_exercise_cell, release, strip_hidden

ROOT = repo_root()
EXERCISE_MODULES = sorted((ROOT / "common" / "exercises").glob("lab_*.py"))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return release(tmp_path_factory.mktemp("release") / "release")


def released_text(edition: Path) -> dict[str, str]:
    return {
        str(p.relative_to(edition)): p.read_text(encoding="utf-8")
        for p in edition.rglob("*")
        if p.suffix in (".py", ".ipynb", ".md", ".toml", ".txt", ".yml")
    }


def hidden_blocks(path: Path) -> list[str]:
    return [m.group(0) for m in HIDDEN_BLOCK.finditer(path.read_text(encoding="utf-8"))]


def names_defined(block: str) -> set[str]:
    body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("### "))
    names = set()
    for node in ast.parse(body).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def solutions_section(nb) -> list:
    start = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Solutions"))
    end = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if i > start and c.cell_type == "markdown" and re.match(r"#{1,2} ", c.source)
        ),
        len(nb.cells),
    )
    return nb.cells[start:end]


def test_every_lab_module_has_reference_solutions_and_grading_cases():
    assert EXERCISE_MODULES, "common/exercises/lab_*.py"
    for path in EXERCISE_MODULES:
        defined = set().union(*(names_defined(b) for b in hidden_blocks(path)))
        assert "GRADING" in defined, f"{path.name}: GRADING belongs in a ### BEGIN HIDDEN TESTS block"


def test_no_solution_or_grading_case_leaks_by_name(edition):
    names = {n for path in EXERCISE_MODULES for b in hidden_blocks(path) for n in names_defined(b)}
    names -= {"GRADING"}  # the name is generic; that no GRADING is left is the package test's business
    assert len(names) > 10
    leaks = [
        f"{name} in {file}"
        for file, text in released_text(edition).items()
        for name in names
        if re.search(rf"\b{re.escape(name)}\b", text)
    ]
    assert not leaks, leaks


def test_no_solution_or_grading_case_leaks_by_source_text(edition):
    # a line of a hidden block that the shipped code also has (a seeded generator, say) gives nothing away
    shipped = "\n".join(
        HIDDEN_BLOCK.sub("", p.read_text(encoding="utf-8")) for p in (ROOT / "common").rglob("*.py")
    )
    lines = {
        line.strip()
        for path in EXERCISE_MODULES
        for block in hidden_blocks(path)
        for line in block.splitlines()
        if len(line.strip()) >= 24
        and not line.strip().startswith(("#", '"""'))
        and line.strip() not in shipped
    }
    assert len(lines) > 50
    released = released_text(edition)
    package = {f: t for f, t in released.items() if f.startswith("common")}
    assert not [(line, f) for line in lines for f, t in package.items() if line in t]
    for notebook in notebooks():
        committed = nbformat.read(ROOT / notebook, as_version=4)
        section = solutions_section(committed)
        elsewhere = "\n".join(c.source for c in committed.cells if c not in section)
        unique = {
            line.strip()
            for c in section
            for line in c.source.splitlines()
            if len(line.strip()) >= 24 and line.strip() not in elsewhere
        }
        assert unique, f"{notebook}: its Solutions section has text of its own"
        text = released[str(notebook)]
        assert not [line for line in unique if json.dumps(line)[1:-1] in text], notebook


def test_release_notebooks_are_the_committed_ones_without_solutions(edition):
    for notebook in notebooks():
        committed = nbformat.read(ROOT / notebook, as_version=4)
        student = nbformat.read(edition / notebook, as_version=4)
        section = solutions_section(committed)
        kept = [c for c in committed.cells if c not in section]
        assert [c.get("id") for c in student.cells] == [c.get("id") for c in kept], notebook
        assert not any(c.source.startswith("## Solutions") for c in student.cells)
        assert not [c.id for c in student.cells if re.search(r"solutions? section", c.source, re.I)], (
            f"{notebook}: the students' edition has no Solutions section to point to"
        )
        for ours, theirs in zip(kept, student.cells, strict=True):
            assert theirs.source == ours.source.replace(REPO_SLUG, STUDENT_REPO)
            if ours.cell_type == "code" and is_exercise_cell(ours):
                assert theirs.outputs == [] and theirs.execution_count is None
            elif ours.cell_type == "code":
                assert theirs.outputs == ours.outputs
        graded = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert graded and all(c.metadata["nbgrader"]["points"] > 0 for c in graded), notebook
        setup = student.cells[1].source
        assert f"https://github.com/{STUDENT_REPO}.git" in setup and '"pip", "install"' in setup, notebook
        assert f"github/{STUDENT_REPO}/blob/" in student.cells[0].source


def student_env(edition: Path, tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(edition),
        "COURSE_ROOT": str(edition),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env["COURSE_OUTPUTS"] = str(tmp_path / "outputs")
    return env


def test_release_package_has_no_solutions_and_says_so(edition, tmp_path):
    code = (
        "import common, common.exercises as ex\n"
        f"assert common.__file__.startswith({str(edition)!r}), common.__file__\n"
        "for lab in ex.LAB_NOTEBOOKS:\n"
        "    m = ex.lab_module(lab)\n"
        "    assert not hasattr(m, 'GRADING') and not [n for n in dir(m) if n.startswith('reference_')], lab\n"
        "try:\n"
        "    ex.grading('6.1')\n"
        "except RuntimeError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=student_env(edition, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "grade from the full course" in out.stdout


def test_release_notebook_runs_end_to_end_unsolved(edition, tmp_path, monkeypatch):
    for key, value in student_env(edition, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(edition / "week6/01_attention_basics.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(edition)}}
    ).execute()
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    printed = ["".join(o.get("text", "") for o in c.outputs) for c in checks]
    assert printed and all(p.startswith("[todo]") for p in printed), printed


def test_strip_hidden_drops_the_blocks_and_refuses_a_broken_one():
    source = "a = 1\n### BEGIN SOLUTION\nsecret = 2\n### END SOLUTION\n\n### BEGIN HIDDEN TESTS\nGRADING = ()\n### END HIDDEN TESTS\n"
    assert strip_hidden(source) == "a = 1\n"
    with pytest.raises(ValueError, match="without its partner"):
        strip_hidden("a = 1\n### BEGIN SOLUTION\nsecret = 2\n")


def test_release_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a release"):
        release(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="outside the course"):
        release(ROOT / "common" / "release")
