"""Lab 4.4's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.clip import clip_loss, clip_loss_floor, ensemble_prompts
from common.exercises.lab_4_4 import GRADING, check_info_nce, check_loss_floor, check_prompt_ensemble

MEASURED = [
    (64, 1.0, 3.4),
    (64, 14.3, 0.8),
]  # (batch, scale, final loss) of two runs, as the notebook's cell has


# ------------------------------------------------------------------ the self-checks
def test_info_nce_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_info_nce(clip_loss)
    assert "[pass] InfoNCE" in exercise_output("InfoNCE", lambda: check_info_nce(clip_loss))
    target = torch.arange

    with pytest.raises(AssertionError, match="one direction only"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z))))
    with pytest.raises(AssertionError, match="added the two directions"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z))) + F.cross_entropy(z.T, target(len(z))))
    with pytest.raises(AssertionError, match="diagonal"):
        check_info_nce(
            lambda z: (F.cross_entropy(z, target(len(z)).flip(0)) + F.cross_entropy(z.T, target(len(z)))) / 2
        )
    with pytest.raises(AssertionError, match="scalar"):
        check_info_nce(lambda z: F.cross_entropy(z, target(len(z)), reduction="none"))
    assert "[fail] InfoNCE: you computed one direction only" in exercise_output(
        "InfoNCE", lambda: check_info_nce(lambda z: F.cross_entropy(z, target(len(z))))
    )


def test_prompt_ensemble_check_accepts_the_reference_and_explains_wrong_answers():
    check_prompt_ensemble(ensemble_prompts)
    with pytest.raises(AssertionError, match="before averaging"):
        check_prompt_ensemble(lambda e: F.normalize(e.mean(1), dim=-1))
    with pytest.raises(AssertionError, match="not unit vectors"):
        check_prompt_ensemble(lambda e: F.normalize(e, dim=-1).mean(1))
    with pytest.raises(AssertionError, match=r"\(4, 8\)"):
        check_prompt_ensemble(lambda e: F.normalize(e, dim=-1))


def test_loss_floor_check_accepts_the_reference_and_explains_wrong_answers():
    check_loss_floor(clip_loss_floor, measured=[(64, 1.0, 3.4)])
    with pytest.raises(AssertionError, match="simplex"):
        check_loss_floor(lambda b, s: math.log1p((b - 1) * math.exp(-2 * s)))
    with pytest.raises(AssertionError, match="learnt nothing"):
        check_loss_floor(lambda b, s: math.log(b))
    with pytest.raises(AssertionError, match="below your floor"):
        check_loss_floor(clip_loss_floor, measured=[(64, 1.0, 2.0)])
    with pytest.raises(AssertionError, match="expected"):
        check_loss_floor(lambda b, s: 0.0)


# ------------------------------------------------------------------ grading: reference answers get every point
def _reference_namespace():
    return {
        "my_info_nce": clip_loss,
        "my_prompt_ensemble": ensemble_prompts,
        "my_loss_floor": clip_loss_floor,
        "measured": MEASURED,
    }


def test_grading_gives_the_reference_solutions_every_point(graded):
    results = graded(GRADING, _reference_namespace(), allow_course_code=True)
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}
    assert [r["exercise"] for r in results] == ["lab4.4-ex1", "lab4.4-ex2", "lab4.4-ex3"]


def detached_info_nce(z):
    # the right number, but a new tensor: no gradient reaches the logits
    t = torch.arange(len(z))
    return torch.tensor(((F.cross_entropy(z, t) + F.cross_entropy(z.T, t)) / 2).item())


def normalises_in_place(e):
    e /= e.norm(dim=-1, keepdim=True)
    mean = e.mean(1)
    return mean / mean.norm(dim=-1, keepdim=True)


def squeezes(e):
    return F.normalize(F.normalize(e, dim=-1).mean(1).squeeze(), dim=-1)


@pytest.mark.parametrize(
    "name,answer,exercise,case",
    [
        ("my_info_nce", detached_info_nce, "lab4.4-ex1", "gradients:"),
        ("my_prompt_ensemble", normalises_in_place, "lab4.4-ex2", "inputs kept:"),
        ("my_prompt_ensemble", squeezes, "lab4.4-ex2", "one class, one prompt:"),
    ],
)
def test_grading_cases_catch_what_the_self_check_does_not(graded, name, answer, exercise, case):
    namespace = {**_reference_namespace(), name: answer}
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace, allow_course_code=True)}
    assert by_id[exercise]["passed"] == 2 and 0 < by_id[exercise]["points"] < by_id[exercise]["max"]
    assert by_id[exercise]["hint"].startswith(case)


def test_grading_of_the_floor_measures_a_simplex(graded):
    # a floor that is right for B > 2 and wrong for two pairs (where the simplex is two opposite vectors)
    def no_pair(b, s):
        return clip_loss_floor(b, s) if b > 2 else math.log(b)

    result = graded(GRADING[2:], {"my_loss_floor": no_pair, "measured": MEASURED})[0]
    assert result["passed"] == 1 and result["hint"].startswith("a regular simplex: B = 2")


def test_grading_needs_the_measured_runs(graded):
    namespace = {k: v for k, v in _reference_namespace().items() if k != "measured"}
    hint = graded(GRADING[2:], namespace, allow_course_code=True)[0]["hint"]
    assert "`measured` is not defined" in hint
