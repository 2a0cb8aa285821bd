"""Lab 6.2's exercises: the self-checks on the reference answers and on wrong answers, and the grading cases."""

import math

import pytest
import torch.nn.functional as F

from common.attention import attention_layer_flops, multi_head_attention
from common.attention_analysis import max_head_diversity
from common.exercises.lab_6_2 import (
    GRADING,
    check_attention_layer_flops,
    check_max_head_diversity,
    check_multi_head_attention,
)


# ------------------------------------------------------------------ the self-checks
def test_check_attention_layer_flops(exercise_output):
    assert exercise_output("flops", lambda: check_attention_layer_flops(attention_layer_flops)).startswith(
        "[pass]"
    )
    with pytest.raises(AssertionError, match="multiply-add counts 2"):
        check_attention_layer_flops(lambda n, d: 4 * n * d * d + 2 * n * n * d)
    with pytest.raises(AssertionError, match="output projection"):
        check_attention_layer_flops(lambda n, d: 6 * n * d * d + 4 * n * n * d)
    with pytest.raises(AssertionError, match="two n² products"):
        check_attention_layer_flops(lambda n, d: 8 * n * d * d + 2 * n * n * d)
    with pytest.raises(AssertionError, match="count the projections too"):
        check_attention_layer_flops(lambda n, d: 4 * n * n * d)
    assert exercise_output("flops", lambda: check_attention_layer_flops(lambda n, d: 0)).startswith("[fail]")


def test_check_multi_head_attention(exercise_output):
    ok = exercise_output("mha", lambda: check_multi_head_attention(multi_head_attention))
    assert ok.startswith("[pass]")

    def wrong(mistake):
        def fn(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None):
            B, N, d = x.shape
            dk = d // num_heads
            q, k, v = F.linear(x, w_qkv, b_qkv).chunk(3, dim=-1)
            split = (
                (lambda t: t.reshape(B, num_heads, N, dk))
                if mistake == "split"
                else (lambda t: t.reshape(B, N, num_heads, dk).transpose(1, 2))
            )
            scores = split(q) @ split(k).transpose(-2, -1)
            if mistake != "no scale":
                scores = scores / math.sqrt(d if mistake == "d_model" else dk)
            if mask is not None and mistake != "ignore mask":
                scores = scores.masked_fill(mask if mistake == "inverted" else ~mask, float("-inf"))
            out = scores.softmax(-1) @ split(v)
            out = out.reshape(B, N, d) if mistake == "merge" else out.transpose(1, 2).reshape(B, N, d)
            return out if mistake == "no proj" else F.linear(out, w_out, b_out)

        return fn

    for mistake, hint in (
        ("d_model", "sqrt(d_k)"),
        ("no scale", "not scaled"),
        ("split", "mixes positions"),
        ("merge", "transpose"),
        ("no proj", "output projection"),
        ("inverted", "inverted"),
        ("ignore mask", "ignored"),
    ):
        answer = wrong(mistake)
        line = exercise_output("mha", lambda answer=answer: check_multi_head_attention(answer))
        assert line.startswith("[fail]") and hint in line, (mistake, line)
    assert exercise_output("mha", lambda: check_multi_head_attention(lambda *a, **k: a[0])).startswith(
        "[fail]"
    )


def test_check_max_head_diversity(exercise_output):
    assert exercise_output("diversity", lambda: check_max_head_diversity(max_head_diversity)).startswith(
        "[pass]"
    )
    with pytest.raises(AssertionError, match="pigeonhole"):
        check_max_head_diversity(lambda h, r: 1.0)
    with pytest.raises(AssertionError, match="pairs of \\*different\\* heads"):

        def with_self_pairs(h, r):
            sizes = [h // r + (i < h % r) for i in range(r)]
            return 1 - sum(s * s for s in sizes) / h**2

        check_max_head_diversity(with_self_pairs)
    with pytest.raises(AssertionError, match="as evenly as possible"):
        check_max_head_diversity(lambda h, r: 1 - (h - r + 1) * (h - r) / (h * (h - 1)))
    assert exercise_output("diversity", lambda: check_max_head_diversity(lambda h, r: 0.5)).startswith(
        "[fail]"
    )


# ------------------------------------------------------------------ grading
def _references():
    return {
        "my_multi_head_attention": multi_head_attention,
        "my_attention_layer_flops": attention_layer_flops,
        "my_max_head_diversity": max_head_diversity,
    }


def test_grading_gives_the_reference_answers_every_point(graded):
    results = graded(GRADING, _references(), allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab6.2-ex1", "lab6.2-ex2", "lab6.2-ex3"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    def mask_as_n_by_n(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None):
        # right for the self-check's (N, N) causal mask; a (B, 1, 1, N) padding mask cannot be viewed as (N, N)
        B, N, d = x.shape
        dk = d // num_heads
        q, k, v = (
            t.reshape(B, N, num_heads, dk).transpose(1, 2) for t in F.linear(x, w_qkv, b_qkv).chunk(3, -1)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(dk)
        if mask is not None:
            scores = scores.masked_fill(~mask.reshape(1, 1, N, N), float("-inf"))
        return F.linear((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, d), w_out, b_out)

    def float_flops(
        n, d
    ):  # the right formula in floats: exact for the self-check's sizes, rounded for long n
        return 8.0 * n * d * d + 4.0 * n * n * d

    def no_one_relation(h, r):  # right for r >= 2; divides by zero for a single relation
        base, extra = divmod(h, r)
        same = extra * (base + 1) * base + (r - extra) * base * (base - 1)
        return 1 - same / (h * (h - 1)) * (r - 1) / (r - 1)

    check_multi_head_attention(mask_as_n_by_n)
    check_attention_layer_flops(float_flops)
    check_max_head_diversity(no_one_relation)
    namespace = {
        "my_multi_head_attention": mask_as_n_by_n,
        "my_attention_layer_flops": float_flops,
        "my_max_head_diversity": no_one_relation,
    }
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    for grade_id, hint in (
        ("lab6.2-ex1", "a padding mask: a (B, 1, 1, N) padding mask raised"),
        ("lab6.2-ex2", "exact at other sizes:"),
        ("lab6.2-ex3", "other numbers of heads and relations: raised ZeroDivisionError"),
    ):
        assert 0 < by_id[grade_id]["points"] < by_id[grade_id]["max"], by_id[grade_id]
        assert by_id[grade_id]["hint"].startswith(hint), by_id[grade_id]["hint"]
    assert "integers" in by_id["lab6.2-ex2"]["hint"]


def test_grading_hidden_cases_check_against_torch_at_other_sizes(graded):
    # d_k taken from the self-check's sizes (d = 8, 2 heads) instead of the inputs: fails at d = 12 with 4 heads
    def fixed_dk(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None):
        B, N, d = x.shape
        q, k, v = (
            t.reshape(B, N, num_heads, d // num_heads).transpose(1, 2)
            for t in F.linear(x, w_qkv, b_qkv).chunk(3, -1)
        )
        scores = q @ k.transpose(-2, -1) / 2.0  # sqrt(4)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return F.linear((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, d), w_out, b_out)

    check_multi_head_attention(fixed_dk)
    result = graded(GRADING[:1], {"my_multi_head_attention": fixed_dk})[0]
    assert result["passed"] == 2 and result["hint"].startswith("other sizes: d = 12, 4 head(s)")


def test_grading_refuses_the_course_own_functions(graded):
    hints = [r["hint"] for r in graded(GRADING, _references())]
    assert all("the course's own code" in hint for hint in hints), hints
