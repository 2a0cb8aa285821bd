"""Loading timm's ViT weights into ours: the configuration is read, the weights copied, what we lack refused."""

import pytest
import torch
from test_vit import TINY, randomised_timm  # the same tiny configuration and randomised timm ViT
from timm.models.vision_transformer import VisionTransformer as TimmViT

from common.timm_interop import load_timm_weights, vit_from_timm
from common.vit import VisionTransformer


def test_vit_from_timm_reads_the_config_and_loads_a_state_dict():
    ref = randomised_timm(mlp_ratio=2.0, qkv_bias=False, num_classes=3)
    ours = vit_from_timm(ref).eval()
    assert ours.blocks[0].attn.qkv.bias is None and ours.head.out_features == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
    fresh = VisionTransformer(**{**TINY, "num_classes": 3, "mlp_ratio": 2.0, "qkv_bias": False})
    load_timm_weights(fresh, ref.state_dict())
    assert torch.equal(fresh.pos_embed, ref.pos_embed)


def test_loader_refuses_features_we_do_not_implement():
    with pytest.raises(ValueError, match="layer scale"):
        load_timm_weights(VisionTransformer(**TINY), TimmViT(**TINY, init_values=1e-5))
