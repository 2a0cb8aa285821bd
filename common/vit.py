"""The Vision Transformer (Dosovitskiy et al., 2020, "An Image is Worth 16x16 Words") from scratch.

An image (B, C, H, W) is cut into non-overlapping p x p patches, each flattened and projected to a
D-dimensional token; a learned CLS token is prepended, position embeddings are added, and pre-norm
transformer blocks (``common.blocks.TransformerBlock``) mix the tokens. The CLS token's final state,
after a LayerNorm, is classified by a linear head.

Module and parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.i.attn.qkv`` ...), so :func:`common.timm_interop.load_timm_weights` copies a timm
state dict over unchanged and :func:`common.timm_interop.vit_from_timm` rebuilds any standard timm ViT
(pretrained ones included) as ours.

Public API
----------
- ``image_to_patches(images, patch_size) -> (B, N, C*p*p)``: the explicit patch cut (channel-major,
  the same order as a conv weight's flattening).
- ``PatchEmbedding(img_size=32, patch_size=4, *, in_chans=3, embed_dim=192)`` (a strided convolution,
  ``proj``) and ``UnfoldPatchEmbedding(patch_size=4, *, in_chans=3, embed_dim=192)`` (cut + ``nn.Linear``);
  ``UnfoldPatchEmbedding.from_conv(conv_embedding)`` copies the conv's weights, so both give the same tokens.
- ``VisionTransformer(img_size=32, patch_size=4, *, in_chans=3, num_classes=10, embed_dim=192, depth=6,
  num_heads=3, mlp_ratio=4.0, qkv_bias=True, pos_embed="learn" | "sincos" | "none", drop_rate=0.0,
  attn_drop_rate=0.0)`` with ``forward_features(x) -> (B, 1+N, D)`` (after the final norm),
  ``forward(x) -> logits`` (from the CLS token), ``get_attention_maps(x) -> [(B, heads, 1+N, 1+N)] * depth``.
  Any input whose sides are multiples of the patch size works: the position embeddings are resampled
  (learned) or recomputed (sin-cos) on the fly; ``set_image_size`` makes a new size permanent.
- ``resample_pos_embed(pos_embed, new_grid, old_grid=None, num_prefix_tokens=1, mode="bicubic")`` and
  ``require_divisible(height, width, size, unit="patch size")`` (also Swin's window check).
- ``sequence_length(img_size, patch_size, *, prefix_tokens=1) -> (tokens, attention entries per head)``.
Elsewhere: timm weights into our ViT, :mod:`common.timm_interop`; attention rollout and the other read-outs
of attention maps, :mod:`common.attention_analysis`; saving and loading weights, :mod:`common.checkpoints`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.blocks import TransformerBlock
from common.positional import sincos_2d_encoding

POS_EMBED_KINDS = ("learn", "sincos", "none")
NORM_EPS = 1e-6  # timm's ViT LayerNorm epsilon (PyTorch's default is 1e-5)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def require_divisible(height: int, width: int, size: int, unit: str = "patch size") -> None:
    """Raise a ValueError naming the fix when a ``height x width`` grid does not tile into whole
    ``size x size`` pieces (ViT patches of an image, Swin windows of a feature map)."""
    if size < 1:
        raise ValueError(f"the {unit} must be a positive integer, got {size}.")
    if height % size or width % size:
        down = lambda s: max(size, s // size * size)  # noqa: E731
        up = lambda s: -(-s // size) * size  # noqa: E731
        raise ValueError(
            f"size {height}x{width} is not divisible by the {unit} {size}; resize or crop to "
            f"{down(height)}x{down(width)}, pad to {up(height)}x{up(width)}, or choose a {unit} that divides "
            "both sides."
        )


def image_to_patches(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C*p*p): the patches in row-major grid order, each flattened as (C, p, p)."""
    B, C, H, W = images.shape
    require_divisible(H, W, patch_size)
    p = patch_size
    # unfold H then W: (B, C, H/p, W/p, p, p); then put the grid first and flatten each patch.
    patches = images.unfold(2, p, p).unfold(3, p, p)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(B, (H // p) * (W // p), C * p * p)


class PatchEmbedding(nn.Module):
    """Patch embedding as one strided convolution (kernel = stride = patch size), as in timm's PatchEmbed.

    A p x p convolution with stride p sees each patch exactly once: it IS a linear map of the
    flattened patch, computed by an optimised kernel. Output (B, N, embed_dim), N = (H/p)(W/p).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        *,
        in_chans: int = 3,
        embed_dim: int = 192,
    ):
        super().__init__()
        self.img_size = _pair(img_size)
        require_divisible(*self.img_size, patch_size)
        self.patch_size = patch_size
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        require_divisible(x.shape[-2], x.shape[-1], self.patch_size)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, H/p, W/p) -> (B, N, D)


class UnfoldPatchEmbedding(nn.Module):
    """Patch embedding written out: cut into patches, flatten, then one ``nn.Linear`` (the paper's E)."""

    def __init__(self, patch_size: int = 4, *, in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_chans * patch_size * patch_size, embed_dim)

    @classmethod
    def from_conv(cls, conv_embedding: PatchEmbedding) -> UnfoldPatchEmbedding:
        """A new module holding a copy of the convolution's weights: the kernel (D, C, p, p) flattened to
        (D, C*p*p). Same tokens as the conv; the two train independently."""
        conv = conv_embedding.proj
        out = cls(conv_embedding.patch_size, in_chans=conv.in_channels, embed_dim=conv.out_channels)
        with torch.no_grad():
            out.proj.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            out.proj.bias.copy_(conv.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(image_to_patches(x, self.patch_size))


def resample_pos_embed(
    pos_embed: Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
) -> Tensor:
    """Resize a (1, prefix + H*W, D) position table to a new patch grid by 2-D interpolation.

    The prefix (CLS) embedding is kept as it is; the patch embeddings are treated as a D-channel
    H x W image and resized (bicubic, antialiased, like timm's ``resample_abs_pos_embed``).
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(
                f"cannot infer a square grid from {grid.shape[1]} patch embeddings; pass old_grid."
            )
        old_grid = (side, side)
    new_grid = _pair(new_grid)
    if tuple(old_grid) == new_grid:
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)  # (1, D, H, W): an image with D channels
    grid = F.interpolate(grid.float(), size=new_grid, mode=mode, align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(nn.Module):
    """ViT: patch embedding -> [CLS] + patches -> + position embedding -> pre-norm blocks -> norm -> head.

    ``pos_embed="learn"`` is the paper's learned 1-D table (one vector per token position);
    ``"sincos"`` is the fixed 2-D sin-cos table of MAE (row and column encoded separately, not trained);
    ``"none"`` adds nothing (a zero table, not trained): the encoder then sees the patches as an unordered set,
    the ablation of lab 4.1, section 6.
    ``drop_rate`` is the dropout after the position embedding and inside each block (projection and
    MLP); ``attn_drop_rate`` drops attention weights. With ``num_classes=0`` the head is ``nn.Identity``
    and ``forward`` returns the CLS feature (what DINO and k-NN evaluation use).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        *,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        pos_embed: str = "learn",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ):
        super().__init__()
        if pos_embed not in POS_EMBED_KINDS:
            raise ValueError(f"unknown pos_embed {pos_embed!r}; use one of {POS_EMBED_KINDS}.")
        if pos_embed == "sincos" and embed_dim % 4:
            raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got {embed_dim}.")
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.num_prefix_tokens = 1
        self.pos_embed_kind = pos_embed

        self.patch_embed = PatchEmbedding(img_size, patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim), requires_grad=pos_embed == "learn"
        )
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                dropout=drop_rate,
                attn_dropout=attn_drop_rate,
                norm="pre",
                qkv_bias=qkv_bias,
                norm_eps=NORM_EPS,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=NORM_EPS)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    # ----------------------------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """timm's default ViT init: truncated normal (std 0.02) for linears and embeddings, zero biases."""
        if self.pos_embed_kind == "learn":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif self.pos_embed_kind == "none":
            with torch.no_grad():
                self.pos_embed.zero_()
        else:
            with torch.no_grad():
                self.pos_embed.zero_()  # the CLS slot stays 0: it has no grid position
                self.pos_embed[0, 1:] = sincos_2d_encoding(*self.patch_embed.grid_size, self.embed_dim)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------- helpers
    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """The position table for a patch grid: the stored one, or resampled for another image size."""
        if grid == self.grid_size:
            return self.pos_embed
        if self.pos_embed_kind == "none":  # nothing to resample
            return self.pos_embed.new_zeros(1, 1 + grid[0] * grid[1], self.embed_dim)
        if self.pos_embed_kind == "sincos":  # a formula: just evaluate it on the new grid
            table = sincos_2d_encoding(*grid, self.embed_dim).to(self.pos_embed)
            return torch.cat([self.pos_embed[:, :1], table[None]], dim=1)
        return resample_pos_embed(self.pos_embed, grid, self.grid_size, self.num_prefix_tokens)

    def set_image_size(self, img_size: int | tuple[int, int]) -> None:
        """Permanently adapt the model to another input size (e.g. fine-tuning at a higher resolution)."""
        img_size = _pair(img_size)
        require_divisible(*img_size, self.patch_size)
        grid = (img_size[0] // self.patch_size, img_size[1] // self.patch_size)
        new_table = self._pos_embed_for(grid).detach().clone()
        self.pos_embed = nn.Parameter(new_table, requires_grad=self.pos_embed_kind == "learn")
        pe = self.patch_embed
        pe.img_size, pe.grid_size, pe.num_patches = img_size, grid, grid[0] * grid[1]

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1+N, D): patch tokens, CLS prepended, position embeddings added."""
        B, _, H, W = x.shape
        tokens = self.patch_embed(x)  # (B, N, D); raises a clear error for a bad size
        cls = self.cls_token.expand(B, -1, -1)  # one shared learned vector per image
        tokens = torch.cat([cls, tokens], dim=1)
        grid = (H // self.patch_size, W // self.patch_size)
        return self.pos_drop(tokens + self._pos_embed_for(grid))

    # ------------------------------------------------------------------------------- forward
    def forward_features(self, x: Tensor) -> Tensor:
        """All token states after the final LayerNorm: (B, 1+N, D); index 0 is the CLS token."""
        x = self.prepare_tokens(x)
        for block in self.blocks:
            x = block(x)  # fused SDPA kernel: no attention matrix is materialised
        return self.norm(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def get_attention_maps(self, x: Tensor) -> list[Tensor]:
        """Per-block attention weights, each (B, heads, 1+N, 1+N); row 0 is what the CLS token attends to."""
        x = self.prepare_tokens(x)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_attention=True)
            maps.append(weights)
        return maps


def sequence_length(
    img_size: int | tuple[int, int], patch_size: int, *, prefix_tokens: int = 1
) -> tuple[int, int]:
    """(tokens entering the encoder, entries of one head's attention matrix): (H/p)(W/p) patches plus the
    prefix (CLS) tokens, and one score per (query, key) pair."""
    height, width = _pair(img_size)
    require_divisible(height, width, patch_size)
    tokens = (height // patch_size) * (width // patch_size) + prefix_tokens
    return tokens, tokens * tokens
