import pytest
import torch
from torch import nn

from common.blocks import (
    FeedForward,
    TransformerBlock,
    ffn_as_one_linear,
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
