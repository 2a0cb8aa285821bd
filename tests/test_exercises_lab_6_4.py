"""Lab 6.4's exercises: the reference solutions, the self-checks on right and wrong answers, and the grading cases."""

import pytest
import torch
import torch.nn.functional as F
from test_blocks import torch_layer  # torch's encoder layer loaded with a block's weights
from torch import nn

from common.blocks import TransformerBlock
from common.exercises.lab_6_4 import (
    GRADING,
    check_layer_norm,
    check_post_norm_forward,
    check_pre_norm_block_forward,
    check_rms_norm,
    reference_layer_norm,
    reference_post_norm_forward,
    reference_pre_norm_block_forward,
    reference_rms_norm,
)


# ------------------------------------------------------------------ the reference solutions and the self-checks
def test_layer_norm_and_rms_norm_equal_torch():
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(2, 5, 8, generator=g)
    gamma, beta = torch.randn(8, generator=g), torch.randn(8, generator=g)
    torch.testing.assert_close(
        reference_layer_norm(x, gamma, beta, eps=1e-5), F.layer_norm(x, (8,), gamma, beta, eps=1e-5)
    )
    ref = nn.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(gamma)
        torch.testing.assert_close(reference_rms_norm(x, gamma, eps=1e-6), ref(x))


def test_post_norm_forward_of_a_pre_norm_block_equals_torchs_post_norm_layer():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, norm="pre").eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            reference_post_norm_forward(block, x), torch_layer(block, norm_first=False)(x), atol=1e-5, rtol=0
        )


def test_layer_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_layer_norm(reference_layer_norm)
    check_layer_norm(lambda x, g, b, eps=1e-5: F.layer_norm(x, (x.shape[-1],), g, b, eps))

    def centred(x):
        return x - x.mean(-1, keepdim=True)

    with pytest.raises(AssertionError, match="biased variance"):
        check_layer_norm(
            lambda x, g, b, eps=1e-5: centred(x) / (x.var(-1, keepdim=True) + eps).sqrt() * g + b
        )
    with pytest.raises(AssertionError, match="inside the square root"):
        check_layer_norm(
            lambda x, g, b, eps=1e-5: centred(x) / (x.std(-1, unbiased=False, keepdim=True) + eps) * g + b
        )
    with pytest.raises(AssertionError, match="gamma and beta are missing"):
        check_layer_norm(lambda x, g, b, eps=1e-5: F.layer_norm(x, (x.shape[-1],), eps=eps))
    with pytest.raises(AssertionError, match="last dimension"):
        check_layer_norm(
            lambda x, g, b, eps=1e-5: (x - x.mean(0)) / (x.var(0, unbiased=False) + eps).sqrt() * g + b
        )
    assert "[pass] Exercise 1" in exercise_output(
        "Exercise 1", lambda: check_layer_norm(reference_layer_norm)
    )
    no_affine = exercise_output(
        "Exercise 1", lambda: check_layer_norm(lambda x, g, b, eps=1e-5: F.layer_norm(x, (16,), eps=eps))
    )
    assert "[fail] Exercise 1: gamma and beta are missing" in no_affine


def test_post_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_post_norm_forward(reference_post_norm_forward)

    def pre_norm(b, x):
        x = x + b.attn(b.norm1(x))
        return x + b.mlp(b.norm2(x))

    def swapped_norms(b, x):
        x = b.norm2(x + b.attn(x))
        return b.norm1(x + b.mlp(x))

    with pytest.raises(AssertionError, match="pre-norm pass"):
        check_post_norm_forward(lambda b, x: b(x))
    with pytest.raises(AssertionError, match="pre-norm pass"):
        check_post_norm_forward(pre_norm)
    with pytest.raises(AssertionError, match="residual connections are missing"):
        check_post_norm_forward(lambda b, x: b.norm2(b.mlp(b.norm1(b.attn(x)))))
    with pytest.raises(AssertionError, match="swapped"):
        check_post_norm_forward(swapped_norms)
    assert "[pass] Exercise 2" in exercise_output(
        "Exercise 2", lambda: check_post_norm_forward(reference_post_norm_forward)
    )
    assert "[fail] Exercise 2: that is the pre-norm pass" in exercise_output(
        "Exercise 2", lambda: check_post_norm_forward(pre_norm)
    )


def test_rms_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_rms_norm(reference_rms_norm)

    def rms(x):
        return x.pow(2).mean(-1, keepdim=True)

    with pytest.raises(AssertionError, match="does not subtract the mean"):
        check_rms_norm(lambda x, g, eps=1e-6: F.layer_norm(x, (x.shape[-1],), g, None, eps))
    with pytest.raises(AssertionError, match="inside the square root"):
        check_rms_norm(lambda x, g, eps=1e-6: x / (rms(x).sqrt() + eps) * g)
    with pytest.raises(AssertionError, match="gamma is missing"):
        check_rms_norm(lambda x, g, eps=1e-6: x / (rms(x) + eps).sqrt())
    assert "[pass] Exercise 3" in exercise_output("Exercise 3", lambda: check_rms_norm(reference_rms_norm))
    assert "[fail] Exercise 3: gamma is missing" in exercise_output(
        "Exercise 3", lambda: check_rms_norm(lambda x, g, eps=1e-6: x / (rms(x) + eps).sqrt())
    )


def test_pre_norm_block_forward_from_parameters_equals_torchs_norm_first_layer():
    torch.manual_seed(4)
    block = TransformerBlock(24, 3, norm="pre").eval()
    with torch.no_grad():
        block.norm2.weight.normal_(1.0, 0.3)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(
            reference_pre_norm_block_forward(block, x),
            torch_layer(block, norm_first=True)(x),
            atol=1e-5,
            rtol=0,
        )


def test_pre_norm_block_check_accepts_the_reference_and_names_the_slips(exercise_output):
    assert exercise_output(
        "pre", lambda: check_pre_norm_block_forward(reference_pre_norm_block_forward)
    ).startswith("[pass]")

    def ffn(block, t, act=F.gelu):
        return block.mlp.fc2(act(block.mlp.fc1(t)))

    wrong = {
        "post-norm": lambda b, x: reference_post_norm_forward(b, x),
        "residual connections are missing": lambda b, x: (
            b.attn(b.norm1(x)) + ffn(b, b.norm2(b.attn(b.norm1(x))))
        ),
        "second residual": lambda b, x: ffn(b, b.norm2(x + b.attn(b.norm1(x)))),
        "LN2(x)": lambda b, x: x + b.attn(b.norm1(x)) + ffn(b, b.norm2(x)),
        "not ReLU": lambda b, x: (lambda h: h + ffn(b, b.norm2(h), F.relu))(x + b.attn(b.norm1(x))),
        "norm2": lambda b, x: (lambda h: h + ffn(b, b.norm1(h)))(x + b.attn(b.norm1(x))),
        "LayerNorms are missing": lambda b, x: (lambda h: h + ffn(b, h))(x + b.attn(x)),
    }
    for hint, fn in wrong.items():
        line = exercise_output("pre", lambda fn=fn: check_pre_norm_block_forward(fn))
        assert line.startswith("[fail]") and hint in line, (hint, line)
    line = exercise_output("pre", lambda: check_pre_norm_block_forward(lambda b, x: 2 * x))
    assert line.startswith("[fail] pre: differs from TransformerBlock")


# ------------------------------------------------------------------ grading
def _references():
    return {
        "my_layer_norm": reference_layer_norm,
        "my_post_norm_forward": reference_post_norm_forward,
        "my_rms_norm": reference_rms_norm,
        "my_pre_norm_block": reference_pre_norm_block_forward,
    }


def test_grading_gives_the_reference_answers_every_point(graded):
    results = graded(GRADING, _references(), allow_course_code=True)
    assert [r["exercise"] for r in results] == ["lab6.4-ex1", "lab6.4-ex2", "lab6.4-ex3", "lab6.4-ex4"]
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}


def test_grading_cases_catch_what_the_self_checks_do_not(graded):
    def layer_norm_fixed_eps(
        x, gamma, beta, eps=1e-5
    ):  # ignores its eps: right at the self-check's 1e-5 only
        return F.layer_norm(x, x.shape[-1:], gamma, beta, eps=1e-5)

    def post_norm_in_place(block, x):  # right output, but it adds into the caller's tensor
        x += block.attn(x)
        x = block.norm1(x)
        return block.norm2(x + block.mlp(x))

    def rms_norm_fixed_eps(x, gamma, eps=1e-6):
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * gamma

    def pre_norm_default_eps(block, x):  # F.layer_norm's default eps instead of block.norm1.eps
        n1, n2 = block.norm1, block.norm2
        h = x + block.attn(F.layer_norm(x, x.shape[-1:], n1.weight, n1.bias))
        return h + block.mlp(F.layer_norm(h, h.shape[-1:], n2.weight, n2.bias))

    check_layer_norm(layer_norm_fixed_eps)
    check_post_norm_forward(post_norm_in_place)
    check_rms_norm(rms_norm_fixed_eps)
    check_pre_norm_block_forward(pre_norm_default_eps)
    namespace = {
        "my_layer_norm": layer_norm_fixed_eps,
        "my_post_norm_forward": post_norm_in_place,
        "my_rms_norm": rms_norm_fixed_eps,
        "my_pre_norm_block": pre_norm_default_eps,
    }
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace)}
    for grade_id, hint in (
        ("lab6.4-ex1", "other shapes and eps: shape (5, 6), eps=0.1"),
        ("lab6.4-ex2", "another block, input left unchanged: your function changed its input x in place"),
        ("lab6.4-ex3", "other shapes and eps: shape (5, 6), eps=0.1"),
        ("lab6.4-ex4", "another block: a block of width 24, 6 heads"),
    ):
        assert 0 < by_id[grade_id]["points"] < by_id[grade_id]["max"], by_id[grade_id]
        assert by_id[grade_id]["hint"].startswith(hint), by_id[grade_id]["hint"]
