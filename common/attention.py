"""Attention from scratch: scaled dot-product attention step by step, masks, multi-head attention.

Mask convention (the same as ``torch.nn.functional.scaled_dot_product_attention``): a boolean mask
is ``True`` where a query MAY attend to a key; a float mask is added to the scores. Beware:
``nn.MultiheadAttention``'s boolean ``attn_mask`` and ``key_padding_mask`` mean the opposite (``True`` = blocked).

Public API
----------
- :func:`scaled_dot_product_attention`, :func:`causal_mask`, :func:`padding_mask`, :class:`MultiHeadAttention`.
- :func:`multi_head_attention`: multi-head self-attention as a function of its weights, in
  ``nn.MultiheadAttention``'s layout (lab 6.4 builds a block's forward pass from it).
- :func:`attention_layer_flops`: the FLOPs of :class:`MultiHeadAttention` on one sequence, as a formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    dropout: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / sqrt(d_k) + mask) V, written out in four steps.

    Shapes: ``q`` (..., n_q, d_k), ``k`` (..., n_k, d_k), ``v`` (..., n_k, d_v).
    Returns ``(output (..., n_q, d_v), weights (..., n_q, n_k))``; each row of weights sums to 1, unless
    ``dropout`` (applied to the returned weights too) is active.
    ``scale`` defaults to 1/sqrt(d_k); pass ``scale=1.0`` to see attention without scaling.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same last dimension d_k, got {q.shape[-1]} and {k.shape[-1]}.")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same number of positions, got {k.shape[-2]} and {v.shape[-2]}.")
    d_k = q.shape[-1]
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale

    scores = q @ k.transpose(-2, -1)  # step 1: similarity of every query with every key
    scores = scores * scale  # step 2: keep the scores' variance near 1 whatever d_k is
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)  # step 3: each query's scores -> probabilities over the keys
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights  # step 4: weighted average of the values


def causal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """(n, n) boolean mask: query i may attend to keys 0..i only (no peeking at the future)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: Tensor | list[int], max_len: int | None = None) -> Tensor:
    """(batch, 1, max_len) boolean key mask: True for real tokens, False for padding.

    The middle axis broadcasts over queries; add ``.unsqueeze(1)`` for a heads axis.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be a 1-D list of sequence lengths, got shape {tuple(lengths.shape)}.")
    max_len = int(lengths.max()) if max_len is None else max_len
    if int(lengths.max()) > max_len or int(lengths.min()) < 1:
        raise ValueError(f"every length must be in 1..max_len={max_len}, got {lengths.tolist()}.")
    return (torch.arange(max_len, device=lengths.device) < lengths[:, None])[:, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    Parameter names follow timm's ``Attention`` (``qkv``, ``proj``) and the QKV layout follows
    ``nn.MultiheadAttention.in_proj_weight`` ([W_q; W_k; W_v]), so weights copy over unchanged.
    With ``return_attention=False`` the fused ``F.scaled_dot_product_attention`` kernel is used;
    with ``return_attention=True`` the explicit path runs and the per-head weights are returned.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"embed dim {dim} is not divisible by num_heads {num_heads}; "
                f"choose num_heads among the divisors of {dim} or change the embed dim."
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_attention: bool = False):
        """``x`` (B, N, dim) -> (B, N, dim), plus weights (B, heads, N, N) if ``return_attention``."""
        B, N, C = x.shape
        # (B, N, 3*C) -> (3, B, heads, N, head_dim): split into q, k, v and then into heads.
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if return_attention:
            out, weights = scaled_dot_product_attention(
                q, k, v, mask=mask, scale=self.scale, dropout=self.attn_drop
            )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop.p if self.training else 0.0
            )
            weights = None
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))  # concat heads, mix
        return (out, weights) if return_attention else out


# ------------------------------------------------------------------------------ cost model and functional form
def attention_layer_flops(n: int, d: int) -> int:
    """FLOPs of :class:`MultiHeadAttention` (d) on one (1, n, d) sequence, a multiply-add counting 2 (as torch's
    FlopCounterMode does; biases and softmax are not counted): the fused QKV projection 6nd², the scores QKᵀ
    2n²d, the weighted sum 2n²d and the output projection 2nd², i.e. 8nd² + 4n²d whatever the number of heads."""
    return 2 * n * d * (3 * d) + 2 * n * n * d + 2 * n * n * d + 2 * n * d * d


def multi_head_attention(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    num_heads: int,
    mask: Tensor | None = None,
) -> Tensor:
    """Multi-head self-attention from its weights, the layout of ``nn.MultiheadAttention``: ``w_qkv`` (3d, d) =
    [W_q; W_k; W_v] (its ``in_proj_weight``), ``b_qkv`` (3d,), ``w_out`` (d, d), ``b_out`` (d,). ``x`` (B, N, d).
    ``mask`` follows this course's convention (boolean, ``True`` = may attend), broadcast to (B, heads, N, N)."""
    B, N, d = x.shape
    if d % num_heads:
        raise ValueError(f"d = {d} is not divisible by num_heads = {num_heads}.")
    d_k = d // num_heads
    q, k, v = F.linear(x, w_qkv, b_qkv).chunk(3, dim=-1)  # each (B, N, d)

    # (B, N, d) -> (B, heads, N, d_k): head h owns features h*d_k ... (h+1)*d_k - 1
    def split(t: Tensor) -> Tensor:
        return t.reshape(B, N, num_heads, d_k).transpose(1, 2)

    out, _ = scaled_dot_product_attention(split(q), split(k), split(v), mask=mask)  # scale 1/sqrt(d_k)
    return F.linear(out.transpose(1, 2).reshape(B, N, d), w_out, b_out)  # merge heads, then mix them
