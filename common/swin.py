"""Swin from scratch (Liu et al., 2021, "Swin Transformer"): window partition/reverse, the shifted-window
mask, the relative position bias, patch merging, and the whole hierarchical model, with the cost of global
vs window self-attention (eqs. 1-2).

Layout and parameter names follow timm's ``swin_transformer``, so its weights copy over
(:func:`load_timm_weights`) and the tests compare outputs: feature maps are channels-last ``(B, H, W, C)``
and windows are ``(B * num_windows, M, M, C)``, batch-major, windows in row-major order. The blocks are the
course's own: :class:`SwinBlock` is ``common.blocks.TransformerBlock`` with its attention swapped for
:class:`WindowSelfAttention` (which wraps ``common.attention.MultiHeadAttention``), and the patch
embedding is ``common.vit.PatchEmbedding``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.attention import MultiHeadAttention
from common.blocks import TransformerBlock
from common.vit import PatchEmbedding, require_divisible


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B * H/M * W/M, M, M, C): cut the map into non-overlapping M x M windows."""
    if x.ndim != 4:
        raise ValueError(f"window_partition expects (B, H, W, C), got shape {tuple(x.shape)}.")
    B, H, W, C = x.shape
    require_divisible(H, W, window_size, unit="window size")
    M = window_size
    # Split H into (H/M, M) and W into (W/M, M), then bring the two window-index axes together.
    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, M, M, C)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, M, M, C) -> (B, H, W, C)."""
    require_divisible(height, width, window_size, unit="window size")
    M = window_size
    per_image = (height // M) * (width // M)
    if windows.ndim != 4 or windows.shape[1:3] != (M, M) or windows.shape[0] % per_image:
        raise ValueError(
            f"expected (B*{per_image}, {M}, {M}, C) windows for a {height}x{width} map, "
            f"got shape {tuple(windows.shape)}."
        )
    B, C = windows.shape[0] // per_image, windows.shape[-1]
    x = windows.view(B, height // M, width // M, M, M, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, height, width, C)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device | str | None = None
) -> Tensor:
    """(num_windows, M*M, M*M) boolean mask for shifted-window attention, True where a query may attend.

    After the cyclic shift ``torch.roll(x, (-s, -s))`` the windows on the bottom and right edges hold
    pixels that were far apart in the image (wrapped around). Label every pixel of the shifted map by
    the region it came from (3 bands of rows x 3 bands of columns); two tokens of one window may attend
    to each other only if they carry the same label.
    """
    require_divisible(height, width, window_size, unit="window size")
    if not 0 <= shift_size < window_size:
        raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}.")
    labels = torch.zeros(1, height, width, 1, device=device)
    if shift_size:
        bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
        for i, rows in enumerate(bands):
            for j, cols in enumerate(bands):
                labels[:, rows, cols, :] = 3 * i + j
    windows = window_partition(labels, window_size).flatten(1)  # (num_windows, M*M)
    return windows[:, :, None] == windows[:, None, :]


def relative_position_index(window_size: int) -> Tensor:
    """(M², M²) index into the (2M-1)² bias table: token i = (y_i, x_i) and token j of one window share an
    entry exactly when their offset (y_i - y_j, x_i - x_j), each in [-(M-1), M-1], is the same."""
    if window_size < 1:
        raise ValueError(f"window_size must be a positive integer, got {window_size}.")
    M = window_size
    y, x = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    y, x = y.flatten(), x.flatten()  # row-major tokens of a window
    dy, dx = y[:, None] - y[None, :] + M - 1, x[:, None] - x[None, :] + M - 1  # shifted to 0 .. 2M-2
    return dy * (2 * M - 1) + dx


class WindowSelfAttention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) map: global (``window_size=None``), within M x M
    windows (W-MSA), or within windows shifted by ``shift_size`` with the mask above (SW-MSA).

    ``relative_position_bias=True`` adds Swin's learned bias B (eq. 4: softmax(QKᵀ/√d + B)V): one scalar
    per head and per relative offset, (2M-1)² of them, shared by every window.
    Parameter names (``attn.qkv``, ``attn.proj``, ``relative_position_bias_table``) follow timm's Swin
    block, so weights copy over.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int | None = 7,
        shift_size: int = 0,
        relative_position_bias: bool = False,
    ):
        super().__init__()
        if window_size is None and (shift_size or relative_position_bias):
            raise ValueError(
                "global attention (window_size=None) has no windows to shift or to bias; use shift_size=0 "
                "and relative_position_bias=False."
            )
        if window_size is not None and not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}.")
        self.window_size, self.shift_size = window_size, shift_size
        self.attn = MultiHeadAttention(dim, num_heads)
        if relative_position_bias:
            M = window_size
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * M - 1) ** 2, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)  # as the Swin code does
            self.register_buffer("relative_position_index", relative_position_index(M), persistent=False)
        else:
            self.relative_position_bias_table = None

    def relative_bias(self) -> Tensor:
        """(heads, M², M²): the bias each head adds to the scores of every window."""
        M2 = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(M2, M2, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False) -> Tensor:
        """``mask`` and ``return_attention`` exist so that the module can replace the attention of
        ``common.blocks.TransformerBlock``; the window mask is built here, so they must stay unset."""
        if mask is not None or return_attention:
            raise ValueError("WindowSelfAttention builds its own mask and returns no weights; pass neither.")
        B, H, W, C = x.shape
        if self.window_size is None:  # every token attends to all H*W tokens: (HW)^2 scores per head
            return self.attn(x.reshape(B, H * W, C)).view(B, H, W, C)
        M, s = self.window_size, self.shift_size
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, M).flatten(1, 2)  # (B*nW, M*M, C): M^4 scores per window and head
        scores_mask = None
        if self.relative_position_bias_table is not None:  # a float mask is added to the scores
            scores_mask = self.relative_bias()[None].expand(windows.shape[0], -1, -1, -1)
        if s:
            # (nW, M², M²) repeated for each image (windows are batch-major), plus a heads axis.
            allowed = shifted_window_mask(H, W, M, s, device=x.device).repeat(B, 1, 1)[:, None]
            if scores_mask is None:
                scores_mask = allowed
            else:
                scores_mask = scores_mask.masked_fill(~allowed, float("-inf"))
        out = window_reverse(self.attn(windows, mask=scores_mask).view(-1, M, M, C), M, H, W)
        return torch.roll(out, shifts=(s, s), dims=(1, 2)) if s else out


class SwinBlock(TransformerBlock):
    """The course's pre-norm Transformer block with (shifted) window attention and the relative position
    bias: x = x + W-MSA(LN(x)); x = x + MLP(LN(x)), on a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, *, window_size: int = 7, shift_size: int = 0, mlp_ratio=4.0):
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio)
        self.attn = WindowSelfAttention(
            dim, num_heads, window_size=window_size, shift_size=shift_size, relative_position_bias=True
        )


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): concatenate each 2 x 2 neighbourhood (4C), LayerNorm, and a
    linear map to 2C — Swin's downsampling between stages, what makes the features a pyramid."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"PatchMerging expects (B, H, W, C) with even H and W, got {tuple(x.shape)}.")
        # the four pixels of each 2 x 2 block, in the order of the Swin code: (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinPatchEmbedding(PatchEmbedding):
    """``common.vit.PatchEmbedding`` followed by a LayerNorm, returned as a (B, H/p, W/p, D) map."""

    def __init__(self, img_size: int, patch_size: int = 4, *, in_chans: int = 3, embed_dim: int = 96):
        super().__init__(img_size, patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return self.norm(super().forward(x)).unflatten(1, (h, w))


class SwinStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[SwinBlock]):
        super().__init__()
        self.downsample, self.blocks = downsample, nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformer(nn.Module):
    """Hierarchical Swin: patch embedding, then stages of window-attention blocks (shifted every other
    block), each stage after the first opened by patch merging (half the side, twice the channels). The
    defaults are Swin-T; ``embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)`` is Swin-B.

    As in the Swin code (and timm), a stage whose map is no larger than the window uses one window covering
    it and no shift. Maps must divide by the window (the Swin code pads; this one raises).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"give one head count per stage: depths {depths}, num_heads {num_heads}.")
        self.patch_embed = SwinPatchEmbedding(img_size, patch_size, in_chans=in_chans, embed_dim=embed_dim)
        side, dim, stages, self.stage_config = img_size // patch_size, embed_dim, [], []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            downsample = nn.Identity()
            if i:
                if side % 2:
                    raise ValueError(
                        f"stage {i} would merge a {side}x{side} map; use an image side such that "
                        "every stage's map is even."
                    )
                downsample, side, dim = PatchMerging(dim), side // 2, 2 * dim
            window = min(window_size, side)
            shift = window_size // 2 if side > window_size else 0
            require_divisible(side, side, window, unit="window size")
            blocks = [
                SwinBlock(
                    dim, heads, window_size=window, shift_size=shift if j % 2 else 0, mlp_ratio=mlp_ratio
                )
                for j in range(depth)
            ]
            stages.append(SwinStage(downsample, blocks))
            self.stage_config.append(dict(side=side, dim=dim, heads=heads, depth=depth, window=window))
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The feature pyramid: one (B, H_i, W_i, C_i) map per stage (strides 4, 8, 16, 32 for patch 4)."""
        x, maps = self.patch_embed(x), []
        for stage in self.layers:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        features = self.norm(self.forward_stages(x)[-1])
        return self.head(features.mean(dim=(1, 2)))  # global average pool over the last map


def load_timm_weights(model: SwinTransformer, timm_model: nn.Module) -> SwinTransformer:
    """Copy a timm ``SwinTransformer``'s weights into ``model`` (same configuration): only the names differ
    (our attention wraps ``MultiHeadAttention``; timm's head is ``head.fc``). Strict: a missing or extra
    tensor raises."""
    renamed = {}
    for name, tensor in timm_model.state_dict().items():
        if name.endswith(("relative_position_index", "attn_mask")):
            continue  # buffers both sides compute
        name = name.replace(".attn.qkv.", ".attn.attn.qkv.").replace(".attn.proj.", ".attn.attn.proj.")
        renamed[name.replace("head.fc.", "head.")] = tensor
    model.load_state_dict(renamed, strict=True)
    return model


def attention_score_elements(model: SwinTransformer, batch: int = 1) -> int:
    """How many attention scores one forward pass computes, all blocks together (windows x heads x M⁴):
    what a non-fused kernel writes to memory, block after block."""
    return sum(
        batch * (c["side"] // c["window"]) ** 2 * c["heads"] * c["window"] ** 4 * c["depth"]
        for c in model.stage_config
    )


def global_attention_macs(height: int, width: int, dim: int) -> int:
    """Multiply-adds of global self-attention on an h x w map (Swin paper eq. 1): 4hwC² + 2(hw)²C.

    4hwC²: the q, k, v and output projections; 2(hw)²C: QKᵀ and the weighted sum of V.
    """
    return 4 * height * width * dim**2 + 2 * (height * width) ** 2 * dim


def window_attention_macs(height: int, width: int, dim: int, window_size: int) -> int:
    """Multiply-adds of M x M window self-attention (Swin paper eq. 2): 4hwC² + 2M²hwC, linear in hw."""
    return 4 * height * width * dim**2 + 2 * window_size**2 * height * width * dim
