"""Positional encodings: sinusoidal (1-D and 2-D), learned, linear and relative.

Public API
----------
- :func:`sinusoidal_encoding`, :func:`sincos_2d_encoding`, :class:`SinusoidalPositionalEncoding`,
  :class:`LearnedPositionalEmbedding`, :func:`linear_encoding`, :func:`sinusoidal_rotation`,
  :func:`relative_position_index`, :class:`RelativePositionBias`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sinusoidal_encoding(num_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al. (2017): PE[pos, 2i] = sin(pos / base^(2i/dim)), PE[pos, 2i+1] = cos(same).

    Returns a (num_positions, dim) tensor; ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}.")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # one frequency per pair
    pe = torch.zeros(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.float()


def sincos_2d_encoding(grid_h: int, grid_w: int, dim: int, base: float = 10000.0) -> Tensor:
    """2-D sin-cos encoding for a patch grid, the idea of MAE's fixed table: half the channels encode the row,
    half the column, each with :func:`sinusoidal_encoding` (sin/cos interleaved; MAE puts the column half
    first and blocks its sines before its cosines: the same set of channels in another order).
    Returns (grid_h * grid_w, dim) in row-major patch order; ``dim % 4 == 0``."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos encoding needs dim divisible by 4, got {dim}.")
    rows = sinusoidal_encoding(grid_h, dim // 2, base)  # (H, dim/2)
    cols = sinusoidal_encoding(grid_w, dim // 2, base)  # (W, dim/2)
    return torch.cat(
        [rows[:, None, :].expand(grid_h, grid_w, -1), cols[None, :, :].expand(grid_h, grid_w, -1)], dim=-1
    ).reshape(grid_h * grid_w, dim)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a (B, N, dim) input; no parameters, any length up to max_len."""

    def __init__(self, dim: int, max_len: int = 4096, *, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds max_len={self.pe.shape[0]}; raise max_len."
            )
        return self.dropout(x + self.pe[: x.shape[1]])


class LearnedPositionalEmbedding(nn.Module):
    """A trainable table of ``max_len`` position vectors (BERT/GPT-style); cannot go past max_len."""

    def __init__(self, dim: int, max_len: int, *, dropout: float = 0.0):
        super().__init__()
        self.table = nn.Embedding(max_len, dim)
        nn.init.normal_(self.table.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n > self.table.num_embeddings:
            raise ValueError(
                f"sequence length {n} exceeds the learned table (max_len={self.table.num_embeddings}); "
                "a learned table cannot extrapolate: use a sinusoidal encoding or a larger max_len."
            )
        return self.dropout(x + self.table.weight[:n])


def linear_encoding(
    num_positions: int, dim: int, max_len: int | None = None, *, single_channel: bool = False
) -> Tensor:
    """The naive encoding PE(pos) = pos / max_len, the same value in every channel: (num_positions, dim).

    One number per position: it orders positions but carries no multi-scale pattern, and its scale
    depends on ``max_len`` (default ``num_positions``). Added to every channel it is a per-token constant,
    which the next LayerNorm subtracts exactly; ``single_channel=True`` puts it in channel 0 only (zeros
    elsewhere), where LayerNorm cannot remove it.
    """
    max_len = num_positions if max_len is None else max_len
    if max_len < 1 or dim < 1:
        raise ValueError(f"need max_len >= 1 and dim >= 1, got max_len={max_len}, dim={dim}.")
    if single_channel:
        table = torch.zeros(num_positions, dim)
        table[:, 0] = torch.arange(num_positions, dtype=torch.float32) / max_len
        return table
    return (
        (torch.arange(num_positions, dtype=torch.float32) / max_len)[:, None]
        .expand(num_positions, dim)
        .clone()
    )


def sinusoidal_rotation(offset: float, dim: int, base: float = 10000.0) -> Tensor:
    """The (dim, dim) matrix R_k with PE(pos + k) = R_k @ PE(pos) for every pos (k = ``offset``).

    Each (sin, cos) pair of frequency w is rotated by the angle k·w:
        sin((p+k)w) =  cos(kw) sin(pw) + sin(kw) cos(pw)
        cos((p+k)w) = -sin(kw) sin(pw) + cos(kw) cos(pw)
    so R_k is block-diagonal, orthogonal, and depends on k only: relative offsets are linear maps.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}.")
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    cos, sin = torch.cos(offset * freq), torch.sin(offset * freq)
    rot = torch.zeros(dim, dim, dtype=torch.float64)
    even, odd = torch.arange(0, dim, 2), torch.arange(1, dim, 2)
    rot[even, even], rot[even, odd] = cos, sin
    rot[odd, even], rot[odd, odd] = -sin, cos
    return rot.float()


def relative_position_index(
    num_queries: int, num_keys: int | None = None, max_distance: int | None = None
) -> Tensor:
    """(num_queries, num_keys) integer offsets j - i from query i to key j, clipped to ±max_distance
    (Shaw et al., 2018): positions farther apart than ``max_distance`` share one bucket."""
    num_keys = num_queries if num_keys is None else num_keys
    offsets = torch.arange(num_keys)[None, :] - torch.arange(num_queries)[:, None]
    if max_distance is not None:
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}.")
        offsets = offsets.clamp(-max_distance, max_distance)
    return offsets


class RelativePositionBias(nn.Module):
    """A learned scalar bias per head and relative offset, added to the attention scores (T5-style,
    with Shaw et al.'s clipping instead of T5's log buckets).

    ``forward(n)`` returns a (num_heads, n, n) float tensor to pass as the ``mask`` of
    ``common.attention.MultiHeadAttention`` (float masks are added to the scores). The bias depends on
    j - i only, so the same table serves any sequence length: it extrapolates by construction.
    """

    def __init__(self, num_heads: int, max_distance: int):
        super().__init__()
        if num_heads < 1 or max_distance < 0:
            raise ValueError(
                f"need num_heads >= 1 and max_distance >= 0, got {num_heads} and {max_distance}."
            )
        self.max_distance = max_distance
        self.table = nn.Parameter(torch.zeros(2 * max_distance + 1, num_heads))  # starts position-blind

    def forward(self, n: int) -> Tensor:
        index = relative_position_index(n, max_distance=self.max_distance) + self.max_distance
        return self.table[index].permute(2, 0, 1)  # (n, n, heads) -> (heads, n, n)
