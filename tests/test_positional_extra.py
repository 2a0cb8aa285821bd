import math

import pytest
import torch

from common.attention import MultiHeadAttention
from common.positional import (
    RelativePositionBias,
    linear_encoding,
    relative_position_index,
    sinusoidal_encoding,
    sinusoidal_rotation,
)


def formula_table(num_positions, dim):
    """The paper's formula entry by entry with Python's math: an independent correct answer."""
    table = torch.zeros(num_positions, dim)
    for pos in range(num_positions):
        for i in range(dim // 2):
            table[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / dim))
            table[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / dim))
    return table


def test_linear_encoding_is_position_over_max_len_in_every_channel():
    pe = linear_encoding(6, 4, max_len=10)
    for pos in range(6):
        assert torch.all(pe[pos] == pos / 10)
    assert linear_encoding(5, 3)[-1, 0].item() == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="max_len"):
        linear_encoding(5, 3, max_len=0)


@pytest.mark.parametrize("offset", [1, 3, 17, -5])
def test_rotation_maps_every_position_to_position_plus_offset(offset):
    dim = 16
    pe = sinusoidal_encoding(200, dim).double()
    rot = sinusoidal_rotation(offset, dim).double()
    positions = torch.arange(max(0, -offset), 200 - max(0, offset))
    shifted = pe[positions] @ rot.T  # row-vector form of R_k · PE(pos)
    torch.testing.assert_close(shifted, pe[positions + offset], atol=1e-5, rtol=0)


def test_rotation_is_orthogonal_and_composes():
    r3, r4, r7 = (sinusoidal_rotation(k, 8).double() for k in (3, 4, 7))
    torch.testing.assert_close(r3 @ r3.T, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(r3 @ r4, r7, atol=1e-6, rtol=0)
    # one (sin, cos) block written out from the angle-addition formulas
    w = 10000 ** (-2 / 8)
    expected = torch.tensor([[math.cos(3 * w), math.sin(3 * w)], [-math.sin(3 * w), math.cos(3 * w)]])
    torch.testing.assert_close(r3[2:4, 2:4].float(), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_rotation(1, 7)


def test_relative_index_by_hand_and_clipping():
    idx = relative_position_index(3, 4)
    assert idx.tolist() == [[0, 1, 2, 3], [-1, 0, 1, 2], [-2, -1, 0, 1]]
    clipped = relative_position_index(5, max_distance=2)
    assert clipped[0, 4].item() == 2 and clipped[4, 0].item() == -2 and clipped[1, 2].item() == 1
    with pytest.raises(ValueError, match="max_distance"):
        relative_position_index(3, max_distance=-1)


def test_relative_bias_depends_only_on_offset_and_serves_any_length():
    bias_module = RelativePositionBias(num_heads=2, max_distance=3)
    with torch.no_grad():
        bias_module.table.copy_(torch.arange(14, dtype=torch.float32).reshape(7, 2))
    bias = bias_module(9)
    assert bias.shape == (2, 9, 9)
    for h in range(2):
        for i in range(9):
            for j in range(9):
                offset = max(-3, min(3, j - i))
                assert bias[h, i, j].item() == bias_module.table[offset + 3, h].item()


def test_relative_bias_is_added_to_multihead_scores():
    torch.manual_seed(0)
    attn, rel = MultiHeadAttention(8, 2), RelativePositionBias(2, max_distance=2)
    with torch.no_grad():
        rel.table.normal_()
    x = torch.randn(1, 5, 8)
    bias = rel(5)
    _, w = attn(x, mask=bias, return_attention=True)
    # Reference: torch's nn.MultiheadAttention (same weights), whose float attn_mask of shape
    # (batch * heads, N, N) is added to each head's scaled scores before the softmax.
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.load_state_dict(attn.proj.state_dict())
        ref_out, ref_w = ref(x, x, x, attn_mask=bias, average_attn_weights=False)
        torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(attn(x, mask=bias), ref_out, atol=1e-6, rtol=1e-5)  # the fused path too
        assert not torch.allclose(w, attn(x, return_attention=True)[1], atol=1e-3)  # the bias mattered
    with pytest.raises(ValueError, match="num_heads"):
        RelativePositionBias(0, 2)


def test_single_channel_linear_encoding_survives_layer_norm():
    pe = linear_encoding(6, 4, max_len=10, single_channel=True)
    torch.testing.assert_close(pe[:, 0], torch.arange(6) / 10)
    assert torch.count_nonzero(pe[:, 1:]) == 0
    x = torch.randn(6, 4)
    ln = torch.nn.functional.layer_norm
    # every-channel code: LayerNorm removes it exactly; one-channel code: it does not
    torch.testing.assert_close(
        ln(x + linear_encoding(6, 4, max_len=10), (4,)), ln(x, (4,)), atol=1e-5, rtol=0
    )
    assert not torch.allclose(ln(x + pe, (4,)), ln(x, (4,)), atol=1e-3)
