"""Write the students' edition of the course: every lab without its solutions, and the package without them.

    python -m scripts.release [--out release] [--repo owner/name]

``release/`` is a complete course folder to publish as the students' repository (``--repo``, which its notebooks'
Colab badges and setup cells clone): the notebooks of ``week6/`` and ``week4/`` with the ``## Solutions`` section
removed and the exercise cells' outputs cleared (everything else as committed), ``common/`` with every
``### BEGIN SOLUTION`` / ``### BEGIN HIDDEN TESTS`` block dropped from ``common/exercises/`` (nbgrader's markers), the
checkpoints, the requirements and a short README. ``make grade`` grades what students hand back with the full course.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import nbformat

from common.course import REPO_SLUG, notebooks, repo_root

STUDENT_REPO = f"{REPO_SLUG}-student"
MARKER = ".course-release"  # marks a folder this script wrote, so that it may be replaced
HIDDEN_BLOCK = re.compile(
    r"^[ \t]*### BEGIN (SOLUTION|HIDDEN TESTS)[ \t]*\n.*?^[ \t]*### END \1[ \t]*\n", re.MULTILINE | re.DOTALL
)
STRAY_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)[ \t]*$", re.MULTILINE)
FILES = ("pyproject.toml", "requirements.txt", "environment.yml", "GLOSSARY.md", "checkpoints")
SOLUTIONS_HEADING = "## Solutions"


def strip_hidden(source: str) -> str:
    """``source`` without its SOLUTION and HIDDEN TESTS blocks (markers included); an unclosed block is an error."""
    stripped = HIDDEN_BLOCK.sub("", source)
    if STRAY_MARKER.search(stripped):
        raise ValueError("a ### BEGIN / ### END SOLUTION or HIDDEN TESTS line without its partner")
    return re.sub(r"\n{4,}", "\n\n\n", stripped).rstrip() + "\n"


def is_exercise_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("solution") or meta.get("grade"))


def student_notebook(nb: nbformat.NotebookNode, repo: str) -> nbformat.NotebookNode:
    """The student edition of one lab (a copy): no Solutions section, exercise cells without outputs, the Colab
    badge and setup cell pointing at the students' repository."""
    nb = nbformat.from_dict(nb)
    cells, skipping = [], False
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0] if cell.cell_type == "markdown" else ""
        if first.startswith(SOLUTIONS_HEADING):
            skipping = True
        elif skipping and re.match(r"#{1,2} ", first):
            skipping = False
        if skipping:
            continue
        if cell.cell_type == "code" and is_exercise_cell(cell):
            cell.outputs, cell.execution_count = [], None
        cell.source = cell.source.replace(REPO_SLUG, repo)
        cells.append(cell)
    nb.cells = cells
    return nb


def release(out: Path, repo: str = STUDENT_REPO) -> Path:
    """Write the students' edition into ``out`` (replacing an earlier release there); returns ``out``."""
    root = repo_root()
    out = Path(out).resolve()
    if out == root or root in out.parents and out.parent != root:
        raise ValueError(
            f"--out {out}: give a folder outside the course's own folders, e.g. {root / 'release'}"
        )
    if out.exists():
        if not (out / MARKER).is_file():
            raise FileExistsError(
                f"{out} exists and is not a release this script wrote: choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(f"students' edition of {REPO_SLUG}, published as {repo}\n", encoding="utf-8")
    shutil.copytree(root / "common", out / "common", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in (out / "common" / "exercises").glob("*.py"):
        try:
            path.write_text(strip_hidden(path.read_text(encoding="utf-8")), encoding="utf-8")
        except ValueError as err:
            raise ValueError(f"common/exercises/{path.name}: {err}") from None
    for name in FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=shutil.ignore_patterns("*.lock"))
        elif source.is_file():
            shutil.copy2(source, out / name)
    for notebook in notebooks():
        target = out / notebook
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nbformat.read(root / notebook, as_version=4), repo), target)
    (out / "README.md").write_text(README.format(repo=repo), encoding="utf-8")
    return out


README = """\
# Attention & Vision Transformer labs — students' edition / 학생용

Open a lab on Colab from its badge, or locally:

```bash
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/pip install --no-deps -e .
.venv/bin/pip install jupyterlab && .venv/bin/jupyter lab
```

Each lab ends with exercises: fill in the cells marked `TODO` and run the check cell below each; it prints `[pass]`,
`[fail]` with a hint, or `[todo]`. Hand in the notebook as it is (keep the exercise cells and their names).

각 실습의 끝에는 연습 문제가 있습니다. `TODO`가 표시된 셀을 채우고 바로 아래의 확인 셀을 실행하세요. `[pass]`,
힌트가 붙은 `[fail]`, 또는 `[todo]`가 출력됩니다. 노트북은 그대로 제출하세요 (연습 셀과 그 이름을 지우거나 바꾸지 마세요).

Source: https://github.com/{repo}
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, default=repo_root() / "release", help="where to write it (default release/)"
    )
    p.add_argument(
        "--repo", default=STUDENT_REPO, help=f"the students' repository, owner/name (default {STUDENT_REPO})"
    )
    args = p.parse_args(argv)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        p.error(f"--repo {args.repo!r}: give the students' GitHub repository as owner/name")
    out = release(args.out, args.repo)
    print(f"students' edition of {len(notebooks())} labs in {out} (publish it as github.com/{args.repo})")


if __name__ == "__main__":
    main()
