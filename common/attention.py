"""Attention from scratch: scaled dot-product attention step by step, masks, multi-head attention.

Mask convention (the same as ``torch.nn.functional.scaled_dot_product_attention``): a boolean mask
is ``True`` where a query MAY attend to a key; a float mask is added to the scores. Beware:
``nn.MultiheadAttention``'s boolean ``attn_mask`` and ``key_padding_mask`` mean the opposite (``True`` = blocked).

Public API
----------
- :func:`scaled_dot_product_attention`, :func:`causal_mask`, :func:`padding_mask`, :class:`MultiHeadAttention`.
- Small functions that are also the reference solutions of lab 6.2's exercises: :func:`self_attention`,
  :func:`multi_head_attention` (from weights in ``nn.MultiheadAttention``'s layout, checked by
  :func:`check_multi_head_attention`),
  :func:`attention_layer_flops` (lab 6.2's exercise 3 lives with ``head_diversity`` in
  ``common.attention_analysis``).
- Lab 6.2's self-checks :func:`check_self_attention`, :func:`check_attention_layer_flops` (moving to
  ``common.exercises.lab_6_2``); lab 6.1's are in ``common.exercises.lab_6_1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


# ------------------------------------------------------------------------------ small reference functions
def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> Tensor:
    """Single-head self-attention of ``x`` (n, d) with projections (d, d_k), (d, d_k), (d, d_v): (n, d_v)."""
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)[0]


def attention_layer_flops(n: int, d: int) -> int:
    """FLOPs of :class:`MultiHeadAttention` (d) on one (1, n, d) sequence, a multiply-add counting 2 (as torch's
    FlopCounterMode does; biases and softmax are not counted): the fused QKV projection 6nd², the scores QKᵀ
    2n²d, the weighted sum 2n²d and the output projection 2nd², i.e. 8nd² + 4n²d whatever the number of heads."""
    return 2 * n * d * (3 * d) + 2 * n * n * d + 2 * n * n * d + 2 * n * d * d


# ------------------------------------------------------------------------------------------ exercise checks
def _returned(got: object, shape: tuple[int, ...]) -> Tensor:
    if isinstance(got, tuple):
        raise AssertionError(
            "return the output tensor only (the weighted values), not a tuple such as (output, weights)"
        )
    assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, f"the output should have shape {shape}, got {tuple(got.shape)}"
    return got


def _explain_attention_mistake(got: Tensor, q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
    """Raise an AssertionError naming the usual slip if ``got`` equals one; otherwise a generic one."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1)
    slips = {
        "you did not scale the scores: divide Q Kᵀ by sqrt(d_k) before the softmax": scores.softmax(-1) @ v,
        "you divided by d_k; divide by sqrt(d_k)": (scores / d_k).softmax(-1) @ v,
        "the softmax runs over the wrong axis: normalise over the keys (dim=-1), so that each query's weights "
        "sum to 1": (scores / math.sqrt(d_k)).softmax(-2) @ v,
    }
    for message, wrong in slips.items():
        if torch.allclose(got, wrong, atol=1e-5):
            raise AssertionError(message)
    raise AssertionError(
        f"the values differ from {name}: scores Q Kᵀ, divide by sqrt(d_k), softmax over the keys, times V"
    )


def check_self_attention(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> None:
    """Lab 6.2, exercise 1: ``fn(x, w_q, w_k, w_v)`` must equal torch's SDPA on the projected inputs."""
    g = torch.Generator().manual_seed(1)
    x, w_q, w_k, w_v = (torch.randn(*s, generator=g) for s in ((5, 8), (8, 4), (8, 4), (8, 3)))
    got = _returned(fn(x.clone(), w_q.clone(), w_k.clone(), w_v.clone()), (5, 3))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    if torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-5):
        return
    if torch.allclose(got, (q @ k.T / math.sqrt(x.shape[-1])).softmax(-1) @ v, atol=1e-5):
        raise AssertionError(
            "you divided by sqrt of the input width d = 8; divide by sqrt(d_k) = 4, the width of the projected "
            "queries and keys (w_q.shape[1])"
        )
    _explain_attention_mistake(got, q, k, v, "F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)")


def check_attention_layer_flops(fn: Callable[[int, int], int]) -> None:
    """Lab 6.2, exercise 2: ``fn(n, d)`` must equal :func:`attention_layer_flops` (which the tests check against
    torch's FlopCounterMode on :class:`MultiHeadAttention`)."""
    for n, d in ((8, 16), (50, 32), (7, 64), (1, 8)):
        got, want = fn(n, d), attention_layer_flops(n, d)
        if got == want:
            continue
        mult_add = "a multiply-add counts 2 FLOPs: a product of (m, k) and (k, p) matrices costs 2mkp"
        slips = (
            (4 * n * d * d + 2 * n * n * d, mult_add),
            (6 * n * d * d + 4 * n * n * d, "you left out the output projection W_O (d -> d): 2nd² more"),
            (8 * n * d * d + 2 * n * n * d, "there are two n² products, Q Kᵀ and weights · V, each 2n²d"),
            (2 * n * d * d + 4 * n * n * d, "the fused QKV projection maps d -> 3d: 6nd², not 2nd²"),
            (4 * n * n * d, "count the projections too (QKV and output: 8nd²), not just the n² part"),
        )
        for wrong, message in slips:
            if got == wrong:
                raise AssertionError(message)
        raise AssertionError(f"n={n}, d={d}: expected {want:,} FLOPs, got {got:,}")


# ---------------------------------------------------------------- lab 6.2's exercise 1: multi-head attention
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


def check_multi_head_attention(fn: Callable[..., Tensor]) -> None:
    """Lab 6.2, exercise 1: ``fn(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None)`` must equal
    ``torch.nn.MultiheadAttention`` loaded with the same weights, without a mask and with a causal one. The
    usual mistakes (scale, head split, merge, mask convention, output projection) are named."""
    g = torch.Generator().manual_seed(0)
    B, N, d, h = 2, 5, 8, 2
    x = torch.randn(B, N, d, generator=g)
    mha = nn.MultiheadAttention(d, h, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    weights = (
        mha.in_proj_weight.detach(),
        mha.in_proj_bias.detach(),
        mha.out_proj.weight.detach(),
        mha.out_proj.bias.detach(),
    )
    w_qkv, b_qkv, w_out, b_out = weights
    mask = causal_mask(N)
    q, k, v = F.linear(x, w_qkv, b_qkv).chunk(3, dim=-1)

    def heads(t, wrong_split=False):
        return t.reshape(B, h, N, d // h) if wrong_split else t.reshape(B, N, h, d // h).transpose(1, 2)

    def variant(mask_, scale=None, wrong_split=False, wrong_merge=False, project=True):
        out, _ = scaled_dot_product_attention(
            heads(q, wrong_split), heads(k, wrong_split), heads(v, wrong_split), mask=mask_, scale=scale
        )
        merged = out.reshape(B, N, d) if wrong_merge else out.transpose(1, 2).reshape(B, N, d)
        return F.linear(merged, w_out, b_out) if project else merged

    for label, m in (("without a mask", None), ("with a causal mask (True = may attend)", mask)):
        with torch.no_grad():
            # nn.MultiheadAttention's boolean attn_mask means the opposite: True = blocked
            want = mha(x, x, x, attn_mask=None if m is None else ~m, need_weights=False)[0]
            got = _returned(fn(x, *weights, h, mask=m), want.shape)
        if torch.allclose(got, want, atol=1e-5):
            continue
        slips = [
            (
                variant(m, scale=1 / math.sqrt(d)),
                "you scaled by 1/sqrt(d_model); each head's scores use its own "
                "width: divide by sqrt(d_k) = sqrt(d_model / num_heads)",
            ),
            (variant(m, scale=1.0), "the scores are not scaled; divide Q Kᵀ by sqrt(d_k)"),
            (
                variant(m, wrong_split=True),
                "heads split with reshape(B, heads, N, d_k) directly: that mixes positions; "
                "reshape to (B, N, heads, d_k), then transpose(1, 2)",
            ),
            (
                variant(m, wrong_merge=True),
                "heads merged with reshape(B, N, d) on a (B, heads, N, d_k) tensor: "
                "transpose(1, 2) back to (B, N, heads, d_k) first",
            ),
            (
                variant(m, project=False),
                "the heads were concatenated but not mixed: apply the output projection (w_out, b_out)",
            ),
        ]
        if m is not None:
            slips.append(
                (
                    variant(~m),
                    "mask inverted: in this course (and F.scaled_dot_product_attention) "
                    "True means 'may attend'; nn.MultiheadAttention's boolean attn_mask means 'blocked'",
                )
            )
            slips.append(
                (variant(None), "the mask was ignored: set the blocked scores to -inf before softmax")
            )
        for wrong, message in slips:  # equal_nan: an inverted causal mask blocks a whole row
            if torch.allclose(got, wrong, atol=1e-5, equal_nan=True):
                raise AssertionError(f"{label}: {message}")
        raise AssertionError(
            f"{label}: the output differs from nn.MultiheadAttention by up to {(got - want).abs().max():.3g}"
        )
