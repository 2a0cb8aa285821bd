"""Our ViT and timm's: copy a timm ``VisionTransformer``'s weights into :class:`common.vit.VisionTransformer`,
or rebuild a timm ViT (pretrained ones included) as ours. The parameter names are the same, so the copy is
one to one; features our ViT lacks (register tokens, layer scale, ...) raise instead of loading silently."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from common.vit import VisionTransformer, resample_pos_embed

_UNSUPPORTED = {
    "reg_token": "register tokens",
    "norm_pre.weight": "a norm before the blocks (CLIP-style pre_norm)",
    "fc_norm.weight": "a norm after pooling (global_pool='avg')",
    "attn_pool": "attention pooling (global_pool='map')",
    ".ls1.": "layer scale (init_values)",
    ".q_norm.": "QK normalisation",
    ".mlp.norm.": "a norm inside the MLP",
    "patch_embed.norm.": "a norm after the patch embedding",
}


def load_timm_weights(
    model: VisionTransformer, source: nn.Module | Mapping[str, Tensor]
) -> VisionTransformer:
    """Copy the weights of a timm ``VisionTransformer`` (a model or its state dict) into ``model``.

    Names match one to one; a position table for another grid is resampled. Architectural features
    our ViT does not have (register tokens, layer scale, ...) raise a ValueError rather than load
    silently into a different network.
    """
    state = dict(source.state_dict() if isinstance(source, nn.Module) else source)
    for key in state:
        for marker, what in _UNSUPPORTED.items():
            if marker in key:
                raise ValueError(
                    f"the timm weights use {what} ({key!r}), which this VisionTransformer does "
                    "not implement; pick a plain timm ViT (e.g. vit_base_patch16_224)."
                )
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], model.grid_size)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"timm weights do not fit this model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}; build the model with vit_from_timm()."
        )
    return model


def vit_from_timm(timm_model: nn.Module) -> VisionTransformer:
    """Our VisionTransformer with the same configuration and weights as a timm ``VisionTransformer``."""
    pe = timm_model.patch_embed
    block = timm_model.blocks[0]
    if getattr(timm_model, "global_pool", "token") != "token" or timm_model.cls_token is None:
        raise ValueError(
            "only timm ViTs that classify from the CLS token (global_pool='token') are supported."
        )
    model = VisionTransformer(
        img_size=tuple(pe.img_size),
        patch_size=pe.patch_size[0],
        in_chans=pe.proj.in_channels,
        num_classes=timm_model.num_classes,
        embed_dim=timm_model.embed_dim,
        depth=len(timm_model.blocks),
        num_heads=block.attn.num_heads,
        mlp_ratio=block.mlp.fc1.out_features / timm_model.embed_dim,
        qkv_bias=block.attn.qkv.bias is not None,
    )
    return load_timm_weights(model, timm_model)
