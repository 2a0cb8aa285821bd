"""Swin windows from scratch, checked against timm's Swin implementation and the paper's formulas."""

import pytest
import torch
from timm.models import swin_transformer as timm_swin

from common.benchmark import count_flops
from common.swin import (
    PatchMerging,
    SwinBlock,
    SwinTransformer,
    WindowSelfAttention,
    attention_score_elements,
    global_attention_macs,
    load_timm_weights,
    relative_position_index,
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
        lambda: WindowSelfAttention(8, 2, window_size=None, relative_position_bias=True),
        lambda: WindowSelfAttention(8, 2, window_size=4)(torch.zeros(1, 4, 4, 8), mask=torch.ones(16, 16)),
        lambda: relative_position_index(0),
        lambda: PatchMerging(4)(torch.zeros(1, 5, 6, 4)),
        lambda: SwinTransformer(img_size=56, depths=(2, 2, 2), num_heads=(2, 4)),
        lambda: SwinTransformer(
            img_size=56, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)
        ),  # 7->odd
        lambda: SwinTransformer(img_size=40, embed_dim=8, depths=(1,), num_heads=(1,)),  # 10 px map, window 7
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


# ------------------------------------------------------------------ the whole hierarchical model vs timm's


def test_relative_position_index_matches_timm():
    for M in (1, 2, 7):
        assert torch.equal(relative_position_index(M), timm_swin.get_relative_position_index(M, M))


def test_relative_position_index_by_hand():
    # a 2x2 window, tokens (0,0), (0,1), (1,0), (1,1); offsets (dy+1)*3 + (dx+1)
    assert relative_position_index(2).tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_patch_merging_matches_timm():
    torch.manual_seed(0)
    theirs = timm_swin.PatchMerging(dim=6).eval()
    ours = PatchMerging(6)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 8, 10, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 4, 5, 12)


@pytest.mark.parametrize("shift", [0, 3])
def test_swin_block_with_relative_bias_matches_timm_block(shift):
    torch.manual_seed(0)
    block = timm_swin.SwinTransformerBlock(
        dim=16, input_resolution=(14, 14), num_heads=4, window_size=7, shift_size=shift
    ).eval()
    ours = SwinBlock(16, 4, window_size=7, shift_size=shift).eval()
    state = {
        k.replace("attn.qkv", "attn.attn.qkv").replace("attn.proj", "attn.attn.proj"): v
        for k, v in block.state_dict().items()
        if not k.endswith(("relative_position_index", "attn_mask"))
    }
    ours.load_state_dict(state)
    x = torch.randn(2, 14, 14, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), block(x), rtol=1e-5, atol=1e-5)
        # the bias matters: without it the outputs differ (so the comparison above is not vacuous)
        ours.attn.relative_position_bias_table.zero_()
        assert (ours(x) - block(x)).abs().max() > 1e-3


CONFIGS = [  # (image side, depths, heads): every stage's map divisible by the 7x7 window, as timm's
    (56, (2, 2), (2, 4)),
    (112, (2, 2, 2), (2, 4, 8)),
]


@pytest.mark.parametrize("img,depths,heads", CONFIGS)
def test_swin_transformer_matches_timm_with_copied_weights(img, depths, heads):
    torch.manual_seed(0)
    kwargs = dict(patch_size=4, window_size=7, embed_dim=16, depths=depths, num_heads=heads, num_classes=10)
    theirs = timm_swin.SwinTransformer(img_size=img, **kwargs).eval()
    ours = load_timm_weights(SwinTransformer(img, **kwargs).eval(), theirs)
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        want = theirs(x)
        torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-5)
        assert want.std() > 1e-2  # outputs that carry signal, not a vanishing comparison
        maps = ours.forward_stages(x)
        theirs_maps = theirs.forward_intermediates(x, intermediates_only=True)  # (B, C, H, W), no norm
    # the pyramid, value for value: half the side and twice the channels per stage
    for mine, want_map in zip(maps, theirs_maps, strict=True):
        torch.testing.assert_close(mine.permute(0, 3, 1, 2), want_map, rtol=1e-5, atol=1e-5)
    assert [m.shape[1] for m in maps] == [img // 4 // 2**i for i in range(len(depths))]


def test_swin_tiny_has_timms_parameters_and_flops():
    with torch.device("meta"):
        ours, theirs = SwinTransformer(), timm_swin.swin_tiny_patch4_window7_224()
        x = torch.empty(1, 3, 224, 224)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert count_flops(ours, x) == count_flops(theirs, x)
    assert [c["side"] for c in ours.stage_config] == [56, 28, 14, 7]
    # Swin-T's last stage (7x7) is one window, without shift, as in timm
    assert all(b.attn.shift_size == 0 for b in ours.layers[3].blocks)


def test_attention_score_elements_by_hand():
    model = SwinTransformer(56, embed_dim=8, depths=(2, 1), num_heads=(2, 4), num_classes=0)
    # stage 1: 14x14 map, 4 windows of 49 tokens, 2 heads, 2 blocks; stage 2: one 7x7 window, 4 heads, 1 block
    assert attention_score_elements(model) == 4 * 2 * 49**2 * 2 + 1 * 4 * 49**2 * 1
    assert attention_score_elements(model, batch=3) == 3 * attention_score_elements(model)
