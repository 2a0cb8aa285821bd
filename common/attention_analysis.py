"""Reading attention weights: how spread out a head is (entropy), how far it looks (mean distance; in pixels across a ViT's patch grid, :func:`patch_attention_distance`),
how different the heads of one layer are from each other (Jensen-Shannon diversity, and
:func:`max_head_diversity`, its bound when heads specialise on a few relations), and how much each token's final
state draws on each input token through all layers (attention rollout).

Every function takes attention weights shaped (..., n_queries, n_keys) whose rows are probability
distributions, e.g. the ``(B, heads, N, N)`` weights of ``MultiHeadAttention(..., return_attention=True)``;
:func:`attention_rollout` takes a list of them, one per layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_weights(weights: Tensor, min_dims: int = 2) -> Tensor:
    if weights.ndim < min_dims:
        raise ValueError(
            f"attention weights need at least {min_dims} dims (..., n_queries, n_keys), "
            f"got shape {tuple(weights.shape)}."
        )
    w = weights.detach().double()
    if (w < 0).any() or not torch.allclose(w.sum(-1), torch.ones((), dtype=w.dtype), atol=1e-4):
        raise ValueError(
            "attention weights must be non-negative with rows summing to 1 (softmax output); "
            "pass the weights, not the raw scores."
        )
    return w


def attention_entropy(weights: Tensor, normalize: bool = False) -> Tensor:
    """Shannon entropy (nats) of every query's distribution over the keys: shape (..., n_queries).

    0 = all weight on one key; ln(n_keys) = uniform. ``normalize=True`` divides by ln(n_keys) -> [0, 1].
    """
    w = _check_weights(weights)
    entropy = -(w * w.clamp_min(1e-300).log()).sum(-1)  # 0·log 0 = 0
    if normalize:
        n_keys = w.shape[-1]
        entropy = entropy / math.log(n_keys) if n_keys > 1 else torch.zeros_like(entropy)
    return entropy.to(weights.dtype)


def mean_attention_distance(weights: Tensor) -> Tensor:
    """Average |query position - key position| under the weights, over the queries: shape (...,).

    1 for a head that always looks at a neighbour, near n/3 for uniform attention over n positions.
    Needs self-attention weights (n_queries == n_keys, positions 0..n-1).
    """
    w = _check_weights(weights)
    n_q, n_k = w.shape[-2:]
    if n_q != n_k:
        raise ValueError(
            f"mean attention distance needs self-attention weights (n_queries == n_keys), "
            f"got {n_q} queries and {n_k} keys."
        )
    pos = torch.arange(n_q, dtype=w.dtype, device=w.device)
    distance = (pos[:, None] - pos[None, :]).abs()
    return (w * distance).sum(-1).mean(-1).to(weights.dtype)


def head_distance_matrix(weights: Tensor) -> Tensor:
    """(heads, heads) Jensen-Shannon distance (base 2, in [0, 1]) between every pair of heads.

    ``weights``: (heads, n_q, n_k) or (batch, heads, n_q, n_k). The distance between two heads is the
    JS distance sqrt(JSD) of their weight rows, averaged over queries (and batch).
    """
    w = _check_weights(weights, min_dims=3)
    if w.ndim == 3:
        w = w[None]
    if w.ndim != 4:
        raise ValueError(
            f"expected (heads, n_q, n_k) or (batch, heads, n_q, n_k), got shape {tuple(weights.shape)}."
        )
    p, q = w[:, :, None], w[:, None, :]  # (B, H, 1, n_q, n_k) against (B, 1, H, n_q, n_k)
    m = 0.5 * (p + q)

    def kl(a: Tensor, b: Tensor) -> Tensor:  # KL(a || b) in bits; terms with a = 0 contribute 0
        return torch.where(a > 0, a * (a.clamp_min(1e-300) / b.clamp_min(1e-300)).log2(), 0.0).sum(-1)

    jsd = (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp(0.0, 1.0)
    return jsd.sqrt().mean(dim=(0, 3)).to(weights.dtype)


def head_diversity(weights: Tensor) -> float:
    """Mean Jensen-Shannon distance over all pairs of different heads: 0 = all heads attend alike,
    1 = every pair of heads puts its weight on disjoint keys. Needs at least 2 heads."""
    d = head_distance_matrix(weights)
    h = d.shape[0]
    if h < 2:
        raise ValueError("head diversity compares heads with each other: pass weights of at least 2 heads.")
    return (d.sum() / (h * (h - 1))).item()  # the diagonal is 0


def max_head_diversity(num_heads: int, num_relations: int) -> float:
    """The largest head diversity (:func:`head_diversity`: the mean Jensen-Shannon distance
    over pairs of different heads) that ``num_heads`` heads can reach if each head implements one of
    ``num_relations`` relations, heads on the same relation attend alike (distance 0) and heads on different
    relations attend to disjoint keys (distance 1). Spreading the heads evenly over the relations maximises the
    share of pairs on different relations; with more heads than relations some heads must share one."""
    if num_heads < 2 or num_relations < 1:
        raise ValueError(
            f"diversity compares pairs of heads: need num_heads >= 2 and num_relations >= 1, "
            f"got {num_heads} and {num_relations}."
        )
    base, extra = divmod(num_heads, num_relations)
    sizes = [base + 1] * extra + [base] * (num_relations - extra)
    same = sum(g * (g - 1) for g in sizes)  # ordered pairs of different heads on the same relation
    return 1.0 - same / (num_heads * (num_heads - 1))


def attention_rollout(maps: list[Tensor], residual_weight: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): (B, T, T) = prod over layers of (w I + (1 - w) mean_heads(A)),
    rows renormalised; ``maps`` are per-layer weights (B, heads, T, T), first layer first. Row 0 of a ViT's
    rollout is a CLS-to-patch relevance map.

    The identity term stands for the residual connection, which carries each token's own state
    past every attention layer; the product follows information from the input to the last layer.
    """
    if not maps:
        raise ValueError("attention_rollout needs the weights of at least one layer.")
    rollout = None
    for weights in maps:
        a = weights.mean(dim=1)  # (B, T, T): average the heads
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual_weight * eye + (1 - residual_weight) * a
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def patch_attention_distance(
    maps: list[Tensor], grid_size: tuple[int, int], patch_size: int, num_prefix_tokens: int = 1
) -> Tensor:
    """The ViT paper's "mean attention distance" (Dosovitskiy et al., 2021, Fig. 7): for every layer and head,
    the image-space distance in pixels between a query patch and the patches it attends to, weighted by the
    attention and averaged over query patches and images. Shape (layers, heads).

    ``maps``: per-layer weights (B, heads, prefix + N, prefix + N) as ``VisionTransformer.get_attention_maps``
    returns them. The prefix (CLS) rows and columns are dropped and each patch row renormalised over the
    patches, since the CLS token has no place in the image. Uniform attention gives the grid's mean pairwise
    distance; a head that attends only to its own patch gives 0.
    """
    if not maps:
        raise ValueError("patch_attention_distance needs the weights of at least one layer.")
    rows, cols = grid_size
    n = rows * cols
    r, c = torch.arange(n) // cols, torch.arange(n) % cols
    pixels = torch.stack([r, c], -1).double() * patch_size
    distance = torch.cdist(pixels, pixels)  # (N, N) between patch centres
    out = []
    for weights in maps:
        w = _check_weights(weights, min_dims=4)
        if w.shape[-1] != num_prefix_tokens + n:
            raise ValueError(
                f"weights over {w.shape[-1]} tokens do not match {num_prefix_tokens} prefix tokens + a "
                f"{rows}x{cols} grid; pass the model's grid_size and num_prefix_tokens."
            )
        w = w[..., num_prefix_tokens:, num_prefix_tokens:]
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        out.append((w * distance.to(w.device)).sum(-1).mean(-1).mean(0))  # (heads,)
    return torch.stack(out).to(maps[0].dtype)
