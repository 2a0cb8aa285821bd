"""Swin's window attention from scratch: window partition/reverse, the shifted-window mask, and
the cost of global vs window self-attention (Liu et al., 2021, "Swin Transformer", eqs. 1-2).

Layout follows timm's ``swin_transformer``: feature maps are channels-last ``(B, H, W, C)`` and
windows are ``(B * num_windows, M, M, C)``, batch-major, windows in row-major order.
The relative position bias of the real Swin block is left out: it changes no shape and no cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from common.attention import MultiHeadAttention
from common.vit import check_divisible


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B * H/M * W/M, M, M, C): cut the map into non-overlapping M x M windows."""
    if x.ndim != 4:
        raise ValueError(f"window_partition expects (B, H, W, C), got shape {tuple(x.shape)}.")
    B, H, W, C = x.shape
    check_divisible(H, W, window_size, unit="window size")
    M = window_size
    # Split H into (H/M, M) and W into (W/M, M), then bring the two window-index axes together.
    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, M, M, C)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, M, M, C) -> (B, H, W, C)."""
    check_divisible(height, width, window_size, unit="window size")
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
    check_divisible(height, width, window_size, unit="window size")
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


class WindowSelfAttention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) map: global (``window_size=None``), within M x M
    windows (W-MSA), or within windows shifted by ``shift_size`` with the mask above (SW-MSA).

    Parameter names (``attn.qkv``, ``attn.proj``) follow timm's Swin block, so weights copy over.
    """

    def __init__(self, dim: int, num_heads: int, *, window_size: int | None = 7, shift_size: int = 0):
        super().__init__()
        if window_size is None and shift_size:
            raise ValueError("global attention (window_size=None) has no windows to shift; use shift_size=0.")
        if window_size is not None and not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}.")
        self.window_size, self.shift_size = window_size, shift_size
        self.attn = MultiHeadAttention(dim, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        if self.window_size is None:  # every token attends to all H*W tokens: (HW)^2 scores per head
            return self.attn(x.reshape(B, H * W, C)).view(B, H, W, C)
        M, s = self.window_size, self.shift_size
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, M).flatten(1, 2)  # (B*nW, M*M, C): M^4 scores per window and head
        mask = None
        if s:
            # (nW, M², M²) repeated for each image (windows are batch-major), plus a heads axis.
            mask = shifted_window_mask(H, W, M, s, device=x.device).repeat(B, 1, 1)[:, None]
        out = window_reverse(self.attn(windows, mask=mask).view(-1, M, M, C), M, H, W)
        return torch.roll(out, shifts=(s, s), dims=(1, 2)) if s else out


def global_attention_macs(height: int, width: int, dim: int) -> int:
    """Multiply-adds of global self-attention on an h x w map (Swin paper eq. 1): 4hwC² + 2(hw)²C.

    4hwC²: the q, k, v and output projections; 2(hw)²C: QKᵀ and the weighted sum of V.
    """
    return 4 * height * width * dim**2 + 2 * (height * width) ** 2 * dim


def window_attention_macs(height: int, width: int, dim: int, window_size: int) -> int:
    """Multiply-adds of M x M window self-attention (Swin paper eq. 2): 4hwC² + 2M²hwC, linear in hw."""
    return 4 * height * width * dim**2 + 2 * window_size**2 * height * width * dim


def check_window_partition(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Exercise: ``fn(x, M)`` must equal :func:`window_partition` on a batch of two non-square maps (so
    row- and column-major window orders differ); the message names the usual slip."""
    B, H, W, C, M = 2, 14, 21, 3, 7
    x = torch.arange(B * H * W * C, dtype=torch.float32).view(B, H, W, C)
    got, want = fn(x.clone(), M), window_partition(x, M)
    assert isinstance(got, Tensor) and got.shape == want.shape, (
        f"expected shape {tuple(want.shape)} = (B * H/M * W/M, M, M, C), got "
        f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
    )
    if torch.equal(got, want):
        return
    blocks = x.view(B, H // M, M, W // M, M, C)  # (B, row of windows, y, column of windows, x, C)
    strips = x.reshape(-1, M, M, C)
    slips = [
        (
            strips,
            "a reshape alone cuts the map into strips of rows, not M x M blocks: split H into (H/M, M) and "
            "W into (W/M, M), then permute the two window-index axes before the two pixel axes",
        ),
        (
            blocks.permute(0, 3, 1, 2, 4, 5),
            "the windows come column by column; Swin and timm number them row by row: permute(0, 1, 3, 2, 4, 5)",
        ),
        (
            blocks.permute(0, 1, 3, 4, 2, 5),
            "each window is transposed: keep its rows before its columns, permute(0, 1, 3, 2, 4, 5)",
        ),
        (
            blocks.permute(1, 3, 0, 2, 4, 5),
            "the windows are grouped by position across the batch; keep the batch axis first (all the "
            "windows of image 0, then those of image 1)",
        ),
    ]
    for wrong, message in slips:
        if torch.equal(got, wrong.reshape(-1, M, M, C)):
            raise AssertionError(message)
    raise AssertionError(
        "the windows differ from common.swin.window_partition: window k = b*(H/M)*(W/M) + i*(W/M) + j must "
        "hold x[b, i*M:(i+1)*M, j*M:(j+1)*M]"
    )
