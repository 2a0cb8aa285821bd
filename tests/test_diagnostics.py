import pytest
import torch
from torch import nn

from common.blocks import TransformerBlock
from common.diagnostics import capture_outputs, grad_norm, stack_gradient_norms


def test_captured_outputs_equal_the_submodules_run_by_hand():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2).eval()
    x = torch.randn(2, 5, 16)
    with capture_outputs(block, ["norm1", "attn", "mlp"]) as acts:
        out = block(x)
    torch.testing.assert_close(
        acts["norm1"], nn.functional.layer_norm(x, (16,), block.norm1.weight, block.norm1.bias)
    )
    torch.testing.assert_close(acts["attn"], block.attn(block.norm1(x)))
    h = x + acts["attn"]
    torch.testing.assert_close(acts["mlp"], block.mlp(block.norm2(h)))
    torch.testing.assert_close(out, h + acts["mlp"])


def test_inputs_are_captured_and_hooks_removed():
    block = TransformerBlock(8, 2).eval()
    x = torch.randn(1, 3, 8)
    with capture_outputs(block, ["norm2"], inputs=True) as acts:
        block(x)
    torch.testing.assert_close(acts["norm2"], x + block.attn(block.norm1(x)))  # residual sum enters norm2
    assert not block.norm2._forward_hooks


def test_unknown_module_name_raises():
    with pytest.raises(ValueError, match="no submodule"):
        with capture_outputs(TransformerBlock(8, 2), ["ffn"]):
            pass


def test_stack_gradient_norms_match_torchs_total_norm():
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(3)]
    x = torch.randn(4, 6)
    norms = stack_gradient_norms(layers, x)
    for layer, n in zip(layers, norms):
        ref = nn.utils.clip_grad_norm_(layer.parameters(), max_norm=float("inf"))  # torch's total norm
        assert n == pytest.approx(ref.item(), rel=1e-6)
    assert stack_gradient_norms(layers, x) == pytest.approx(norms)  # gradients do not accumulate
    assert grad_norm(nn.Linear(2, 2)) == 0.0


def test_ablating_a_head_removes_exactly_its_share_of_the_output():
    from common.attention import MultiHeadAttention
    from common.diagnostics import ablate_heads

    torch.manual_seed(0)
    attn = MultiHeadAttention(12, 3).eval()
    x = torch.randn(2, 5, 12)
    # reference: torch's fused attention per head, head 1 replaced by zeros, then the output projection
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    heads = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
    heads[:, 1] = 0.0
    expected = attn.proj(heads.transpose(1, 2).reshape(2, 5, 12))
    with ablate_heads(attn, [1]):
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(attn(x, return_attention=True)[0], expected, atol=1e-6, rtol=0)
    assert not attn.proj._forward_pre_hooks
    with ablate_heads(attn, [0, 1, 2]):
        torch.testing.assert_close(attn(x), attn.proj.bias.expand(2, 5, 12))
    with pytest.raises(ValueError, match="out of range"):
        with ablate_heads(attn, [3]):
            pass
