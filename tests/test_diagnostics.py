import pytest
import torch
from torch import nn

from common.blocks import TransformerBlock
from common.diagnostics import capture_outputs, grad_norm, stack_gradient_norms


def test_captured_outputs_and_inputs_equal_the_layers_computed_by_hand():
    # Reference: a torch Sequential whose intermediate values are written out with torch functions.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    h0 = x @ model[0].weight.T + model[0].bias
    h1 = torch.tanh(h0)
    h2 = h1 @ model[2].weight.T + model[2].bias
    with capture_outputs(model, ["0", "1", "2"]) as outs:
        model(x)
    with capture_outputs(model, ["0", "2"], inputs=True) as ins:
        model(x)
    for got, ref in [(outs["0"], h0), (outs["1"], h1), (outs["2"], h2), (ins["0"], x), (ins["2"], h1)]:
        torch.testing.assert_close(got, ref)
    assert not any(m._forward_hooks for m in model)  # every hook removed on exit
    with capture_outputs(model, ["2"]) as late:
        pass
    model(x)
    assert late == {}  # nothing recorded outside the with block


def test_captures_the_output_not_the_weights_of_an_attention_that_returns_both():
    # TransformerBlock's pre-norm sum x + Attn(LN(x)) is what norm2 receives, so the captured attention output
    # must be norm2's captured input minus x (the block calls attn with return_attention, a tuple).
    torch.manual_seed(0)
    block = TransformerBlock(8, 2).eval()
    x = torch.randn(1, 3, 8)
    with capture_outputs(block, ["attn"]) as outs, capture_outputs(block, ["norm2"], inputs=True) as ins:
        block(x, return_attention=True)
    assert outs["attn"].shape == x.shape
    torch.testing.assert_close(outs["attn"], ins["norm2"] - x)
    assert not block.norm2._forward_hooks and not block.attn._forward_hooks


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
    # Reference: torch's nn.MultiheadAttention with the same weights, whose output projection ignores head 1's
    # slice of the concatenated heads (columns 4..7 of W_o set to 0): that head's contribution, and only it, gone.
    ref = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.load_state_dict(attn.proj.state_dict())
        full = ref(x, x, x, need_weights=False)[0]
        ref.out_proj.weight[:, 4:8] = 0.0
        expected = ref(x, x, x, need_weights=False)[0]
    assert not torch.allclose(full, expected, atol=1e-3)  # the head did contribute something
    with ablate_heads(attn, [1]):
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(attn(x, return_attention=True)[0], expected, atol=1e-6, rtol=0)
    assert not attn.proj._forward_pre_hooks
    torch.testing.assert_close(attn(x), full, atol=1e-5, rtol=0)  # every head is back after the block
    with ablate_heads(attn, [0, 1, 2]):
        torch.testing.assert_close(attn(x), attn.proj.bias.expand(2, 5, 12))
    with pytest.raises(ValueError, match="out of range"):
        with ablate_heads(attn, [3]):
            pass
