"""Grade the notebooks students hand back: run each offline and apart, then the lab's grading cases.

    python -m scripts.grade SUBMISSIONS [--out grades] [--lab 6.1] [--timeout 900] [--cell-timeout 300] [--jobs 1]

``SUBMISSIONS`` holds one folder per student (its name is the student's) with their notebooks, e.g.
``SUBMISSIONS/kim/01_attention_basics.ipynb``. The lab of a notebook is the one its file is named after (the
course's file names) or, under another name, the one its ``metadata.course.lab`` says; ``--lab`` grades every
notebook as that lab. Each notebook runs in a temporary folder of its own (working directory, outputs, caches,
kernel sockets: nothing is written outside it), in the quick profile with ``COURSE_OFFLINE=1``, with a time limit
per cell and one per notebook; errors do not stop it, and at the end the lab's ``GRADING`` cases
(``common.exercises``) run on the notebook's globals. Writes ``OUT/grades.csv`` (student, lab, exercise, points,
max, hint) and ``OUT/feedback/<student>/<notebook>.md``, in English and Korean.

Whatever comes in gets a line in the feedback and never stops the batch: a file that is not a notebook or is too
large, a notebook of another lab, a syntax error or an exception in a cell, a cell or a notebook over its time
limit, a deleted or renamed exercise cell, an enormous output (cut at ``OUTPUT_CAP`` bytes per cell). This is
isolation by folder and environment, not a security sandbox: run untrusted code in a container.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from common.exercises import LAB_NOTEBOOKS, grading

MAX_BYTES = 20 * 2**20  # a submitted file larger than this is not run
OUTPUT_CAP = 2**20  # bytes of output kept per cell while a notebook runs; the rest is dropped
RESULTS = "grading.jsonl"  # written by the grading cell, one line per exercise
CELLS = "cells.json"  # written by the runner: the cells that raised or timed out
COLUMNS = ("student", "lab", "exercise", "points", "max", "hint")
LAB_OF_FILE = {Path(path).name: lab for lab, path in LAB_NOTEBOOKS.items()}
GRADING_CELL = """\
# Added by the grader: the lab's grading cases on this notebook's globals.
from common.exercises import grade_namespace as _grade_namespace

for _result in _grade_namespace({lab!r}, globals(), {results!r}):
    print(_result["exercise"], _result["points"], "/", _result["max"])
"""


@dataclass
class Graded:
    """One submitted file: the rows it adds to grades.csv and the lines its feedback starts with."""

    student: str
    file: str
    lab: str = ""
    rows: list[dict] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (English, Korean)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------- what came in
def find_submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student, file) for every file in the students' folders; a file at the top level is its own student."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += [
                (entry.name, f)
                for f in sorted(entry.rglob("*"))
                if f.is_file() and ".ipynb_checkpoints" not in f.parts
            ]
        elif entry.is_file():
            found.append((entry.stem, entry))
    return found


def read_notebook(path: Path) -> tuple[nbformat.NotebookNode | None, tuple[str, str] | None]:
    """The notebook at ``path``, or None and the feedback line saying why it cannot be graded."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        return None, (
            f"`{path.name}` is {size / 2**20:.0f} MB, over the {MAX_BYTES // 2**20} MB limit: clear the outputs "
            "(Edit > Clear All Outputs) and hand it in again.",
            f"`{path.name}`의 크기가 {size / 2**20:.0f} MB로 제한({MAX_BYTES // 2**20} MB)을 넘습니다: 출력을 모두 지우고"
            " (Edit > Clear All Outputs) 다시 제출하세요.",
        )
    if path.suffix != ".ipynb":
        return None, (
            f"`{path.name}` is not a notebook (.ipynb): hand in the lab's notebook file.",
            f"`{path.name}`은(는) 노트북(.ipynb)이 아닙니다: 실습 노트북 파일을 제출하세요.",
        )
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same answer
        return None, (
            f"`{path.name}` cannot be read as a notebook ({type(err).__name__}): download it again from Jupyter or "
            "Colab (File > Download .ipynb).",
            f"`{path.name}`을(를) 노트북으로 읽을 수 없습니다 ({type(err).__name__}): Jupyter나 Colab에서 다시 내려받아"
            " (File > Download .ipynb) 제출하세요.",
        )
    return nb, None


def lab_of(nb: nbformat.NotebookNode) -> str | None:
    return nb.metadata.get("course", {}).get("lab")


# ----------------------------------------------------------------------------------------- running one
def sandbox_env(work: Path) -> dict[str, str]:
    """The environment of a submission's kernel: every cache and output folder inside ``work``, offline."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    home = work / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        COURSE_OUTPUTS=str(work / "outputs"),
        COURSE_OFFLINE="1",
        MPLCONFIGDIR=str(home / "matplotlib"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_RUNTIME_DIR=str(home / "jupyter"),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        XDG_CACHE_HOME=str(home / "cache"),
        TORCH_HOME=str(home / "torch"),
        HF_HOME=str(home / "huggingface"),
        HF_HUB_OFFLINE="1",
        TMPDIR=str(work / "tmp"),
        PYTHONDONTWRITEBYTECODE="1",
        TQDM_DISABLE="1",
        CUDA_VISIBLE_DEVICES="",
        MPLBACKEND="Agg",
    )
    (work / "tmp").mkdir(exist_ok=True)
    return env


def prepare(nb: nbformat.NotebookNode, lab: str, work: Path) -> Path:
    """The submission as it will run: no stored outputs, the grading cell appended."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(GRADING_CELL.format(lab=lab, results=RESULTS)))
    path = work / "submission.ipynb"
    nbformat.write(nb, path)
    return path


def run_isolated(work: Path, timeout: float, cell_timeout: float) -> bool:
    """Run ``work/submission.ipynb`` in a child process group; False if it had to be killed at ``timeout``."""
    cmd = [
        sys.executable,
        "-m",
        "scripts.grade",
        "--execute",
        "submission.ipynb",
        "--cell-timeout",
        str(cell_timeout),
    ]
    env = sandbox_env(work)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with open(work / "runner.log", "wb") as log:
        child = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            child.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the runner and the kernel it started
            child.wait()
            return False


def execute(path: Path, cell_timeout: float) -> None:
    """In the child: run every cell (errors and cell timeouts do not stop it); record the failing cells."""
    from nbclient import NotebookClient

    from scripts.execute_notebooks import IPCKernelManager

    class CappedClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None and len(json.dumps(outs)) > OUTPUT_CAP:
                outs[:] = [nbformat.v4.new_output("stream", name="stderr", text="[grader: output cut]\n")]
                self.capped.add(cell_index)
            return out

    IPCKernelManager.socket_dir = str(Path.cwd() / "home")
    nb = nbformat.read(path, as_version=4)
    client = CappedClient(
        nb,
        timeout=int(cell_timeout),
        interrupt_on_timeout=True,
        allow_errors=True,
        kernel_name="python3",
        kernel_manager_class=IPCKernelManager,
        resources={"metadata": {"path": str(Path.cwd())}},
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"over {cell_timeout:.0f} s",
            "traceback": [],
        },
    )
    client.capped = set()
    client.execute()
    failed = [
        {
            "cell": i,
            "grade_id": cell.metadata.get("nbgrader", {}).get("grade_id", ""),
            "ename": out.get("ename", ""),
            "evalue": str(out.get("evalue", ""))[:300],
        }
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    Path(CELLS).write_text(json.dumps({"failed": failed, "capped": sorted(client.capped)}), encoding="utf-8")


# ----------------------------------------------------------------------------------------- grading one
def zero_rows(lab: str, student: str, hint: str) -> list[dict]:
    return [
        dict(student=student, lab=lab, exercise=e.grade_id, points=0, max=e.points, hint=hint)
        for e in grading(lab)
    ]


def grade_file(
    student: str, path: Path, lab_option: str | None, timeout: float, cell_timeout: float
) -> Graded:
    graded = Graded(student, path.name)
    start = time.perf_counter()
    nb, problem = read_notebook(path)
    expected = lab_option or LAB_OF_FILE.get(path.name) or (lab_of(nb) if nb is not None else None)
    graded.lab = expected or ""
    if problem:
        graded.notes.append(problem)
        graded.rows = (
            zero_rows(expected, student, problem[0])
            if expected
            else [dict(student=student, lab="", exercise="", points=0, max=0, hint=problem[0])]
        )
        return graded
    if expected is None:
        line = (
            f"`{path.name}` is not one of the course's lab notebooks (no lab in its metadata): hand in the lab's own "
            "notebook, under its own name.",
            f"`{path.name}`은(는) 이 과정의 실습 노트북이 아닙니다 (메타데이터에 실습 번호가 없음): 실습 노트북을 원래 "
            "이름 그대로 제출하세요.",
        )
        graded.notes.append(line)
        graded.rows = [dict(student=student, lab="", exercise="", points=0, max=0, hint=line[0])]
        return graded
    actual = lab_of(nb)
    if actual != expected:
        line = (
            f"this is {'lab ' + actual if actual else 'not a course notebook'}'s notebook, handed in as lab {expected}: "
            f"hand in lab {expected}'s notebook ({Path(LAB_NOTEBOOKS[expected]).name}).",
            f"제출한 파일은 {'실습 ' + actual if actual else '이 과정의 노트북이 아닌'} 노트북인데, 실습 {expected}(으)로 "
            f"제출되었습니다: 실습 {expected}의 노트북({Path(LAB_NOTEBOOKS[expected]).name})을 제출하세요.",
        )
        graded.notes.append(line)
        graded.rows = zero_rows(expected, student, line[0])
        return graded
    exercises = grading(expected)
    present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
    for e in exercises:
        if e.grade_id not in present:
            graded.notes.append(
                (
                    f"the exercise cell `{e.grade_id}` ({e.title}) is missing: it was deleted, or its cell replaced; "
                    "keep the exercise cells of the handed-out notebook and write your answer in them.",
                    f"연습 셀 `{e.grade_id}` ({e.title})이(가) 없습니다: 삭제되었거나 다른 셀로 바뀌었습니다. 배포된 "
                    "노트북의 연습 셀을 그대로 두고 그 안에 답을 쓰세요.",
                )
            )
    with tempfile.TemporaryDirectory(prefix=f"grade-{student}-") as tmp:
        work = Path(tmp)
        prepare(nb, expected, work)
        finished = run_isolated(work, timeout, cell_timeout)
        results = {}
        if (work / RESULTS).is_file():
            for line in (work / RESULTS).read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                results[r["exercise"]] = r
        cells = json.loads((work / CELLS).read_text(encoding="utf-8")) if (work / CELLS).is_file() else None
    graded.notes += run_notes(finished, cells, timeout, cell_timeout, len(nb.cells))
    for e in exercises:
        r = results.get(e.grade_id)
        if r is None:
            hint = (
                f"not graded: the notebook was stopped at its {timeout:.0f}-second limit before this exercise"
                if not finished
                else "not graded: the grading cell did not reach this exercise (a case over the cell time limit?)"
            )
            r = dict(points=0, max=e.points, hint=hint)
        graded.rows.append(
            dict(
                student=student,
                lab=expected,
                exercise=e.grade_id,
                **{k: r[k] for k in ("points", "max", "hint")},
            )
        )
    graded.seconds = time.perf_counter() - start
    return graded


def run_notes(
    finished: bool, cells: dict | None, timeout: float, cell_timeout: float, n_cells: int
) -> list[tuple[str, str]]:
    notes = []
    if not finished:
        notes.append(
            (
                f"the notebook did not finish within {timeout:.0f} s and was stopped (an endless loop? a far larger "
                "setting than the quick profile's?); exercises graded before that count.",
                f"노트북이 {timeout:.0f}초 안에 끝나지 않아 중단되었습니다 (무한 루프? quick 프로필보다 훨씬 큰 설정?). "
                "그 전에 채점된 연습은 인정됩니다.",
            )
        )
    for f in (cells or {}).get("failed", []):
        if f["cell"] >= n_cells:  # the grader's own cell
            continue
        where = f"cell {f['cell'] + 1}" + (f" (`{f['grade_id']}`)" if f["grade_id"] else "")
        if f["ename"] in ("CellTimeoutError", "KeyboardInterrupt"):  # the interrupt the cell time limit sent
            notes.append(
                (
                    f"{where} ran over the {cell_timeout:.0f}-second limit per cell and was interrupted (an endless "
                    "loop?); the cells after it still ran.",
                    f"{where}이(가) 셀당 제한 시간 {cell_timeout:.0f}초를 넘어 중단되었습니다 (무한 루프?). 그 뒤의 셀은 "
                    "계속 실행되었습니다.",
                )
            )
        else:
            notes.append(
                (
                    f"{where} raised {f['ename']}: {f['evalue']}",
                    f"{where}에서 {f['ename']} 오류가 났습니다: {f['evalue']}",
                )
            )
    for i in (cells or {}).get("capped", []):
        notes.append(
            (
                f"cell {i + 1} printed more than {OUTPUT_CAP // 2**10} KB; the rest of its output was dropped.",
                f"셀 {i + 1}의 출력이 {OUTPUT_CAP // 2**10} KB를 넘어 나머지는 버렸습니다.",
            )
        )
    return notes


# ----------------------------------------------------------------------------------------- writing it down
def feedback(g: Graded) -> str:
    total = sum(r["points"] for r in g.rows)
    most = sum(r["max"] for r in g.rows)
    lines = [f"# {g.student} — {g.file}" + (f" (lab {g.lab})" if g.lab else ""), ""]
    lines += [f"**Score / 점수: {total:g} / {most:g}**", ""]
    if g.notes:
        lines += ["## What the grader noticed / 채점기가 확인한 것", ""]
        for en, ko in g.notes:
            lines += [f"- {en}", f"  - {ko}"]
        lines.append("")
    if any(r["exercise"] for r in g.rows):
        lines += [
            "## Exercises / 연습 문제",
            "",
            "| exercise / 연습 | points / 점수 | hint / 힌트 |",
            "|---|---|---|",
        ]
        for r in g.rows:
            hint = r["hint"].replace("|", "\\|").replace("\n", " ") or "all cases pass / 모든 경우 통과"
            lines.append(f"| `{r['exercise']}` | {r['points']:g} / {r['max']:g} | {hint} |")
        lines.append("")
        lines.append(
            "Hints name the first case that failed (the self-check you saw, or a grading case it does not show). "
            "힌트는 처음 실패한 경우를 알려 줍니다 (노트북의 자가 확인, 또는 노트북에 보이지 않는 채점용 경우)."
        )
    return "\n".join(lines) + "\n"


def write_results(graded: list[Graded], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "grades.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for g in graded:
            writer.writerows(g.rows)
    shutil.rmtree(out / "feedback", ignore_errors=True)
    for g in graded:
        target = out / "feedback" / g.student / f"{Path(g.file).stem}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(feedback(g), encoding="utf-8")
    return table


def grade_all(
    submissions: Path,
    out: Path,
    lab: str | None = None,
    timeout: float = 900,
    cell_timeout: float = 300,
    jobs: int = 1,
) -> list[Graded]:
    found = find_submissions(submissions)
    if not found:
        raise SystemExit(
            f"{submissions} holds no submissions: put each student's notebooks in a folder of their own"
        )

    def one(item):
        student, path = item
        try:
            return grade_file(student, path, lab, timeout, cell_timeout)
        except Exception as err:  # noqa: BLE001 - a grader bug on one file must not stop the batch
            g = Graded(student, path.name)
            line = f"the grader failed on this file ({type(err).__name__}: {err}); tell the instructor."
            g.notes.append(
                (line, f"채점기가 이 파일에서 실패했습니다 ({type(err).__name__}): 담당자에게 알려 주세요.")
            )
            g.rows = [dict(student=student, lab=lab or "", exercise="", points=0, max=0, hint=line)]
            return g

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        graded = list(pool.map(one, found))
    write_results(graded, out)
    return graded


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", type=Path, nargs="?")
    p.add_argument(
        "--out", type=Path, default=Path("grades"), help="where grades.csv and feedback/ go (default grades/)"
    )
    p.add_argument("--lab", choices=list(LAB_NOTEBOOKS), help="grade every notebook as this lab")
    p.add_argument("--timeout", type=float, default=900, help="seconds per notebook (default 900)")
    p.add_argument("--cell-timeout", type=float, default=300, help="seconds per cell (default 300)")
    p.add_argument(
        "--jobs", type=int, default=1, help="notebooks run at once (default 1; each uses the CPU's threads)"
    )
    p.add_argument("--execute", type=Path, help=argparse.SUPPRESS)  # the child's side of run_isolated
    args = p.parse_args(argv)
    if args.execute:
        execute(args.execute, args.cell_timeout)
        return
    if args.submissions is None or not args.submissions.is_dir():
        p.error(f"SUBMISSIONS={args.submissions}: give the folder of submissions (one folder per student)")
    start = time.perf_counter()
    graded = grade_all(args.submissions, args.out, args.lab, args.timeout, args.cell_timeout, args.jobs)
    for g in graded:
        total, most = sum(r["points"] for r in g.rows), sum(r["max"] for r in g.rows)
        print(
            f"{g.student:<16} {g.file:<36} lab {g.lab or '?':<4} {total:>5g} / {most:<4g} ({g.seconds:.0f} s)"
        )
    print(
        f"{len(graded)} files graded in {time.perf_counter() - start:.0f} s: {args.out / 'grades.csv'}, {args.out / 'feedback'}/"
    )


if __name__ == "__main__":
    main()
