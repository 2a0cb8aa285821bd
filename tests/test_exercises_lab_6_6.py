"""Lab 6.6's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.exercises.lab_6_6 import (
    GRADING,
    check_causal_self_attention,
    check_cross_attention,
    reference_causal_self_attention,
    reference_cross_attention,
)


# ------------------------------------------------------------------ the reference solutions
def test_reference_causal_self_attention_matches_torch_and_keeps_the_past_fixed():
    g = torch.Generator().manual_seed(0)
    x, w_q, w_k, w_v = (torch.randn(*s, generator=g) for s in ((7, 6), (6, 4), (6, 4), (6, 3)))
    want = F.scaled_dot_product_attention((x @ w_q)[None], (x @ w_k)[None], (x @ w_v)[None], is_causal=True)[
        0
    ]
    torch.testing.assert_close(reference_causal_self_attention(x, w_q, w_k, w_v), want)
    x2 = x.clone()
    x2[3:] = 0  # the first three outputs read tokens 0..2 only
    torch.testing.assert_close(reference_causal_self_attention(x2, w_q, w_k, w_v)[:3], want[:3])


def test_reference_cross_attention_by_hand():
    # one query; keys e1, e2 and a padded third: scores (1, 0) / sqrt(2) over the real keys only
    y = torch.tensor([[1.0, 0.0]])
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    eye = torch.eye(2)
    got = reference_cross_attention(y, memory, torch.tensor([True, True, False]), eye, eye, eye)
    w = 1 / (1 + math.exp(-1 / math.sqrt(2)))  # softmax((1, 0) / sqrt 2)[0]
    torch.testing.assert_close(got, torch.tensor([[w, 1 - w]]))


# ------------------------------------------------------------------ the self-checks
def _mask_after_softmax(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    return ((q @ k.T / math.sqrt(k.shape[-1])).softmax(-1) * torch.ones(len(x), len(x)).tril()) @ v


def _strict(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    s = (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(
        ~torch.ones(len(x), len(x), dtype=torch.bool).tril(-1), -math.inf
    )
    return s.softmax(-1) @ v


def _flipped(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    s = (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(
        ~torch.ones(len(x), len(x), dtype=torch.bool).triu(), -math.inf
    )
    return s.softmax(-1) @ v


@pytest.mark.parametrize(
    "answer, hint",
    [
        (lambda x, wq, wk, wv: ((x @ wq) @ (x @ wk).T / 2).softmax(-1) @ (x @ wv), "no causal mask"),
        (_flipped, "flipped"),
        (_mask_after_softmax, "after the softmax"),
        (_strict, "keep the diagonal"),
        (lambda x, wq, wk, wv: x @ wv, "differs from causal attention"),
    ],
)
def test_causal_self_attention_check(exercise_output, answer, hint):
    assert (
        exercise_output("ex", lambda: check_causal_self_attention(reference_causal_self_attention))
        == "[pass] ex\n"
    )
    out = exercise_output("ex", lambda: check_causal_self_attention(answer))
    assert out.startswith("[fail]") and hint in out, out


def _cross(mask_fn=lambda keep, T, S: keep[None, :], scale=True, from_memory=True):
    def answer(y, memory, keep, w_q, w_k, w_v):
        src = memory if from_memory else y
        q, k, v = y @ w_q, src @ w_k, src @ w_v
        s = q @ k.T / (math.sqrt(k.shape[-1]) if scale else 1)
        m = mask_fn(keep, len(y), len(src))
        return (s if m is None else s.masked_fill(~m, -math.inf)).softmax(-1) @ v

    return answer


@pytest.mark.parametrize(
    "answer, hint",
    [
        (_cross(lambda keep, T, S: None), "padding mask is missing"),
        (_cross(lambda keep, T, S: ~keep[None, :]), "flipped"),
        (_cross(lambda keep, T, S: torch.ones(T, S, dtype=torch.bool).tril() & keep[None, :]), "causal mask"),
        (_cross(scale=False), "scale"),
        (_cross(lambda keep, T, S: None, from_memory=False), "self-attention"),
        (
            lambda y, memory, keep, w_q, w_k, w_v: reference_cross_attention(
                memory, y, torch.ones(4, dtype=torch.bool), w_q, w_k, w_v
            ),
            "queries come from the encoder",
        ),
    ],
)
def test_cross_attention_check(exercise_output, answer, hint):
    assert exercise_output("ex", lambda: check_cross_attention(reference_cross_attention)) == "[pass] ex\n"
    out = exercise_output("ex", lambda: check_cross_attention(answer))
    assert out.startswith("[fail]") and hint in out, out


def test_stubs_show_as_todo(exercise_output):
    def stub(*args):
        raise NotImplementedError

    assert exercise_output("ex", lambda: check_cross_attention(stub)).startswith("[todo]")
    assert exercise_output("ex", lambda: check_causal_self_attention(stub)).startswith("[todo]")


# ------------------------------------------------------------------ grading
def test_grading_gives_the_reference_solutions_every_point(graded):
    namespace = {
        "my_causal_self_attention": reference_causal_self_attention,
        "my_cross_attention": reference_cross_attention,
    }
    results = graded(GRADING, namespace, allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab6.6-ex1", "lab6.6-ex2"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def _six_tokens_only(x, w_q, w_k, w_v):
    # the self-check's length written in: right at T = 6, a shape error at any other length
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()
    return (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(~allowed, -math.inf).softmax(-1) @ v


def _four_queries_only(y, memory, key_mask, w_q, w_k, w_v):
    # the padding mask broadcast to the self-check's 4 queries by hand
    q, k, v = y @ w_q, memory @ w_k, memory @ w_v
    allowed = key_mask[None, :].expand(4, -1)
    return (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(~allowed, -math.inf).softmax(-1) @ v


def _numpy_causal(x, w_q, w_k, w_v):
    # right values through numpy: no gradient reaches x
    q, k, v = (torch.from_numpy(m.detach().numpy() @ w.numpy()) for m, w in ((x, w_q), (x, w_k), (x, w_v)))
    allowed = torch.ones(len(x), len(x), dtype=torch.bool).tril()
    return (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(~allowed, -math.inf).softmax(-1) @ v


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    check_causal_self_attention(_six_tokens_only)
    check_cross_attention(_four_queries_only)
    check_causal_self_attention(_numpy_causal)
    namespace = {"my_causal_self_attention": _six_tokens_only, "my_cross_attention": _four_queries_only}
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    assert (
        by_id["lab6.6-ex1"]["passed"] == 1 and 0 < by_id["lab6.6-ex1"]["points"] < by_id["lab6.6-ex1"]["max"]
    )
    assert by_id["lab6.6-ex1"]["hint"].startswith("other lengths and widths: raised RuntimeError")
    assert (
        by_id["lab6.6-ex2"]["passed"] == 1 and 0 < by_id["lab6.6-ex2"]["points"] < by_id["lab6.6-ex2"]["max"]
    )
    assert by_id["lab6.6-ex2"]["hint"].startswith(
        "other lengths and paddings: T=1 decoder states, S=3 source positions: return a (1, 5) tensor"
    )
    numpy_answer = graded(GRADING[:1], {"my_causal_self_attention": _numpy_causal})[0]
    assert numpy_answer["passed"] == 2
    assert numpy_answer["hint"].startswith("no gradient from the future: gradients must flow back to x")


def test_grading_accepts_a_large_finite_mask(graded):
    # -1e9 instead of -inf is a right answer too: exp(-1e9) is exactly 0 in float32, for the values and gradients
    def causal(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        allowed = torch.ones(len(x), len(x), dtype=torch.bool).tril()
        return (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(~allowed, -1e9).softmax(-1) @ v

    def cross(y, memory, key_mask, w_q, w_k, w_v):
        q, k, v = y @ w_q, memory @ w_k, memory @ w_v
        return (q @ k.T / math.sqrt(k.shape[-1])).masked_fill(~key_mask, -1e9).softmax(-1) @ v

    results = graded(GRADING, {"my_causal_self_attention": causal, "my_cross_attention": cross})
    assert all(r["points"] == r["max"] for r in results), [r["hint"] for r in results]
