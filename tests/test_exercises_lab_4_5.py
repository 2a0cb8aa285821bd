"""Lab 4.5's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import math

import pytest
import torch

from common.exercises.lab_4_5 import (
    GRADING,
    check_float_format,
    check_top1_agreement,
    reference_float_format,
    reference_top1_agreement,
)


# ------------------------------------------------------------------ the reference solutions
def test_reference_top1_agreement_by_hand():
    reference = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0]])
    logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    assert reference_top1_agreement(reference, logits) == pytest.approx(0.5)  # rows 0 and 2 keep their class


def test_reference_float_format_against_torch_finfo_and_the_fp16_bits():
    for dtype, bits in ((torch.float16, (5, 10)), (torch.bfloat16, (8, 7)), (torch.float32, (8, 23)),
                        (torch.float64, (11, 52)), (torch.float8_e5m2, (5, 2))):  # fmt: skip
        info = torch.finfo(dtype)
        assert reference_float_format(*bits) == pytest.approx((info.eps, info.max, info.tiny), rel=1e-12)
    # fp16 written out: max 0 11110 1111111111 = 65504, smallest normal 0 00001 0000000000 = 2**-14
    assert reference_float_format(5, 10) == (2.0**-10, 65504.0, math.ldexp(1.0, -14))


# ------------------------------------------------------------------ the self-checks
def _agreement_reference(reference, logits):
    return float((reference.argmax(1) == logits.argmax(1)).float().mean())


def test_check_top1_agreement(exercise_output):
    check_top1_agreement(_agreement_reference)
    for wrong, message in (
        (lambda r, z: 100 * _agreement_reference(r, z), "not a percentage"),
        (lambda r, z: float((r == z).float().mean()), "not the logits themselves"),
        (lambda r, z: float((r.argmax(0) == z.argmax(0)).float().mean()), "dim=1"),
        (lambda r, z: 0.5, "expected"),
    ):
        with pytest.raises(AssertionError, match=message):
            check_top1_agreement(wrong)
    assert "[fail]" in exercise_output("top-1 agreement", lambda: check_top1_agreement(lambda r, z: 0.5))


def _float_format(exponent_bits, mantissa_bits):
    # written from the IEEE 754 layout, independently of torch.finfo (which the check compares with)
    bias = 2 ** (exponent_bits - 1) - 1
    eps = 2.0**-mantissa_bits
    return eps, (2 - eps) * 2.0**bias, 2.0 ** (1 - bias)


def test_check_float_format(exercise_output):
    check_float_format(_float_format)
    for wrong, message in (
        (lambda e, m: (2.0**-m / 2, *_float_format(e, m)[1:]), "unit roundoff"),
        (lambda e, m: (2.0 ** -(m + 1), *_float_format(e, m)[1:]), "unit roundoff"),
        (lambda e, m: (2.0**-m, 2.0 ** (2 ** (e - 1)), 2.0 ** (1 - 2 ** (e - 1) + 1)), "largest number"),
        (lambda e, m: (*_float_format(e, m)[:2], 2.0 ** -(2 ** (e - 1))), "smallest normal"),
        (lambda e, m: (2.0 ** -(m - 1), *_float_format(e, m)[1:]), "eps should be"),
        (lambda e, m: (1.0, 2.0), "three numbers"),
    ):
        with pytest.raises(AssertionError, match=message):
            check_float_format(wrong)
    assert "[pass]" in exercise_output("float format", lambda: check_float_format(_float_format))


# ------------------------------------------------------------------ grading
def test_grading_gives_the_reference_solutions_every_point(graded):
    namespace = {"my_top1_agreement": reference_top1_agreement, "my_float_format": reference_float_format}
    results = graded(GRADING, namespace, allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab4.5-ex1", "lab4.5-ex2"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def _fifty_images(reference, logits):
    return (
        float((reference.argmax(1) == logits.argmax(1)).sum()) / 50
    )  # the self-check's row count written in


def _three_formats(exponent_bits, mantissa_bits):
    # looked up, not computed: right for the self-check's formats only
    dtype = {(5, 10): torch.float16, (8, 7): torch.bfloat16, (8, 23): torch.float32}[
        exponent_bits, mantissa_bits
    ]
    info = torch.finfo(dtype)
    return info.eps, info.max, info.tiny


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    check_top1_agreement(_fifty_images)
    check_float_format(_three_formats)
    by_id = {
        r["exercise"]: r
        for r in graded(GRADING, {"my_top1_agreement": _fifty_images, "my_float_format": _three_formats})
    }
    for grade_id, hint in (
        ("lab4.5-ex1", "other sizes: 1 images x 3 classes: expected"),
        ("lab4.5-ex2", "float64 and fp8: raised KeyError"),
    ):
        assert by_id[grade_id]["points"] == by_id[grade_id]["max"] / 2, by_id[grade_id]
        assert by_id[grade_id]["hint"].startswith(hint), by_id[grade_id]["hint"]
