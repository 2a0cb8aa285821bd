"""Lab 4.2's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import pytest

from common.dino import center_update, update_teacher
from common.exercises.lab_4_2 import (
    COLLAPSE_KINDS,
    COLLAPSE_WITHOUT,
    GRADING,
    check_center_update,
    check_collapse_predictions,
    check_ema_update,
    check_untextured_results,
)

GOOD_UNTEXTURED = {
    "DINO": {"knn": 0.40, "iou": 0.30},
    "random init": {"knn": 0.25, "iou": 0.13},
    "raw pixels": {"knn": 0.35},
}


# ------------------------------------------------------------------ the self-checks
def test_collapse_predictions_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_collapse_predictions(COLLAPSE_WITHOUT)
    swapped = {**COLLAPSE_WITHOUT, "no centering": "uniform", "no sharpening": "one dimension"}
    with pytest.raises(AssertionError, match="no centering: not 'uniform', because sharpening alone"):
        check_collapse_predictions(swapped)
    with pytest.raises(AssertionError, match="balance each other"):
        check_collapse_predictions({**COLLAPSE_WITHOUT, "no local crops": "uniform"})
    with pytest.raises(AssertionError, match="not one of"):
        check_collapse_predictions({**COLLAPSE_WITHOUT, "no centering": "collapse"})
    with pytest.raises(AssertionError, match="missing"):
        check_collapse_predictions({"no centering": "one dimension"})
    assert "[fail] predictions: no centering: not 'uniform'" in exercise_output(
        "predictions", lambda: check_collapse_predictions(swapped)
    )


def test_center_update_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_center_update(center_update)
    assert "[pass] centering update" in exercise_output(
        "centering update", lambda: check_center_update(center_update)
    )
    with pytest.raises(AssertionError, match="swapped"):
        check_center_update(lambda c, t, m: (1 - m) * c + m * t.mean(0, keepdim=True))
    with pytest.raises(AssertionError, match="batch sum"):
        check_center_update(lambda c, t, m: m * c + (1 - m) * t.sum(0, keepdim=True))
    with pytest.raises(AssertionError, match=r"shape \(1, K\)"):
        check_center_update(lambda c, t, m: m * c + (1 - m) * t.mean(1, keepdim=True))

    def in_place_only(center, teacher_out, m):
        center.mul_(m).add_((1 - m) * teacher_out.mean(0, keepdim=True))

    with pytest.raises(AssertionError, match="return the new center"):
        check_center_update(in_place_only)
    assert "[fail] centering update: expected m * center" in exercise_output(
        "centering update", lambda: check_center_update(lambda c, t, m: t.mean(0, keepdim=True))
    )


def test_ema_check_accepts_the_reference_and_explains_wrong_answers():
    check_ema_update(update_teacher)

    def swapped(student, teacher, m):
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.copy_((1 - m) * t + m * s)

    def rebinds(student, teacher, m):
        for t, s in zip(teacher.parameters(), student.parameters()):
            t = m * t + (1 - m) * s  # noqa: F841 (the slip: a new tensor, the parameter is untouched)

    def writes_the_student(student, teacher, m):
        update_teacher(teacher, student, m)

    with pytest.raises(AssertionError, match="swapped"):
        check_ema_update(swapped)
    with pytest.raises(AssertionError, match="did not change"):
        check_ema_update(rebinds)
    with pytest.raises(AssertionError, match="student changed"):
        check_ema_update(writes_the_student)


def test_untextured_results_check_accepts_plausible_results_and_explains_wrong_ones():
    good = {
        "DINO": {"knn": 0.40, "iou": 0.30},
        "random init": {"knn": 0.25, "iou": 0.13},
        "raw pixels": {"knn": 0.35},
    }
    check_untextured_results(good)
    with pytest.raises(AssertionError, match="missing 'raw pixels'"):
        check_untextured_results({k: v for k, v in good.items() if k != "raw pixels"})
    with pytest.raises(AssertionError, match="fraction"):
        check_untextured_results({**good, "DINO": {"knn": 40.0, "iou": 0.3}})
    with pytest.raises(AssertionError, match="far below chance"):
        check_untextured_results({**good, "DINO": {"knn": 0.01, "iou": 0.3}})
    with pytest.raises(AssertionError, match="trained backbone"):
        check_untextured_results({**good, "DINO": dict(good["random init"])})


def test_collapse_answers_follow_the_paper():
    # Caron et al. (2021), sec. 5.3: centering alone -> uniform, sharpening alone -> one dimension
    assert COLLAPSE_WITHOUT == {
        "no centering": "one dimension",
        "no sharpening": "uniform",
        "no local crops": "neither",
    }
    assert set(COLLAPSE_WITHOUT.values()) == set(COLLAPSE_KINDS)


# ------------------------------------------------------------------ grading: reference answers get every point
def _reference_namespace():
    return {
        "my_collapse_predictions": lambda: dict(COLLAPSE_WITHOUT),
        "my_center_update": center_update,
        "my_ema_": update_teacher,
        "my_untextured_results": lambda: GOOD_UNTEXTURED,
    }


def test_grading_gives_the_reference_solutions_every_point(graded):
    results = graded(GRADING, _reference_namespace(), allow_course_code=True)
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}
    assert [r["exercise"] for r in results] == ["lab4.2-ex1", "lab4.2-ex4", "lab4.2-ex5"]


def center_in_place(center, teacher_out, m):
    # the right value, but the caller's center is overwritten
    return center.mul_(m).add_((1 - m) * teacher_out.mean(0, keepdim=True))


def ema_without_no_grad(student, teacher, m):
    # right under the self-check's torch.no_grad(); outside one, an in-place op on a leaf that requires grad raises
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(m).add_((1 - m) * s)


@pytest.mark.parametrize(
    "name,answer,case",
    [
        ("my_center_update", center_in_place, "centering: other sizes, inputs kept:"),
        ("my_ema_", ema_without_no_grad, "EMA: a deeper model, outside no_grad:"),
    ],
)
def test_grading_cases_catch_what_the_self_check_does_not(graded, name, answer, case):
    namespace = {**_reference_namespace(), name: answer}
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace, allow_course_code=True)}
    ex4 = by_id["lab4.2-ex4"]
    assert ex4["passed"] == 2 and 0 < ex4["points"] < ex4["max"]  # the self-check and the other case pass
    assert ex4["hint"].startswith(case)


def test_grading_refuses_the_course_own_function(graded):
    hint = graded(GRADING[1:2], _reference_namespace())[0]["hint"]
    assert "the course's own code" in hint
