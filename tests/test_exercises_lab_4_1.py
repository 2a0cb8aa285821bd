"""Lab 4.1's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import pytest

from common.exercises.lab_4_1 import (
    GRADING,
    TRAINING_VARIANTS,
    check_patches,
    check_tokens_and_attention_entries,
    check_training_variants,
)
from common.vit import image_to_patches, sequence_length

GOOD_VARIANTS = {
    "baseline": {"accuracy": 0.79, "seconds_per_epoch": 14.0},
    "sincos": {"accuracy": 0.77, "seconds_per_epoch": 14.5},
    "patch 4": {"accuracy": 0.55, "seconds_per_epoch": 52.0},
    "cluttered": {"accuracy": 0.50, "seconds_per_epoch": 14.2},
}


# ------------------------------------------------------------------ the self-checks
def test_patches_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_patches(image_to_patches)
    assert "[pass] my_patches" in exercise_output("my_patches", lambda: check_patches(image_to_patches))

    def pixel_major(x, p):  # each patch flattened as (p, p, C)
        B, C, H, W = x.shape
        return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)

    def column_major(x, p):  # patches listed column by column
        B, C, H, W = x.shape
        return x.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)

    with pytest.raises(AssertionError, match=r"\(C, p, p\), channel first"):
        check_patches(pixel_major)
    with pytest.raises(AssertionError, match="row-major"):
        check_patches(column_major)
    with pytest.raises(AssertionError, match="expected shape"):
        check_patches(lambda x, p: x.flatten(2).transpose(1, 2))
    with pytest.raises(AssertionError, match="not the patches"):
        check_patches(lambda x, p: image_to_patches(x.flip(-1), p))
    assert "[fail] my_patches: each patch is flattened as (p, p, C)" in exercise_output(
        "my_patches", lambda: check_patches(pixel_major)
    )


def test_token_count_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_tokens_and_attention_entries(lambda: sequence_length(336, 14))
    with pytest.raises(AssertionError, match="CLS token enters"):
        check_tokens_and_attention_entries(lambda: (576, 576**2))
    with pytest.raises(AssertionError, match=r"\(query, key\) pair"):
        check_tokens_and_attention_entries(lambda: (577, 577))
    with pytest.raises(AssertionError, match="16-pixel patch"):
        check_tokens_and_attention_entries(lambda: sequence_length(336, 16))
    with pytest.raises(AssertionError, match="a pair"):
        check_tokens_and_attention_entries(lambda: 577)
    assert "[fail] tokens: 576 is the number of patches" in exercise_output(
        "tokens", lambda: check_tokens_and_attention_entries(lambda: (576, 576**2))
    )


def test_training_variants_check_accepts_consistent_results_and_explains_wrong_ones():
    good = {
        "baseline": {"accuracy": 0.79, "seconds_per_epoch": 14.0},
        "sincos": {"accuracy": 0.77, "seconds_per_epoch": 14.5},
        "patch 4": {"accuracy": 0.55, "seconds_per_epoch": 52.0},
        "cluttered": {"accuracy": 0.50, "seconds_per_epoch": 14.2},
    }
    check_training_variants(good)
    with pytest.raises(AssertionError, match="missing runs \\['cluttered'\\]"):
        check_training_variants({k: v for k, v in good.items() if k != "cluttered"})
    with pytest.raises(AssertionError, match="fraction"):
        check_training_variants({**good, "sincos": {"accuracy": 77.0, "seconds_per_epoch": 14.5}})
    with pytest.raises(AssertionError, match="patch size really changed"):
        check_training_variants({**good, "patch 4": {"accuracy": 0.7, "seconds_per_epoch": 15.0}})
    with pytest.raises(AssertionError, match="lacks \\['seconds_per_epoch'\\]"):
        check_training_variants({**good, "baseline": {"accuracy": 0.79}})
    same = {"accuracy": 0.5, "seconds_per_epoch": 10.0}
    with pytest.raises(AssertionError, match="own model"):
        check_training_variants(dict.fromkeys(good, same))


def test_training_variants_are_the_four_runs_of_the_exercise():
    assert set(TRAINING_VARIANTS) == set(GOOD_VARIANTS)


# ------------------------------------------------------------------ grading: reference answers get every point
def _reference_namespace():
    return {
        "my_patches": image_to_patches,
        "vit_l14_tokens_and_attention_entries": lambda: sequence_length(336, 14),
        "my_training_variants": lambda: GOOD_VARIANTS,
    }


def test_grading_gives_the_reference_solutions_every_point(graded):
    results = graded(GRADING, _reference_namespace(), allow_course_code=True)
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}
    assert [r["exercise"] for r in results] == ["lab4.1-ex1", "lab4.1-ex2", "lab4.1-ex3"]


def three_channels_only(x, p):
    # right for RGB images, wrong for any other number of channels
    B, _, H, W = x.shape
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(B, -1, 3 * p * p)


def merges_the_batch_axis(x, p):
    # right on a contiguous batch; a view that merges B, C and H/p fails on a channels-last one
    B, C, H, W = x.shape
    t = x.view(B * C * (H // p), p, W // p, p).permute(0, 2, 1, 3)
    return t.reshape(B, C, H // p, W // p, p, p).permute(0, 2, 3, 1, 4, 5).reshape(B, -1, C * p * p)


@pytest.mark.parametrize(
    "answer,case", [(three_channels_only, "other shapes:"), (merges_the_batch_axis, "a channels-last batch:")]
)
def test_grading_cases_catch_what_the_self_check_does_not(graded, answer, case):
    check_patches(answer)  # the self-check passes
    namespace = {**_reference_namespace(), "my_patches": answer}
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    assert 0 < by_id["lab4.1-ex1"]["points"] < by_id["lab4.1-ex1"]["max"]
    assert by_id["lab4.1-ex1"]["hint"].startswith(case)


def test_grading_refuses_the_course_own_function(graded):
    hint = graded(GRADING[:1], _reference_namespace())[0]["hint"]
    assert "the course's own code" in hint
