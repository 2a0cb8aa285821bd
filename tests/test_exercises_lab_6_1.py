"""Lab 6.1's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import math

import pytest
import torch

from common.attention import scaled_dot_product_attention
from common.exercises.lab_6_1 import (
    GRADING,
    check_attention,
    check_attention_prediction,
    check_softmax_with_temperature,
    most_attended_word,
    reference_attention,
    reference_softmax_with_temperature,
)


# ------------------------------------------------------------------ the reference solutions
def test_reference_attention_matches_the_course_function():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (4, 6, 6))
    torch.testing.assert_close(reference_attention(q, k, v), scaled_dot_product_attention(q, k, v)[0])


def test_softmax_with_temperature_by_hand():
    # scores (0, ln 3) at tau = 1: weights 1/4, 3/4; at tau = 2: (0, ln 3 / 2) -> 1 / (1 + sqrt 3), sqrt 3 / (1 + sqrt 3)
    scores = torch.tensor([[0.0, math.log(3.0)]])
    torch.testing.assert_close(reference_softmax_with_temperature(scores, 1.0), torch.tensor([[0.25, 0.75]]))
    r3 = math.sqrt(3.0)
    torch.testing.assert_close(
        reference_softmax_with_temperature(scores, 2.0), torch.tensor([[1 / (1 + r3), r3 / (1 + r3)]])
    )


def test_most_attended_word_by_hand():
    # 'b' looks for feature 1, which only 'c' has
    tokens = ["a", "b", "c"]
    keys = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[0.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    assert most_attended_word(tokens, queries, keys, word="b") == "c"


def test_check_attention_passes_the_reference_and_explains_wrong_answers(exercise_output):
    assert exercise_output("attention", lambda: check_attention(reference_attention)).startswith("[pass]")
    unscaled = lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v  # noqa: E731
    with pytest.raises(AssertionError, match="did not scale"):
        check_attention(unscaled)
    with pytest.raises(AssertionError, match="divided by d_k"):
        check_attention(lambda q, k, v: (q @ k.transpose(-2, -1) / q.shape[-1]).softmax(-1) @ v)
    with pytest.raises(AssertionError, match="wrong axis"):
        check_attention(lambda q, k, v: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v)
    with pytest.raises(AssertionError, match="not a tuple"):
        check_attention(scaled_dot_product_attention)
    out = exercise_output("attention", lambda: check_attention(unscaled))
    assert out.startswith("[fail] attention: you did not scale")


def test_check_attention_prediction(exercise_output):
    tokens = ["the", "dog", "sat"]
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w_q = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 0.0, 0.0]])  # the noun looks for the verb
    args = (tokens, x @ w_q, x)
    assert most_attended_word(*args, word="dog") == "sat"
    assert exercise_output("predict", lambda: check_attention_prediction("sat", *args)).startswith("[pass]")
    with pytest.raises(AssertionError, match="'dog' attends most to 'sat'"):
        check_attention_prediction("the", *args)
    with pytest.raises(AssertionError, match="a word of your sentence"):
        check_attention_prediction("cat", *args)
    with pytest.raises(AssertionError, match="put 'dog' in your sentence"):
        check_attention_prediction("sat", ["the", "cat", "sat"], x @ w_q, x)
    assert exercise_output("predict", lambda: check_attention_prediction(None, *args)).startswith("[todo]")
    assert exercise_output("predict", lambda: check_attention_prediction("dog", *args)).startswith("[fail]")


def test_check_attention_prediction_accepts_a_tied_word():
    tokens = ["the", "dog", "the"]  # both 'the' have the same key, so they tie
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    queries = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    check_attention_prediction("the", tokens, queries, x)


def test_check_softmax_with_temperature(exercise_output):
    ok = exercise_output(
        "temperature", lambda: check_softmax_with_temperature(reference_softmax_with_temperature)
    )
    assert ok.startswith("[pass]")
    with pytest.raises(AssertionError, match="multiplied the scores by tau"):
        check_softmax_with_temperature(lambda s, tau: (s * tau).softmax(-1))
    with pytest.raises(AssertionError, match="last axis"):
        check_softmax_with_temperature(lambda s, tau: (s / tau).softmax(0))
    bad = exercise_output(
        "temperature", lambda: check_softmax_with_temperature(lambda s, tau: (s * tau).softmax(-1))
    )
    assert bad.startswith("[fail]")


# ------------------------------------------------------------------ grading: reference answers get every point
def _context():
    tokens = ["the", "dog", "sat"]
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w_q = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    return {"my_sentence": "the dog sat", "my_tokens": tokens, "my_X": x, "W_Q": w_q}


def test_grading_gives_the_reference_solutions_every_point(graded):
    namespace = {
        **_context(),
        "my_attention": reference_attention,
        "my_prediction": "sat",
        "my_softmax_with_temperature": reference_softmax_with_temperature,
    }
    results = graded(GRADING, namespace, allow_course_code=True)
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def test_grading_cases_catch_what_the_self_check_does_not(graded):
    # 3-D only (a transpose(1, 2) instead of (-2, -1)) passes the self-check but not the batched-heads case
    def three_d_only(q, k, v):
        return (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).softmax(-1) @ v

    check_attention(three_d_only)
    namespace = {
        **_context(),
        "my_attention": three_d_only,
        "my_prediction": "sat",
        "my_sentence": "the dog sat near the door",
    }
    namespace["my_softmax_with_temperature"] = lambda s, tau: (s / tau).softmax(-1)
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    assert 0 < by_id["lab6.1-ex1"]["points"] < by_id["lab6.1-ex1"]["max"]
    assert by_id["lab6.1-ex1"]["hint"].startswith("batched heads:")
    assert "sentence of your own" in by_id["lab6.1-ex2"]["hint"]
    assert by_id["lab6.1-ex3"]["points"] == by_id["lab6.1-ex3"]["max"]


def test_grading_refuses_the_course_own_function(graded):
    namespace = {**_context(), "my_attention": reference_attention}
    hint = graded(GRADING[:1], namespace)[0]["hint"]
    assert "the course's own code" in hint
