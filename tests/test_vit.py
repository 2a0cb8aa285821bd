"""The ViT against timm's VisionTransformer (same weights -> same outputs) and its parts against torch."""

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer as TimmViT

from common.positional import sincos_2d_encoding
from common.timm_interop import load_timm_weights
from common.vit import (
    PatchEmbedding,
    UnfoldPatchEmbedding,
    VisionTransformer,
    image_to_patches,
    resample_pos_embed,
    sequence_length,
)

TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=2, num_heads=4)


def randomised_timm(**overrides):
    torch.manual_seed(0)
    model = TimmViT(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # non-trivial values everywhere (timm zero-inits biases)
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_same_weights_as_timm_give_the_same_logits():
    ref = randomised_timm()
    ours = load_timm_weights(VisionTransformer(**TINY), ref).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-5
        assert (ours.forward_features(x) - ref.forward_features(x)).abs().max() <= 1e-5


def test_parameter_names_match_timm():
    assert set(VisionTransformer(**TINY).state_dict()) == set(TimmViT(**TINY).state_dict())


def test_attention_maps_equal_timms_softmax_weights():
    # Reference: timm's non-fused attention path, whose softmax weights pass through attn_drop (p = 0):
    # a forward hook there records them, block by block.
    ref = randomised_timm()
    ours = load_timm_weights(VisionTransformer(**TINY), ref).eval()
    recorded = []
    for block in ref.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda module, args, out: recorded.append(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref(x)
    maps = ours.get_attention_maps(x)
    assert len(maps) == len(recorded) == 2 and maps[0].shape == (2, 4, 65, 65)
    for got, expected in zip(maps, recorded):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_unfold_and_conv_patch_embeddings_agree_when_sharing_weights():
    conv = PatchEmbedding(32, 4, in_chans=3, embed_dim=48)
    linear = UnfoldPatchEmbedding.from_conv(conv)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(conv(x), linear(x), atol=1e-5)


def test_image_to_patches_matches_torch_unfold_and_the_seed_numbers():
    x = torch.randn(1, 3, 224, 224)
    patches = image_to_patches(x, 16)
    assert patches.shape == (1, 196, 768)  # 14 x 14 patches of 3 x 16 x 16 values
    reference = torch.nn.functional.unfold(x, kernel_size=16, stride=16).transpose(1, 2)
    assert torch.equal(patches, reference)


def test_bad_image_size_names_the_fix():
    with pytest.raises(
        ValueError, match="not divisible by the patch size 4; resize or crop to 28x32, pad to 32x32"
    ):
        VisionTransformer(**TINY)(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="not divisible"):
        VisionTransformer(**{**TINY, "img_size": 30})
    with pytest.raises(ValueError, match="pos_embed"):
        VisionTransformer(**TINY, pos_embed="rope")


def test_position_table_is_resampled_like_timm_for_another_size():
    model = VisionTransformer(**TINY)
    ours = resample_pos_embed(model.pos_embed, (12, 10))
    ref = resample_abs_pos_embed(model.pos_embed, (12, 10), (8, 8), num_prefix_tokens=1)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert model(torch.randn(2, 3, 48, 40)).shape == (2, 10)
    model.set_image_size(48)
    assert model.pos_embed.shape == (1, 1 + 144, 64) and model(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_sincos_position_embedding_is_fixed_and_follows_the_formula():
    model = VisionTransformer(**TINY, pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    assert torch.allclose(model.pos_embed[0, 1:], sincos_2d_encoding(8, 8, 64))  # formula: test_positional
    assert torch.all(model.pos_embed[0, 0] == 0)  # the CLS token has no grid position
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)  # re-evaluated for a 4 x 4 grid


def test_headless_model_returns_the_cls_feature_like_timm():
    # Reference: timm's ViT with num_classes=0 returns the pooled (CLS, after the final norm) feature.
    ref = randomised_timm(num_classes=0)
    ours = load_timm_weights(VisionTransformer(**{**TINY, "num_classes": 0}), ref).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert ours(x).shape == (2, 64)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_sequence_length_counts_what_a_real_vit_sees():
    assert sequence_length(224, 16) == (197, 197**2)  # the ViT paper's 14 x 14 patches + CLS
    model = VisionTransformer(img_size=336, patch_size=14, num_classes=0, embed_dim=32, depth=1, num_heads=2)
    maps = model.get_attention_maps(torch.zeros(1, 3, 336, 336))
    tokens, entries = sequence_length(336, 14)
    assert maps[0].shape[-2:] == (tokens, tokens) and maps[0][0, 0].numel() == entries
    assert sequence_length((32, 48), 8, prefix_tokens=0) == (24, 576)


def test_no_position_table_matches_timm_and_ignores_where_the_patches_are():
    # Reference 1: timm's ViT with pos_embed="none", same weights (our zero table is not a parameter timm has).
    timm_model = randomised_timm(pos_embed="none")
    ours = VisionTransformer(**TINY, pos_embed="none").eval()
    state = {k: v for k, v in timm_model.state_dict().items()}
    state["pos_embed"] = torch.zeros_like(ours.pos_embed)
    ours.load_state_dict(state)
    assert not ours.pos_embed.requires_grad and torch.all(ours.pos_embed == 0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), timm_model(x), atol=1e-5)
        # Reference 2: a set of patches has no order. Shuffle the 8x8 grid of 4x4 patches: the same logits.
        blocks = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 3, 64, 4, 4)
        order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
        shuffled = (
            blocks[:, :, order].reshape(2, 3, 8, 8, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 32, 32)
        )
        assert not torch.equal(shuffled, x)
        assert torch.allclose(ours(shuffled), ours(x), atol=1e-5)
        learned = VisionTransformer(**TINY).eval()  # the same weights plus a table that says something
        learned.load_state_dict({**state, "pos_embed": torch.randn_like(ours.pos_embed)})
        assert not torch.allclose(learned(shuffled), learned(x), atol=1e-3)
        assert ours(torch.randn(1, 3, 16, 16)).shape == (1, 10)  # any grid: still nothing added
