"""The exercise framework (common.exercises) and its agreement with the notebooks' nbgrader cells."""

import json

import nbformat
import pytest

import common.exercises as ex
from common.attention import scaled_dot_product_attention
from common.course import repo_root
from common.exercises import LAB_NOTEBOOKS, Exercise, grade_exercise, grade_namespace, grading


def _cases(*cases):
    return Exercise(
        "labX-ex1",
        "Exercise 1",
        ("my_f",),
        points=3,
        cases=tuple((f"case {i}", c) for i, c in enumerate(cases)),
    )


def _fails(ns):
    raise AssertionError("divide by sqrt(d_k)")


def test_points_are_shared_among_the_cases_and_the_first_failure_is_the_hint():
    exercise = _cases(lambda ns: None, _fails, _fails)
    result = grade_exercise(exercise, {"my_f": lambda: 1})
    assert result["points"] == 1.0 and result["max"] == 3 and result["passed"] == 1
    assert result["hint"] == "case 1: divide by sqrt(d_k)"


def test_each_outcome_has_its_hint():
    def todo(ns):
        raise NotImplementedError

    def crash(ns):
        return ns["my_f"]() + "x"

    assert "not implemented yet" in grade_exercise(_cases(todo), {"my_f": lambda: 1})["hint"]
    assert "raised TypeError" in grade_exercise(_cases(crash), {"my_f": lambda: 1})["hint"]
    missing = grade_exercise(_cases(lambda ns: None), {})
    assert missing["points"] == 0 and missing["hint"].startswith("`my_f` is not defined")


def test_the_course_own_function_is_not_an_answer():
    exercise = _cases(lambda ns: None)
    assert "the course's own code" in grade_exercise(exercise, {"my_f": scaled_dot_product_attention})["hint"]
    assert (
        grade_exercise(exercise, {"my_f": scaled_dot_product_attention}, allow_course_code=True)["hint"] == ""
    )


def test_a_case_that_never_ends_is_stopped(monkeypatch):
    monkeypatch.setattr(ex, "CASE_SECONDS", 1)

    def forever(ns):
        while True:
            pass

    result = grade_exercise(_cases(forever, lambda ns: None), {"my_f": lambda: 1})
    assert result["passed"] == 1 and "stopped after 1 s" in result["hint"]


def test_grade_namespace_writes_one_json_line_per_exercise(tmp_path):
    out = tmp_path / "results.jsonl"
    results = list(grade_namespace("6.1", {}, out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == results and [r["exercise"] for r in lines] == [e.grade_id for e in grading("6.1")]


def test_unknown_lab_is_a_clear_error():
    with pytest.raises(ValueError, match="the course's labs are 6.1"):
        grading("7.1")


@pytest.mark.parametrize("lab", list(LAB_NOTEBOOKS))
def test_notebook_cells_carry_the_grading_ids_and_points(lab):
    nb = nbformat.read(repo_root() / LAB_NOTEBOOKS[lab], as_version=4)
    assert nb.metadata["course"]["lab"] == lab
    cells = nb.cells
    answers = [i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution")]
    exercises = grading(lab)
    assert [cells[i].metadata["nbgrader"]["grade_id"] for i in answers] == [e.grade_id for e in exercises]
    for i, exercise in zip(answers, exercises, strict=True):
        check = cells[i + 1].metadata["nbgrader"]
        assert check == {
            "grade": True,
            "grade_id": f"{exercise.grade_id}-check",
            "locked": True,
            "points": exercise.points,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
        assert "raise NotImplementedError" in cells[i].source or "None" in cells[i].source, (
            "the stub stays a stub"
        )
        assert "check_exercise(" in cells[i + 1].source
        assert exercise.cases[0][0] == "self-check", "the first case is the self-check the student sees"
