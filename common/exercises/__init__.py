"""The labs' exercises, one module per lab (``lab_6_1`` … ``lab_4_5``), apart from the concepts they exercise.

A lab's module holds three things, in this order:

- the **self-checks** its notebook's exercise cells call (``check_<name>``): shipped to students;
- its **reference solutions**, between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines;
- its **grading cases**, between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` lines: ``GRADING``, one
  :class:`Exercise` per exercise (its grade id, points, and the cases run on a submission, the self-check first).

The markers are nbgrader's: ``make release`` (``scripts/release.py``) drops both blocks from the students' copy of
this package, and ``make grade`` (``scripts/grade.py``) runs ``GRADING`` on each submitted notebook through
:func:`grade_namespace`. A notebook's exercise cells carry the same grade ids in ``metadata.nbgrader``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# lab -> its notebook (relative to the course root); the order is the course's
LAB_NOTEBOOKS = {
    "6.1": "week6/01_attention_basics.ipynb",
    "6.2": "week6/02_self_attention.ipynb",
    "6.3": "week6/03_positional_encoding.ipynb",
    "6.4": "week6/04_transformer_block.ipynb",
    "6.5": "week6/05_sequence_modeling.ipynb",
    "6.6": "week6/06_encoder_decoder.ipynb",
    "4.1": "week4/01_vision_transformer.ipynb",
    "4.2": "week4/02_dino.ipynb",
    "4.3": "week4/03_model_comparison.ipynb",
    "4.4": "week4/04_clip.ipynb",
    "4.5": "week4/05_deployment.ipynb",
}


def check_exercise(name: str, test: Callable[[], object]) -> None:
    """Run ``test`` (which calls the student's code and asserts); print one line saying how it went."""
    try:
        test()
    except NotImplementedError:
        print(f"[todo] {name}: not implemented yet; fill in the TODO above and run this cell again.")
        return
    except AssertionError as err:
        print(f"[fail] {name}: {err or 'the check did not hold'}")
        return
    print(f"[pass] {name}")


@dataclass(frozen=True)
class Exercise:
    """One exercise as the grader sees it.

    ``grade_id`` is the ``metadata.nbgrader.grade_id`` of the notebook cell the student fills in (its self-check
    cell has ``<grade_id>-check``); ``names`` are what that cell defines; ``cases`` are ``(description, case)``
    pairs, ``case(namespace)`` raising ``AssertionError`` with a hint when the submission fails it. ``points``
    are shared equally among the cases.
    """

    grade_id: str
    title: str
    names: tuple[str, ...]
    points: float
    cases: tuple[tuple[str, Callable[[dict[str, Any]], object]], ...]


def lab_module(lab: str) -> ModuleType:
    """The exercises module of ``lab`` (``"6.1"`` -> ``common.exercises.lab_6_1``)."""
    if lab not in LAB_NOTEBOOKS:
        raise ValueError(f"unknown lab {lab!r}; the course's labs are {', '.join(LAB_NOTEBOOKS)}")
    return importlib.import_module(f"{__name__}.lab_{lab.replace('.', '_')}")


def grading(lab: str) -> tuple[Exercise, ...]:
    """``GRADING`` of ``lab``; a clear error in a student's copy of the package, which has no grading cases."""
    module = lab_module(lab)
    if not hasattr(module, "GRADING"):
        raise RuntimeError(
            f"{module.__name__} has no grading cases (a students' release of the course): grade from the full course"
        )
    return module.GRADING


# a grading case that runs longer is stopped (an endless loop in the answer); open exercises whose check calls
# the student's function (4.1 ex. 3, 4.2 ex. 5) train again inside it, tens of seconds in the quick profile
CASE_SECONDS = 120


def _time_limited(seconds: float, fn: Callable[[], object]) -> None:
    # SIGALRM interrupts a Python loop; only the main thread (the kernel's, pytest's) can receive it
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        fn()
        return

    def stop(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _own_code(name: str, value: Any) -> None:
    # the course's own function handed in under the student's name is not an answer (a model the notebook
    # built from a course class is context, not an answer)
    module = getattr(value, "__module__", None) or ""
    if (inspect.isroutine(value) or inspect.isclass(value)) and module.startswith("common."):
        raise AssertionError(
            f"`{name}` is `{module}.{getattr(value, '__name__', '?')}`, the course's own code: write it yourself"
        )


def run_case(case: Callable[[dict[str, Any]], object], namespace: dict[str, Any]) -> str | None:
    """None if the submission passes ``case``; else the hint the student gets (one line)."""
    try:
        _time_limited(CASE_SECONDS, lambda: case(namespace))
    except TimeoutError:
        return f"stopped after {CASE_SECONDS} s (an endless loop, or far more work than the exercise needs?)"
    except NotImplementedError:
        return "not implemented yet: the stub still raises NotImplementedError"
    except AssertionError as err:
        return str(err) or "the check did not hold"
    except Exception as err:  # noqa: BLE001 - a student's code may raise anything; the grade says what
        return f"raised {type(err).__name__}: {err}"
    return None


def grade_exercise(
    exercise: Exercise, namespace: dict[str, Any], allow_course_code: bool = False
) -> dict[str, Any]:
    """Every case of ``exercise`` on ``namespace``: points earned, the maximum, and the first failing hint.
    ``allow_course_code`` lets the course's own functions stand in for an answer (the tests grade the reference
    solutions)."""
    missing = [name for name in exercise.names if name not in namespace]
    if missing:
        hints = [
            f"`{missing[0]}` is not defined: the exercise cell was deleted or renamed, or it did not run "
            "(an error in an earlier cell?)"
        ] * len(exercise.cases)
    else:
        try:  # once per exercise: an answer that is the course's own code fails every case
            for name in exercise.names if not allow_course_code else ():
                _own_code(name, namespace[name])
            refused = None
        except AssertionError as err:
            refused = str(err)
        hints = [
            f"{description}: {hint}"
            for description, case in exercise.cases
            if (hint := refused or run_case(case, namespace)) is not None
        ]
    passed = len(exercise.cases) - len(hints)
    return {
        "exercise": exercise.grade_id,
        "title": exercise.title,
        "points": round(exercise.points * passed / len(exercise.cases), 2),
        "max": exercise.points,
        "passed": passed,
        "cases": len(exercise.cases),
        "hint": hints[0] if hints else "",
    }


def grade_namespace(
    lab: str, namespace: dict[str, Any], out: str | Path | None = None
) -> Iterator[dict[str, Any]]:
    """Grade a notebook's globals (``globals()`` in the kernel) exercise by exercise; with ``out``, append each
    result to that file as one JSON line as soon as it is known (a later exercise that hangs loses only itself)."""
    for exercise in grading(lab):
        result = grade_exercise(exercise, namespace)
        if out is not None:
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(result, ensure_ascii=False) + "\n")
        yield result
