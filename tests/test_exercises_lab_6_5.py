"""Lab 6.5's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import numpy as np
import pytest
import torch
from torch import nn

from common.exercises.lab_6_5 import (
    GRADING,
    check_attention_parameters,
    check_scaling_exponent,
    check_shuffle_past,
    reference_attention_parameters,
    reference_shuffle_past,
)
from common.sequence_models import TransformerRegressor, scaling_exponent
from common.sine_waves import sine_waves


# ------------------------------------------------------------------ the reference solutions and the self-checks
def test_reference_attention_parameters_is_four_d_squared_plus_four_d_for_any_head_count():
    for d, h in [(32, 1), (32, 8), (48, 3), (64, 16)]:
        layer = nn.MultiheadAttention(
            d, h, bias=True
        )  # torch's own layer: in_proj (3d x d) + out_proj (d x d)
        assert (
            reference_attention_parameters(d, h)
            == sum(p.numel() for p in layer.parameters())
            == 4 * d * d + 4 * d
        )
    with pytest.raises(ValueError, match="divisible"):
        reference_attention_parameters(32, 3)


def test_attention_parameters_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_attention_parameters(reference_attention_parameters)
    with pytest.raises(AssertionError, match="add the four bias vectors"):
        check_attention_parameters(lambda d, h: 4 * d * d)
    with pytest.raises(AssertionError, match="add the output projection"):
        check_attention_parameters(lambda d, h: 3 * d * d + 3 * d)
    with pytest.raises(AssertionError, match="share one projection"):
        check_attention_parameters(lambda d, h: h * (4 * d * d + 4 * d))
    with pytest.raises(AssertionError, match="the layer has"):
        check_attention_parameters(lambda d, h: 4 * d * d + 4 * d + h)
    assert "[pass] attention parameters" in exercise_output(
        "attention parameters", lambda: check_attention_parameters(reference_attention_parameters)
    )
    weights_only = exercise_output(
        "attention parameters", lambda: check_attention_parameters(lambda d, h: 4 * d * d)
    )
    assert "[fail] attention parameters: d_model=32, heads=1: 4096 counts the weights only" in weights_only


def test_reference_shuffle_past_permutes_the_past_only_and_the_same_way_for_the_whole_batch():
    x = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1)  # hand example: every value is distinct
    out = reference_shuffle_past(x, torch.Generator().manual_seed(0))
    order = torch.randperm(5, generator=torch.Generator().manual_seed(0))  # the permutation, written out
    torch.testing.assert_close(out[:, :5], x[:, order])
    torch.testing.assert_close(out[:, 5], x[:, 5])
    assert torch.equal(x, torch.arange(12, dtype=torch.float32).reshape(2, 6, 1))  # input untouched


def _shuffle_models():
    torch.manual_seed(0)
    return TransformerRegressor(positional=False).eval(), TransformerRegressor(positional=True).eval()


def test_shuffle_past_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    blind, aware = _shuffle_models()
    x = sine_waves(16, seed=5)[0]
    check_shuffle_past(reference_shuffle_past, x, blind=blind, aware=aware)

    def everything(x, g):  # the usual slip: the last step is shuffled too
        return x[:, torch.randperm(x.shape[1], generator=g)]

    def batch_axis(x, g):
        return torch.cat([x[torch.randperm(x.shape[0], generator=g), :-1], x[:, -1:]], dim=1)

    def in_place(x, g):
        x[:, :-1] = x[:, :-1].flip(1)
        return x

    with pytest.raises(AssertionError, match="last step must stay last"):
        check_shuffle_past(everything, x, blind=blind, aware=aware)
    with pytest.raises(AssertionError, match="permute the time axis"):
        check_shuffle_past(batch_axis, x, blind=blind, aware=aware)
    with pytest.raises(AssertionError, match="in place"):
        check_shuffle_past(in_place, x.clone(), blind=blind, aware=aware)
    with pytest.raises(AssertionError, match="original order"):
        check_shuffle_past(lambda x, g: x.clone(), x, blind=blind, aware=aware)
    assert "[fail] shuffle: the last step must stay last" in exercise_output(
        "shuffle", lambda: check_shuffle_past(everything, x, blind=blind, aware=aware)
    )
    assert "[pass] shuffle" in exercise_output(
        "shuffle", lambda: check_shuffle_past(reference_shuffle_past, x, blind=blind, aware=aware)
    )


def test_scaling_exponent_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    n, t = np.array([10, 20, 50]), np.array([1e-3, 3e-3, 2e-2])
    check_scaling_exponent(scaling_exponent, measured=(n, t))
    with pytest.raises(AssertionError, match="fit log\\(t\\) against log\\(n\\)"):
        check_scaling_exponent(lambda n, t: np.polyfit(n, t, 1)[0])
    with pytest.raises(AssertionError, match="intercept"):
        check_scaling_exponent(lambda n, t: np.polyfit(np.log(n), np.log(t), 1)[1])
    with pytest.raises(AssertionError, match="two points"):
        check_scaling_exponent(lambda n, t: np.log(t[-1] / t[-2]) / np.log(n[-1] / n[-2]))
    with pytest.raises(AssertionError, match="on the measured timings"):
        check_scaling_exponent(lambda n, t: scaling_exponent(n, t) if len(n) == 5 else 0.0, measured=(n, t))
    assert "[fail] scaling: that is the slope of t against n" in exercise_output(
        "scaling", lambda: check_scaling_exponent(lambda n, t: np.polyfit(n, t, 1)[0])
    )
    assert "[pass] scaling" in exercise_output("scaling", lambda: check_scaling_exponent(scaling_exponent))


# ------------------------------------------------------------------ grading
def _context():
    # what the notebook has when the exercise cells run: the test inputs, the two models, the measured timings
    blind, aware = _shuffle_models()
    lengths = np.array([10, 20, 50, 100, 200])
    return {
        "x_test": sine_waves(16, seed=5)[0],
        "model_nope": blind,
        "transformer": aware,
        "lengths": lengths,
        "timing": {"Transformer": [2e-4 * n**1.2 for n in lengths]},  # a list, as the notebook stores it
    }


def _references():
    return {
        "my_attention_parameters": reference_attention_parameters,
        "my_shuffle_past": reference_shuffle_past,
        "my_scaling_exponent": scaling_exponent,
    }


def test_grading_gives_the_reference_solutions_every_point(graded):
    results = graded(GRADING, {**_context(), **_references()}, allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab6.5-ex1", "lab6.5-ex2", "lab6.5-ex3"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def _per_sequence_orders(x, generator):
    # a permutation per sequence: each row keeps its values and its last step, so the self-check passes
    rows = [row[torch.randperm(x.shape[1] - 1, generator=generator)] for row in x]
    return torch.cat([torch.stack(rows), x[:, -1:]], dim=1)


def _unseeded(x, generator):
    return torch.cat([x[:, torch.randperm(x.shape[1] - 1)], x[:, -1:]], dim=1)  # the generator is ignored


def _float_count(d_model, num_heads):
    return 4 * d_model * (d_model / num_heads) * num_heads + 4 * d_model  # a float, equal to the count


def _absolute_slope(lengths, seconds):
    return abs(np.polyfit(np.log(lengths), np.log(seconds), 1)[0])


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    context = _context()
    check_attention_parameters(_float_count)
    check_scaling_exponent(_absolute_slope, measured=(context["lengths"], context["timing"]["Transformer"]))
    namespace = {**context, "my_attention_parameters": _float_count, "my_scaling_exponent": _absolute_slope}
    by_id = {r["exercise"]: r for r in graded((GRADING[0], GRADING[2]), namespace)}
    for grade_id, hint in (
        ("lab6.5-ex1", "other sizes, an integer count: d_model=768, heads=12: return an int"),
        ("lab6.5-ex3", "exact power laws: t = 2.0 n^-1.0"),
    ):
        assert 0 < by_id[grade_id]["points"] < by_id[grade_id]["max"], by_id[grade_id]
        assert by_id[grade_id]["hint"].startswith(hint), by_id[grade_id]["hint"]


def test_shuffle_grading_cases_catch_one_order_per_sequence_and_an_unused_generator(graded):
    # the course's models stand in for the notebook's: allow_course_code lets them through (see the next test)
    context = _context()
    for answer in (_per_sequence_orders, _unseeded):
        check_shuffle_past(
            answer, context["x_test"], blind=context["model_nope"], aware=context["transformer"]
        )
    per_sequence, unseeded = (
        graded(GRADING[1:2], {**context, "my_shuffle_past": answer}, allow_course_code=True)[0]
        for answer in (_per_sequence_orders, _unseeded)
    )
    assert per_sequence["passed"] == 2 and per_sequence["hint"].startswith(
        "one order for the whole batch: every sequence got its own order"
    )
    assert unseeded["passed"] == 2 and unseeded["hint"].startswith(
        "seeded by the generator: the same seed gave"
    )


def test_grading_takes_the_notebook_models_as_context_not_as_the_answer(graded):
    result = graded(GRADING[1:2], {**_context(), "my_shuffle_past": _per_sequence_orders})[0]
    assert result["passed"] == 2, result["hint"]


def test_grading_reports_the_stub(graded):
    def stub(*args):
        raise NotImplementedError

    namespace = {
        **_context(),
        "my_attention_parameters": stub,
        "my_shuffle_past": stub,
        "my_scaling_exponent": stub,
    }
    for result in graded(GRADING, namespace, allow_course_code=True):
        assert result["points"] == 0 and "not implemented yet" in result["hint"]
