import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.attention import (
    MultiHeadAttention,
    attention_layer_flops,
    causal_mask,
    multi_head_attention,
    padding_mask,
    scaled_dot_product_attention,
)
from common.benchmark import count_flops


@pytest.fixture
def qkv():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 3, 5, 8, generator=g),
        torch.randn(2, 3, 7, 8, generator=g),
        torch.randn(2, 3, 7, 4, generator=g),
    )


def test_matches_torch_sdpa_without_mask(qkv):
    out, w = scaled_dot_product_attention(*qkv)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(*qkv), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def test_matches_torch_sdpa_with_boolean_and_float_masks(qkv):
    q, k, v = qkv
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[:, 0] = True  # every query keeps at least one key
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5
    )
    assert torch.all(w[..., ~mask] == 0)
    additive = torch.zeros(5, 7).masked_fill(~mask, float("-inf"))
    out_f, _ = scaled_dot_product_attention(q, k, v, mask=additive)
    torch.testing.assert_close(out_f, out)


def test_causal_mask_matches_torch_is_causal():
    q = k = v = torch.randn(1, 2, 6, 4)
    out, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=1e-5
    )
    assert torch.all(w.triu(1) == 0)


def test_hand_computed_2x2_example():
    # q·k scores [[1, 0], [0, 1]] with d_k = 2 -> scaled by 1/sqrt(2); softmax by hand.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    a = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)  # ≈ 0.6698
    torch.testing.assert_close(w, torch.tensor([[a, 1 - a], [1 - a, a]]))
    torch.testing.assert_close(out, torch.tensor([[10 * a, 10 * (1 - a)], [10 * (1 - a), 10 * a]]))


def test_scale_one_means_no_scaling():
    q, k, v = torch.randn(4, 16), torch.randn(6, 16), torch.randn(6, 3)
    _, w = scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(w, torch.softmax(q @ k.T, -1))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="same last dimension"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="same number of positions"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 4))


def test_padding_mask():
    m = padding_mask([3, 1], max_len=4)
    assert m.shape == (2, 1, 4)
    assert m[:, 0].tolist() == [[True, True, True, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="max_len"):
        padding_mask([5], max_len=4)


def _copy_into_torch_mha(ours: MultiHeadAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    return ref.eval()


@pytest.mark.parametrize("return_attention", [False, True])
def test_multihead_equals_torch_multiheadattention(return_attention):
    torch.manual_seed(0)
    dim, heads = 32, 4
    ours = MultiHeadAttention(dim, heads).eval()
    ref = _copy_into_torch_mha(ours, dim, heads)
    x = torch.randn(3, 10, dim)
    res = ours(x, return_attention=return_attention)
    out = res[0] if return_attention else res
    ref_out, ref_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    if return_attention:
        torch.testing.assert_close(res[1], ref_w, atol=1e-5, rtol=0)


def test_multihead_mask_equals_torch_key_padding_mask():
    torch.manual_seed(1)
    ours = MultiHeadAttention(16, 2).eval()
    ref = _copy_into_torch_mha(ours, 16, 2)
    x = torch.randn(2, 5, 16)
    keep = padding_mask([5, 3], 5)  # (B, 1, N): True = real token
    out, w = ours(x, mask=keep.unsqueeze(1), return_attention=True)
    fast = ours(x, mask=keep.unsqueeze(1))
    ref_out, _ = ref(x, x, x, key_padding_mask=~keep[:, 0])  # torch: True = ignore
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, ref_out, atol=1e-5, rtol=0)
    assert torch.all(w[1, :, :, 3:] == 0)


def test_multihead_rejects_indivisible_dim():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(30, 4)


# ------------------------------------------------------------------ the FLOP formula and the functional form
@pytest.mark.parametrize("n, d, heads", [(8, 16, 4), (50, 32, 2), (7, 64, 8), (1, 8, 1)])
def test_attention_layer_flops_matches_torch_flop_counter(n, d, heads):
    counted = count_flops(MultiHeadAttention(d, heads), torch.randn(1, n, d), return_attention=True)
    assert attention_layer_flops(n, d) == counted


def _torch_mha(d, h, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(d, h, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(0, 0.3)
    return mha, (mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)


@pytest.mark.parametrize("d, h", [(8, 1), (12, 3), (16, 4)])
def test_multi_head_attention_matches_torch(d, h):
    mha, weights = _torch_mha(d, h)
    x = torch.randn(3, 6, d)
    lengths = torch.tensor([6, 4, 2])
    keep = padding_mask(lengths, 6)[:, None]  # (B, 1, 1, N): True = a real token
    with torch.no_grad():
        torch.testing.assert_close(multi_head_attention(x, *weights, h), mha(x, x, x, need_weights=False)[0])
        torch.testing.assert_close(  # torch's key_padding_mask is True where a key is padding
            multi_head_attention(x, *weights, h, mask=keep),
            mha(x, x, x, key_padding_mask=~keep[:, 0, 0], need_weights=False)[0],
        )
    with pytest.raises(ValueError, match="divisible"):
        multi_head_attention(x, *weights, 5)
