import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.blocks import (
    FeedForward,
    TransformerBlock,
    check_layer_norm,
    check_post_norm_forward,
    check_pre_norm_block_forward,
    check_rms_norm,
    ffn_as_one_linear,
    layer_norm,
    post_norm_forward,
    pre_norm_block_forward,
    rms_norm,
)


def block_params_by_formula(d: int, d_ff: int) -> int:
    attention = (d * 3 * d + 3 * d) + (d * d + d)  # fused QKV + output projection
    ffn = (d * d_ff + d_ff) + (d_ff * d + d)
    norms = 2 * 2 * d  # two LayerNorms, gamma and beta each
    return attention + ffn + norms


@pytest.mark.parametrize("d,heads,ratio", [(32, 4, 4.0), (64, 8, 2.0)])
def test_parameter_count_matches_formula(d, heads, ratio):
    block = TransformerBlock(d, heads, mlp_ratio=ratio)
    assert sum(p.numel() for p in block.parameters()) == block_params_by_formula(d, int(d * ratio))


def torch_layer(block: TransformerBlock, norm_first: bool) -> nn.TransformerEncoderLayer:
    """The reference: torch's own encoder layer (used only in tests), loaded with the same weights."""
    d = block.norm1.normalized_shape[0]
    ref = nn.TransformerEncoderLayer(
        d,
        block.attn.num_heads,
        block.mlp.fc1.out_features,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.fc1.state_dict())
        ref.linear2.load_state_dict(block.mlp.fc2.state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())
    return ref.eval()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_equals_torch_encoder_layer(norm):
    torch.manual_seed(0)
    block = TransformerBlock(32, 4, norm=norm).eval()
    x = torch.randn(2, 9, 32)
    ref = torch_layer(block, norm_first=norm == "pre")
    torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=0)
    out, weights = block(x, return_attention=True)
    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=0)
    assert weights.shape == (2, 4, 9, 9)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_without_residual_the_input_is_not_added_back(norm):
    # Reference: the block's formulas with the skip terms dropped, from torch's layer parts (same weights):
    # pre:  y = FFN(LN2(Attn(LN1(x))));  post: y = LN2(FFN(LN1(Attn(x)))).
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, residual=False, norm=norm).eval()
    ref = torch_layer(block, norm_first=norm == "pre")

    def attn(h):
        return ref.self_attn(h, h, h, need_weights=False)[0]

    def ffn(h):
        return ref.linear2(nn.functional.gelu(ref.linear1(h)))

    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        if norm == "pre":
            expected = ffn(ref.norm2(attn(ref.norm1(x))))
        else:
            expected = ref.norm2(ffn(ref.norm1(attn(x))))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="'pre' or 'post'"):
        TransformerBlock(16, 2, norm="middle")
    with pytest.raises(ValueError, match="unknown activation"):
        FeedForward(16, 32, activation="swish")
    with pytest.raises(ValueError, match="divisible"):
        TransformerBlock(18, 4)


# ------------------------------------------------------------------ lab 6.4's exercises: references and checks
def test_layer_norm_and_rms_norm_equal_torch():
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(2, 5, 8, generator=g)
    gamma, beta = torch.randn(8, generator=g), torch.randn(8, generator=g)
    torch.testing.assert_close(
        layer_norm(x, gamma, beta, eps=1e-5), F.layer_norm(x, (8,), gamma, beta, eps=1e-5)
    )
    ref = nn.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(gamma)
        torch.testing.assert_close(rms_norm(x, gamma, eps=1e-6), ref(x))


def test_post_norm_forward_of_a_pre_norm_block_equals_torchs_post_norm_layer():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, norm="pre").eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            post_norm_forward(block, x), torch_layer(block, norm_first=False)(x), atol=1e-5, rtol=0
        )


def test_ffn_without_activation_is_one_linear_map():
    torch.manual_seed(0)
    ffn = FeedForward(8, 32, activation="identity").eval()
    x = torch.randn(4, 8)
    # Written out: fc2(fc1(x)) = (x W1ᵀ + b1) W2ᵀ + b2, one (8 -> 8) matrix however wide the hidden layer.
    w1, b1, w2, b2 = ffn.fc1.weight, ffn.fc1.bias, ffn.fc2.weight, ffn.fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), (x @ w1.T + b1) @ w2.T + b2)
        one = ffn_as_one_linear(ffn)
        assert one.weight.shape == (8, 8)
        torch.testing.assert_close(one(x), ffn(x), atol=1e-5, rtol=0)
        gelu = FeedForward(8, 32).eval()
        assert not torch.allclose(
            ffn_as_one_linear(gelu)(x), gelu(x), atol=1e-3
        )  # GELU's FFN is not one matrix


def test_layer_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_layer_norm(layer_norm)
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
    assert "[pass] Exercise 1" in exercise_output("Exercise 1", lambda: check_layer_norm(layer_norm))
    no_affine = exercise_output(
        "Exercise 1", lambda: check_layer_norm(lambda x, g, b, eps=1e-5: F.layer_norm(x, (16,), eps=eps))
    )
    assert "[fail] Exercise 1: gamma and beta are missing" in no_affine


def test_post_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_post_norm_forward(post_norm_forward)

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
        "Exercise 2", lambda: check_post_norm_forward(post_norm_forward)
    )
    assert "[fail] Exercise 2: that is the pre-norm pass" in exercise_output(
        "Exercise 2", lambda: check_post_norm_forward(pre_norm)
    )


def test_rms_norm_check_accepts_the_reference_and_names_the_slips(exercise_output):
    check_rms_norm(rms_norm)

    def rms(x):
        return x.pow(2).mean(-1, keepdim=True)

    with pytest.raises(AssertionError, match="does not subtract the mean"):
        check_rms_norm(lambda x, g, eps=1e-6: F.layer_norm(x, (x.shape[-1],), g, None, eps))
    with pytest.raises(AssertionError, match="inside the square root"):
        check_rms_norm(lambda x, g, eps=1e-6: x / (rms(x).sqrt() + eps) * g)
    with pytest.raises(AssertionError, match="gamma is missing"):
        check_rms_norm(lambda x, g, eps=1e-6: x / (rms(x) + eps).sqrt())
    assert "[pass] Exercise 3" in exercise_output("Exercise 3", lambda: check_rms_norm(rms_norm))
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
            pre_norm_block_forward(block, x), torch_layer(block, norm_first=True)(x), atol=1e-5, rtol=0
        )


def test_pre_norm_block_check_accepts_the_reference_and_names_the_slips(exercise_output):
    assert exercise_output("pre", lambda: check_pre_norm_block_forward(pre_norm_block_forward)).startswith(
        "[pass]"
    )

    def ffn(block, t, act=F.gelu):
        return block.mlp.fc2(act(block.mlp.fc1(t)))

    wrong = {
        "post-norm": lambda b, x: post_norm_forward(b, x),
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
