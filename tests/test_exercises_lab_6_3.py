"""Lab 6.3's exercises: the reference solutions, the self-checks on right and wrong answers, and the grading cases."""

import math

import pytest
import torch
from test_positional_extra import formula_table  # the paper's sinusoidal table, written out

from common.exercises.lab_6_3 import (
    GRADING,
    check_order_label,
    check_relative_index,
    check_shift_pair,
    check_sinusoidal,
    reference_first_smaller_than_last,
    reference_shift_pair,
)
from common.positional import relative_position_index, sinusoidal_encoding


# ------------------------------------------------------------------ the reference solutions and the self-checks
def test_shift_pair_follows_the_angle_addition_formulas():
    omega = 10000 ** (-6 / 16)
    for p in (0, 3, 41):
        for k in (-2, 1, 9):
            s, c = reference_shift_pair(math.sin(p * omega), math.cos(p * omega), k, omega)
            assert s == pytest.approx(math.sin((p + k) * omega), abs=1e-12)
            assert c == pytest.approx(math.cos((p + k) * omega), abs=1e-12)


def test_reference_first_smaller_than_last_by_hand():
    tokens = torch.tensor([[1, 5, 2], [3, 0, 3], [7, 1, 2], [0, 9, 9]])
    assert reference_first_smaller_than_last(tokens).tolist() == [1, 0, 0, 1]
    assert reference_first_smaller_than_last(tokens).dtype == torch.int64


def test_sinusoidal_check_accepts_correct_tables_and_names_the_slips(exercise_output):
    check_sinusoidal(sinusoidal_encoding)
    check_sinusoidal(formula_table)
    swapped = lambda n, d: formula_table(n, d)[:, [c ^ 1 for c in range(d)]]  # noqa: E731
    with pytest.raises(AssertionError, match="sin and cos are swapped"):
        check_sinusoidal(swapped)
    with pytest.raises(AssertionError, match="blocked"):
        check_sinusoidal(
            lambda n, d: torch.cat([formula_table(n, d)[:, 0::2], formula_table(n, d)[:, 1::2]], 1)
        )
    with pytest.raises(AssertionError, match="one row per position"):
        check_sinusoidal(lambda n, d: formula_table(n, d).T)

    def exponent_i_over_d(n, d):
        angles = torch.arange(n)[:, None] / 10000 ** (torch.arange(d // 2) / d)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(n, d)

    with pytest.raises(AssertionError, match="exponent is i/d"):
        check_sinusoidal(exponent_i_over_d)
    assert "[pass] Exercise 1" in exercise_output("Exercise 1", lambda: check_sinusoidal(sinusoidal_encoding))
    assert "[fail] Exercise 1: sin and cos are swapped" in exercise_output(
        "Exercise 1", lambda: check_sinusoidal(swapped)
    )


def test_shift_pair_check_accepts_the_rotation_and_catches_the_wrong_direction(exercise_output):
    check_shift_pair(reference_shift_pair)

    def backwards(s, c, k, w):
        return math.cos(k * w) * s - math.sin(k * w) * c, math.sin(k * w) * s + math.cos(k * w) * c

    with pytest.raises(AssertionError, match="wrong way"):
        check_shift_pair(backwards)
    with pytest.raises(AssertionError, match="expected"):
        check_shift_pair(lambda s, c, k, w: (s, c))
    assert "[fail] Exercise 2: you rotated the wrong way" in exercise_output(
        "Exercise 2", lambda: check_shift_pair(backwards)
    )


def test_order_label_check_verifies_the_answer_about_positions(exercise_output):
    check_order_label(reference_first_smaller_than_last, needs_positions=True)
    has_a_zero = lambda t: (t == 0).any(dim=1).long()  # noqa: E731  (order-free: a multiset property)
    check_order_label(has_a_zero, needs_positions=False)
    with pytest.raises(AssertionError, match="needs_positions should be True"):
        check_order_label(reference_first_smaller_than_last, needs_positions=False)
    with pytest.raises(AssertionError, match="needs_positions should be False"):
        check_order_label(has_a_zero, needs_positions=True)
    with pytest.raises(AssertionError, match="both classes"):
        check_order_label(lambda t: torch.zeros(len(t), dtype=torch.long), needs_positions=False)
    with pytest.raises(AssertionError, match="one label per sequence"):
        check_order_label(lambda t: t, needs_positions=True)
    assert "[pass] Exercise 3" in exercise_output(
        "Exercise 3", lambda: check_order_label(reference_first_smaller_than_last, needs_positions=True)
    )
    assert "[fail] Exercise 3: shuffling the tokens changed" in exercise_output(
        "Exercise 3", lambda: check_order_label(reference_first_smaller_than_last, needs_positions=False)
    )


def test_relative_index_check_catches_sign_and_missing_clipping(exercise_output):
    check_relative_index(relative_position_index)

    def by_hand(n, max_distance):  # written out with loops: an independent correct answer
        return torch.tensor(
            [[max(-max_distance, min(max_distance, j - i)) for j in range(n)] for i in range(n)]
        )

    check_relative_index(by_hand)
    with pytest.raises(AssertionError, match="sign is flipped"):
        check_relative_index(lambda n, max_distance: -by_hand(n, max_distance))
    with pytest.raises(AssertionError, match="not clipped"):
        check_relative_index(lambda n, max_distance: by_hand(n, n))
    assert "[fail] Exercise 4: the offsets are not clipped" in exercise_output(
        "Exercise 4", lambda: check_relative_index(lambda n, max_distance: by_hand(n, n))
    )


# ------------------------------------------------------------------ grading
def _references():
    return {
        "my_sinusoidal": sinusoidal_encoding,
        "my_shift_pair": reference_shift_pair,
        "my_label": reference_first_smaller_than_last,
        "MY_LABEL_NEEDS_POSITIONS": True,
        "my_relative_index": relative_position_index,
    }


def test_grading_gives_the_reference_answers_every_point(graded):
    results = graded(GRADING, _references(), allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab6.3-ex1", "lab6.3-ex2", "lab6.3-ex3", "lab6.3-ex4"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    def table_for_even_pairs(
        n, d
    ):  # written for an even number of pairs (as in the self-check): drops one otherwise
        pe = formula_table(n, d)
        if (d // 2) % 2:
            pe = pe[:, : d - 2]
        return pe

    def forward_only(s, c, k, w):  # rotates by |k|: right for the self-check's positive offsets
        k = abs(k)
        return math.cos(k * w) * s + math.sin(k * w) * c, -math.sin(k * w) * s + math.cos(k * w) * c

    def bool_label(tokens):  # the right label as booleans: not a class target for F.cross_entropy
        return tokens[:, 0] < tokens[:, -1]

    def float_offsets(n, max_distance):  # right values, but floats cannot index the table's rows
        return torch.tensor(
            [[max(-max_distance, min(max_distance, j - i)) for j in range(n)] for i in range(n)]
        ).float()

    def zero_means_unclipped(n, max_distance):
        return relative_position_index(n, max_distance=max_distance or None)

    check_sinusoidal(table_for_even_pairs)
    check_shift_pair(forward_only)
    check_order_label(bool_label, True)
    check_relative_index(float_offsets)
    check_relative_index(zero_means_unclipped)
    namespace = {
        "my_sinusoidal": table_for_even_pairs,
        "my_shift_pair": forward_only,
        "my_label": bool_label,
        "MY_LABEL_NEEDS_POSITIONS": True,
        "my_relative_index": float_offsets,
    }
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    for grade_id, hint in (
        ("lab6.3-ex1", "other sizes: (1, 2): return a (num_positions, dim) tensor"),
        ("lab6.3-ex2", "negative offsets, other frequencies: p=2, k=-3"),
        ("lab6.3-ex3", "labels usable as class targets: the labels cannot be class targets"),
        ("lab6.3-ex4", "edge sizes, integer offsets: return integer offsets"),
    ):
        assert 0 < by_id[grade_id]["points"] < by_id[grade_id]["max"], by_id[grade_id]
        assert by_id[grade_id]["hint"].startswith(hint), by_id[grade_id]["hint"]
    unclipped = graded(GRADING[3:], {"my_relative_index": zero_means_unclipped})[0]
    assert unclipped["passed"] == 1 and "do not treat 0 as 'no clipping'" in unclipped["hint"]
