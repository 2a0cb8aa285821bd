"""Swin windows from scratch, checked against timm's Swin implementation and the paper's formulas."""

import pytest
import torch
from timm.models import swin_transformer as timm_swin

from common.benchmark import count_flops
from common.swin import (
    WindowSelfAttention,
    check_window_partition,
    global_attention_macs,
    shifted_window_mask,
    window_attention_macs,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("shape,window", [((2, 14, 21, 5), 7), ((1, 8, 8, 3), 4), ((3, 6, 6, 2), 6)])
def test_partition_matches_timm_and_reverse_round_trips(shape, window):
    x = torch.randn(shape)
    windows = window_partition(x, window)
    torch.testing.assert_close(windows, timm_swin.window_partition(x, (window, window)), rtol=0, atol=0)
    assert torch.equal(window_reverse(windows, window, shape[1], shape[2]), x)


def test_each_window_is_a_contiguous_block():
    x = torch.arange(4 * 6).view(1, 4, 6, 1)
    windows = window_partition(x, 2)
    assert windows.shape == (6, 2, 2, 1)
    assert windows[1, :, :, 0].tolist() == [[2, 3], [8, 9]]  # second window of the first row of windows


@pytest.mark.parametrize("size,window,shift", [(14, 7, 3), (8, 4, 2), (12, 4, 1), (56, 7, 3)])
def test_shifted_mask_matches_timm(size, window, shift):
    block = timm_swin.SwinTransformerBlock(
        dim=8, input_resolution=(size, size), num_heads=2, window_size=window, shift_size=shift
    )
    ours = shifted_window_mask(size, size, window, shift)
    assert ours.dtype == torch.bool and ours.shape == block.attn_mask.shape
    assert torch.equal(ours, block.attn_mask == 0)  # timm adds -100 where attention is not allowed


def test_mask_blocks_wrapped_around_pixels_only():
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask[0].all()  # the top-left window holds one contiguous region after the shift
    assert not mask[-1].all()  # the bottom-right window mixes four regions from the image's corners
    assert torch.equal(mask, mask.transpose(1, 2)) and mask.diagonal(dim1=1, dim2=2).all()
    assert shifted_window_mask(8, 8, 4, 0).all()  # no shift, nothing to hide


@pytest.mark.parametrize(
    "call",
    [
        lambda: window_partition(torch.zeros(1, 10, 14, 3), 7),
        lambda: window_reverse(torch.zeros(3, 7, 7, 2), 7, 14, 14),
        lambda: shifted_window_mask(14, 14, 7, 7),
        lambda: WindowSelfAttention(8, 2, window_size=None, shift_size=2),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def _copy_timm_weights(ours, block):
    block.attn.relative_position_bias_table.data.zero_()  # ours has no relative position bias
    ours.attn.qkv.load_state_dict(block.attn.qkv.state_dict())
    ours.attn.proj.load_state_dict(block.attn.proj.state_dict())


@pytest.mark.parametrize("shift", [0, 3])
def test_window_attention_matches_timm_block(shift):
    torch.manual_seed(0)
    block = timm_swin.SwinTransformerBlock(
        dim=16, input_resolution=(14, 14), num_heads=4, window_size=7, shift_size=shift
    ).eval()
    ours = WindowSelfAttention(16, 4, window_size=7, shift_size=shift).eval()
    _copy_timm_weights(ours, block)
    x = torch.randn(2, 14, 14, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), block._attn(x), rtol=1e-5, atol=1e-5)


def test_one_window_covering_the_map_is_global_attention():
    torch.manual_seed(0)
    windowed, full = WindowSelfAttention(8, 2, window_size=6), WindowSelfAttention(8, 2, window_size=None)
    full.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 6, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x), full(x))


@pytest.mark.parametrize("size,window", [(14, 7), (28, 7)])
def test_counted_flops_match_the_swin_paper_formulas(size, window):
    dim = 32
    x = torch.randn(1, size, size, dim)
    # FlopCounterMode counts a multiply-add as 2 FLOPs and does not count softmax: exactly 2x eqs. 1-2.
    assert count_flops(WindowSelfAttention(dim, 4, window_size=None), x) == 2 * global_attention_macs(
        size, size, dim
    )
    assert count_flops(WindowSelfAttention(dim, 4, window_size=window), x) == 2 * window_attention_macs(
        size, size, dim, window
    )


def test_formulas_by_hand():
    assert global_attention_macs(2, 2, 3) == 4 * 4 * 9 + 2 * 16 * 3
    assert window_attention_macs(4, 4, 1, 2) == 4 * 16 + 2 * 4 * 16
    # at the window size itself, the two are the same computation
    assert global_attention_macs(7, 7, 96) == window_attention_macs(7, 7, 96, 7)


def _partition_by_slicing(x, M):
    """An independent reference: window k = b*(H/M)*(W/M) + i*(W/M) + j is x[b, i*M:(i+1)*M, j*M:(j+1)*M]."""
    B, H, W, _ = x.shape
    return torch.stack(
        [
            x[b, i * M : (i + 1) * M, j * M : (j + 1) * M]
            for b in range(B)
            for i in range(H // M)
            for j in range(W // M)
        ]
    )


def test_window_partition_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_window_partition(window_partition)
    check_window_partition(_partition_by_slicing)  # any correct answer passes, loops included
    assert "[pass] window partition" in exercise_output(
        "window partition", lambda: check_window_partition(window_partition)
    )

    def split(x, M):
        B, H, W, C = x.shape
        return x.view(B, H // M, M, W // M, M, C)

    wrong = {
        "strips of rows": lambda x, M: x.reshape(-1, M, M, x.shape[-1]),
        "column by column": lambda x, M: split(x, M).permute(0, 3, 1, 2, 4, 5).reshape(-1, M, M, x.shape[-1]),
        "transposed": lambda x, M: split(x, M).permute(0, 1, 3, 4, 2, 5).reshape(-1, M, M, x.shape[-1]),
        "keep the batch axis first": lambda x, M: (
            split(x, M).permute(1, 3, 0, 2, 4, 5).reshape(-1, M, M, x.shape[-1])
        ),
        "expected shape": lambda x, M: split(x, M).permute(0, 1, 3, 2, 4, 5),
        "differ from common.swin": lambda x, M: window_partition(x, M).flip(0),
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_window_partition(fn)
    assert "[fail] window partition: the windows come column by column" in exercise_output(
        "window partition", lambda: check_window_partition(wrong["column by column"])
    )
