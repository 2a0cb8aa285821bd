"""`make grade`: a batch of real submissions — solved, wrong, broken and odd — of three labs, graded end to end.

The submissions are the students' edition of each lab (``make release``) with answer cells written as a student
would write them (not the reference solutions); the batch runs once per module (a few minutes on 2 cores).
"""

import csv
import subprocess
from pathlib import Path

import nbformat
import pytest

from common.course import repo_root
from common.exercises import LAB_NOTEBOOKS, grading
from scripts.grade import grade_all, read_notebook
from scripts.release import release

ROOT = repo_root()
LABS = ("6.1", "6.2", "6.3")
NOTEBOOK = {lab: Path(LAB_NOTEBOOKS[lab]).name for lab in LABS}

# Answers as students write them: for each lab, the answer cells of a correct and of a wrong submission.
CORRECT = {
    "6.1": {
        "lab6.1-ex1": (
            "def my_attention(q, k, v):\n"
            "    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]), dim=-1)\n"
            "    return weights @ v\n"
        ),
        "lab6.1-ex2": 'my_sentence = "the dog chased the cat"\nmy_prediction = "chased"\n',
        "lab6.1-ex3": "def my_softmax_with_temperature(scores, tau):\n    return torch.softmax(scores / tau, dim=-1)\n",
    },
    "6.2": {
        "lab6.2-ex1": (
            "def my_multi_head_attention(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None):\n"
            "    B, N, d = x.shape\n"
            "    d_k = d // num_heads\n"
            "    q, k, v = F.linear(x, w_qkv, b_qkv).chunk(3, dim=-1)\n"
            "    q, k, v = (t.reshape(B, N, num_heads, d_k).transpose(1, 2) for t in (q, k, v))\n"
            "    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)\n"
            "    if mask is not None:\n"
            "        scores = scores.masked_fill(~mask, float('-inf'))\n"
            "    heads = scores.softmax(dim=-1) @ v\n"
            "    return F.linear(heads.transpose(1, 2).reshape(B, N, d), w_out, b_out)\n"
        ),
        "lab6.2-ex2": "def my_attention_layer_flops(n, d):\n    return 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d\n",
        "lab6.2-ex3": (
            "def my_max_head_diversity(num_heads, num_relations):\n"
            "    base, extra = divmod(num_heads, num_relations)\n"
            "    sizes = [base + 1] * extra + [base] * (num_relations - extra)\n"
            "    return 1 - sum(s * (s - 1) for s in sizes) / (num_heads * (num_heads - 1))\n"
        ),
    },
    "6.3": {
        "lab6.3-ex1": (
            "def my_sinusoidal(num_positions, dim):\n"
            "    pos = torch.arange(num_positions, dtype=torch.float32)[:, None]\n"
            "    freq = 10000 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)\n"
            "    table = torch.zeros(num_positions, dim)\n"
            "    table[:, 0::2] = torch.sin(pos * freq)\n"
            "    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]\n"
            "    return table\n"
        ),
        "lab6.3-ex2": (
            "def my_shift_pair(sin_p, cos_p, k, omega):\n"
            "    s, c = math.sin(k * omega), math.cos(k * omega)\n"
            "    return sin_p * c + cos_p * s, cos_p * c - sin_p * s\n"
        ),
        "lab6.3-ex3": (
            "def my_label(tokens):\n"
            "    return (tokens[:, 0] < tokens[:, -1]).long()\n\n\n"
            "MY_LABEL_NEEDS_POSITIONS = True\n"
        ),
        "lab6.3-ex4": (
            "def my_relative_index(n, max_distance):\n"
            "    i = torch.arange(n)\n"
            "    return (i[None, :] - i[:, None]).clamp(-max_distance, max_distance)\n"
        ),
    },
}
WRONG = {
    "6.1": {
        # 3-D only: passes the self-check, fails the batched-heads case
        "lab6.1-ex1": (
            "def my_attention(q, k, v):\n"
            "    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v\n"
        ),
        "lab6.1-ex2": 'my_sentence = "the dog chased the cat"\nmy_prediction = "cat"\n',
        "lab6.1-ex3": "def my_softmax_with_temperature(scores, tau):\n    return torch.softmax(scores * tau, dim=-1)\n",
    },
    "6.2": {
        # floats: right at the self-check's sizes, rounded at a long sequence (a hidden case)
        "lab6.2-ex2": "def my_attention_layer_flops(n, d):\n    return int(8.0 * n * d * d + 4.0 * n * n * d)\n",
        "lab6.2-ex3": ("def my_max_head_diversity(num_heads, num_relations):\n    return 1.0\n"),
    },
    "6.3": {
        "lab6.3-ex3": (
            "def my_label(tokens):\n"
            "    return (tokens[:, 0] < tokens[:, -1]).long()\n\n\n"
            "MY_LABEL_NEEDS_POSITIONS = False\n"
        ),
        "lab6.3-ex4": (
            "def my_relative_index(n, max_distance):\n"
            "    i = torch.arange(n)\n"
            "    return (i[:, None] - i[None, :]).clamp(-max_distance, max_distance)\n"
        ),
    },
}


def answer_cells(nb) -> dict[str, nbformat.NotebookNode]:
    return {
        c.metadata["nbgrader"]["grade_id"]: c
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def submission(edition: Path, lab: str, answers: dict[str, str], target: Path, drop=(), edit=None) -> Path:
    nb = nbformat.read(edition / "week6" / NOTEBOOK[lab], as_version=4)
    cells = answer_cells(nb)
    for grade_id, source in answers.items():
        cells[grade_id].source = source
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in drop]
    if edit:
        edit(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def break_imports(nb):
    # an exception in the imports cell: every later cell fails fast with a NameError
    index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "from common" in c.source)
    nb.cells[index].source = "raise RuntimeError('my broken setup')\n" + nb.cells[index].source


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    edition = release(base / "release")
    subs = base / "submissions"
    for lab in LABS:
        name = NOTEBOOK[lab]
        submission(edition, lab, CORRECT[lab], subs / f"good-{lab}" / name)
        submission(edition, lab, WRONG[lab], subs / f"wrong-{lab}" / name)
        submission(edition, lab, {}, subs / f"broken-{lab}" / name, edit=break_imports)
    first = CORRECT["6.1"]
    syntax = {**first, "lab6.1-ex1": "def my_attention(q, k, v)\n    return q\n"}
    submission(edition, "6.1", syntax, subs / "syntax" / NOTEBOOK["6.1"])
    submission(edition, "6.1", {}, subs / "unsolved" / NOTEBOOK["6.1"])
    loud = {**first, "lab6.1-ex3": "print('x' * 3_000_000)\n" + first["lab6.1-ex3"]}
    submission(edition, "6.1", loud, subs / "loud" / NOTEBOOK["6.1"], drop=("lab6.1-ex2",))
    submission(edition, "6.3", CORRECT["6.3"], subs / "other-lab" / NOTEBOOK["6.1"])
    (subs / "odd").mkdir()
    (subs / "odd" / "notes.txt").write_text("my answers are in my head")
    (subs / "odd" / NOTEBOOK["6.2"]).write_text('{"cells": [')  # a download cut short
    before = course_state()
    out = base / "grades"
    graded = grade_all(subs, out, timeout=400, cell_timeout=120, jobs=2)
    with open(out / "grades.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"graded": graded, "rows": rows, "out": out, "before": before, "after": course_state()}


def course_state():
    """What a run could leave in the course folder: new untracked or ignored paths (git's view, folders
    collapsed) and the modification time of every file in the folders a notebook reads or writes."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True, text=True
    )
    new = sorted(line for line in status.stdout.splitlines() if line.startswith(("??", "!!")))
    folders = ("outputs", "common", "week4", "week6", "checkpoints", "scripts")
    files = sorted(
        (p.as_posix(), p.stat().st_mtime_ns) for f in folders for p in (ROOT / f).rglob("*") if p.is_file()
    )
    return new, files


def score(batch, student):
    rows = [r for r in batch["rows"] if r["student"] == student]
    return {r["exercise"]: (float(r["points"]), float(r["max"]), r["hint"]) for r in rows}


def feedback(batch, student, name):
    return (batch["out"] / "feedback" / student / f"{Path(name).stem}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("lab", LABS)
def test_a_correct_submission_gets_every_point(batch, lab):
    got = score(batch, f"good-{lab}")
    assert set(got) == {e.grade_id for e in grading(lab)}
    assert all(points == most > 0 and hint == "" for points, most, hint in got.values()), got


@pytest.mark.parametrize("lab", LABS)
def test_a_wrong_submission_loses_points_with_a_hint(batch, lab):
    got = score(batch, f"wrong-{lab}")
    lost = {e: (p, m, h) for e, (p, m, h) in got.items() if p < m}
    assert lost and all(h for _, _, h in lost.values()), got
    assert sum(p for p, _, _ in got.values()) < sum(m for _, m, _ in got.values())


def test_hidden_cases_catch_what_the_self_check_passes(batch):
    points, most, hint = score(batch, "wrong-6.1")["lab6.1-ex1"]
    assert 0 < points < most and hint.startswith("batched heads:")


@pytest.mark.parametrize("lab", LABS)
def test_a_broken_submission_gets_zero_and_the_error(batch, lab):
    got = score(batch, f"broken-{lab}")
    assert got and all(p == 0 for p, _, _ in got.values())
    text = feedback(batch, f"broken-{lab}", NOTEBOOK[lab])
    assert "raised RuntimeError: my broken setup" in text and "RuntimeError 오류가 났습니다" in text


def test_syntax_error_costs_only_its_exercise(batch):
    got = score(batch, "syntax")
    assert got["lab6.1-ex1"][0] == 0 and "`my_attention` is not defined" in got["lab6.1-ex1"][2]
    assert got["lab6.1-ex3"][0] == got["lab6.1-ex3"][1]
    assert "raised SyntaxError" in feedback(batch, "syntax", NOTEBOOK["6.1"])


def test_unsolved_edition_runs_and_scores_zero(batch):
    got = score(batch, "unsolved")
    assert all(p == 0 and "not implemented yet" in h for p, _, h in got.values())


def test_deleted_cell_and_enormous_output_are_named(batch):
    text = feedback(batch, "loud", NOTEBOOK["6.1"])
    assert "`lab6.1-ex2` (Exercise 2: predict the attention) is missing" in text
    assert "printed more than 1024 KB" in text
    got = score(batch, "loud")
    assert got["lab6.1-ex3"][0] == got["lab6.1-ex3"][1] and got["lab6.1-ex2"][0] == 0


def test_another_labs_notebook_and_files_that_are_not_notebooks(batch):
    got = score(batch, "other-lab")
    assert all(p == 0 and "this is lab 6.3's notebook, handed in as lab 6.1" in h for p, _, h in got.values())
    odd = {r["hint"] for r in batch["rows"] if r["student"] == "odd"}
    assert any("`notes.txt` is not a notebook" in h for h in odd)
    assert any("cannot be read as a notebook" in h for h in odd)
    assert "노트북(.ipynb)이 아닙니다" in feedback(batch, "odd", "notes.txt")


def test_every_submission_has_rows_and_feedback_in_both_languages(batch):
    students = {g.student for g in batch["graded"]}
    assert students == {r["student"] for r in batch["rows"]}
    for g in batch["graded"]:
        text = feedback(batch, g.student, g.file)
        assert "Score / 점수" in text


def test_grading_writes_nothing_into_the_course(batch):
    assert batch["before"] == batch["after"]


def test_an_endless_loop_is_stopped_per_cell_and_per_notebook(tmp_path):
    edition = release(tmp_path / "release")
    first = CORRECT["6.1"]
    subs = tmp_path / "submissions"
    # a busy loop: the cell limit interrupts it, the other exercises still count
    submission(
        edition, "6.1", {**first, "lab6.1-ex1": "while True:\n    pass\n"}, subs / "busy" / NOTEBOOK["6.1"]
    )
    # a loop that swallows the interrupt: only the notebook's limit stops it
    stubborn = "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass\n"
    submission(edition, "6.1", {**first, "lab6.1-ex1": stubborn}, subs / "stubborn" / NOTEBOOK["6.1"])
    graded = {g.student: g for g in grade_all(subs, tmp_path / "grades", timeout=60, cell_timeout=10, jobs=2)}
    busy = {r["exercise"]: r for r in graded["busy"].rows}
    assert busy["lab6.1-ex1"]["points"] == 0 and busy["lab6.1-ex3"]["points"] == busy["lab6.1-ex3"]["max"]
    assert any("10-second limit per cell" in en for en, _ in graded["busy"].notes)
    stubborn_rows = graded["stubborn"].rows
    assert all(r["points"] == 0 and "60-second limit" in r["hint"] for r in stubborn_rows)
    assert any("did not finish within 60 s" in en for en, _ in graded["stubborn"].notes)


def test_a_file_over_the_size_limit_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr("scripts.grade.MAX_BYTES", 1000)
    big = tmp_path / NOTEBOOK["6.1"]
    big.write_text(" " * 2000)
    nb, problem = read_notebook(big)
    assert nb is None and "over the" in problem[0] and "Clear All Outputs" in problem[0]
