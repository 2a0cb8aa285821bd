"""Shared fixtures of the unit tests."""

import pytest

from common.course import check_exercise


@pytest.fixture
def exercise_output(capsys):
    """``exercise_output(name, test) -> str``: the line ``check_exercise`` prints for one answer (``[pass] name``,
    ``[todo] name: ...`` or ``[fail] name: hint``), as a student sees it in the notebook."""

    def run(name, test) -> str:
        check_exercise(name, test)
        return capsys.readouterr().out

    return run
