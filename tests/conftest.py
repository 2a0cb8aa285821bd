"""Shared fixtures of the unit tests."""

import pytest

from common.exercises import check_exercise, grade_exercise


@pytest.fixture
def exercise_output(capsys):
    """``exercise_output(name, test) -> str``: the line ``check_exercise`` prints for one answer (``[pass] name``,
    ``[todo] name: ...`` or ``[fail] name: hint``), as a student sees it in the notebook."""

    def run(name, test) -> str:
        check_exercise(name, test)
        return capsys.readouterr().out

    return run


@pytest.fixture
def graded():
    """``graded(GRADING, namespace, allow_course_code=False) -> list of results``: a lab's grading cases run on a
    namespace as the grader runs them on a notebook's globals (``common.exercises.grade_exercise``)."""

    def run(grading, namespace, allow_course_code=False):
        return [grade_exercise(exercise, namespace, allow_course_code) for exercise in grading]

    return run
