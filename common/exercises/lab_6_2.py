"""Lab 6.2's exercises (self-attention and multi-head attention): multi-head attention from its weights, the FLOPs
of an attention layer, the largest diversity of heads that specialise on a few relations.

Self-checks: :func:`check_multi_head_attention`, :func:`check_attention_layer_flops`,
:func:`check_max_head_diversity`. Their references are concepts that the checks use, so they stay in their modules
(and the block below has none): :func:`common.attention.multi_head_attention` (lab 6.4 builds a block with it),
:func:`common.attention.attention_layer_flops` (tested against torch's flop counter) and
:func:`common.attention_analysis.max_head_diversity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.attention import (
    MultiHeadAttention,
    attention_layer_flops,
    causal_mask,
    scaled_dot_product_attention,
)
from common.attention_analysis import max_head_diversity
from common.benchmark import count_flops
from common.exercises import Exercise
from common.exercises.common_mistakes import returned_tensor


def check_multi_head_attention(fn: Callable[..., Tensor]) -> None:
    """Exercise 1: ``fn(x, w_qkv, b_qkv, w_out, b_out, num_heads, mask=None)`` must equal
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
            got = returned_tensor(fn(x, *weights, h, mask=m), want.shape)
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


def check_attention_layer_flops(fn: Callable[[int, int], int]) -> None:
    """Exercise 2: ``fn(n, d)`` must equal :func:`common.attention.attention_layer_flops` (which the tests check
    against torch's FlopCounterMode on :class:`common.attention.MultiHeadAttention`)."""
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


def check_max_head_diversity(fn: Callable[[int, int], float]) -> None:
    """Exercise 3: ``fn(num_heads, num_relations)`` must equal
    :func:`common.attention_analysis.max_head_diversity`."""
    for heads, relations in ((2, 3), (3, 3), (4, 3), (8, 3), (7, 3), (6, 2), (5, 5)):
        got, want = float(fn(heads, relations)), max_head_diversity(heads, relations)
        if math.isclose(got, want, abs_tol=1e-9):
            continue
        if heads > relations and math.isclose(got, 1.0):
            raise AssertionError(
                f"{heads} heads, {relations} relations: some heads must share a relation (pigeonhole), and a pair on "
                "the same relation has distance 0, so the diversity is below 1"
            )
        base, extra = divmod(heads, relations)
        sizes = [base + 1] * extra + [base] * (relations - extra)
        if math.isclose(got, 1 - sum(s * s for s in sizes) / heads**2):
            raise AssertionError(
                "average over pairs of *different* heads, heads·(heads-1) ordered pairs (as head_diversity does), "
                "not over all heads² pairs"
            )
        lumped = [heads - relations + 1] + [1] * (relations - 1)
        if math.isclose(got, 1 - sum(s * (s - 1) for s in lumped) / (heads * (heads - 1))):
            raise AssertionError(
                "spread the heads as evenly as possible over the relations: that maximises the pairs on different relations"
            )
        raise AssertionError(f"{heads} heads, {relations} relations: expected {want:.4f}, got {got:.4f}")


### BEGIN SOLUTION
# None of its own: the references are the concepts named in the module's docstring, which the checks use.
### END SOLUTION


### BEGIN HIDDEN TESTS
def _torch_mha(d: int, heads: int, seed: int) -> tuple[nn.MultiheadAttention, tuple[Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    mha = nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        for weight in mha.parameters():
            weight.copy_(0.5 * torch.randn(weight.shape, generator=generator))
    return mha, tuple(
        t.detach() for t in (mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
    )


def _mha_other_sizes(ns: dict) -> None:
    # d = 12 in 4 heads of d_k = 3 (the self-check has d_k = 4), 3 sequences of 6, and one head of width 12
    for d, h in ((12, 4), (12, 1)):
        mha, weights = _torch_mha(d, h, seed=21)
        x = torch.randn(3, 6, d, generator=torch.Generator().manual_seed(22))
        with torch.no_grad():
            want = mha(x, x, x, need_weights=False)[0]
            got = returned_tensor(ns["my_multi_head_attention"](x, *weights, h), (3, 6, d))
        assert torch.allclose(got, want, atol=1e-5), (
            f"d = {d}, {h} head(s): differs from nn.MultiheadAttention; take d and d_k = d / num_heads from the "
            "inputs, not from the self-check's sizes"
        )


def _mha_padding_mask(ns: dict) -> None:
    # a (B, 1, 1, N) padding mask (common.attention.padding_mask(...)[:, None]) must broadcast over heads and queries
    mha, weights = _torch_mha(8, 2, seed=23)
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(24))
    keep = (torch.arange(6) < torch.tensor([6, 4, 2])[:, None])[:, None, None, :]  # True = a real token
    with torch.no_grad():
        want = mha(x, x, x, key_padding_mask=~keep[:, 0, 0], need_weights=False)[0]  # torch: True = padding
        try:
            got = ns["my_multi_head_attention"](x, *weights, 2, mask=keep)
        except RuntimeError as err:
            raise AssertionError(
                f"a (B, 1, 1, N) padding mask raised {err}: use the mask as given, it broadcasts against the "
                "(B, heads, N, N) scores (do not reshape it to (N, N))"
            ) from None
        got = returned_tensor(got, (3, 6, 8))
    assert torch.allclose(got, want, atol=1e-5), (
        "with a (B, 1, 1, N) padding mask: differs from nn.MultiheadAttention's key_padding_mask; let the mask "
        "broadcast against the (B, heads, N, N) scores and set the blocked ones to -inf"
    )


def _flops_exact_at_other_sizes(ns: dict) -> None:
    # torch's flop counter at a size the self-check does not use, then 8nd² + 4n²d in integers at a long sequence
    n, d = 20, 48
    counted = count_flops(MultiHeadAttention(d, 3), torch.randn(1, n, d), return_attention=True)
    got = ns["my_attention_layer_flops"](n, d)
    assert got == counted, f"n={n}, d={d}: torch's flop counter counts {counted:,} FLOPs, got {got:,}"
    n, d = 999_999, 12_345
    got = ns["my_attention_layer_flops"](n, d)
    assert got == 8 * n * d * d + 4 * n * n * d, (
        f"n={n:,}, d={d:,}: expected exactly {8 * n * d * d + 4 * n * n * d:,}, got {got!r}; count with integers "
        "(no / or floats: a float has 53 bits and rounds counts this large)"
    )


def _group_sizes(total: int, parts: int):
    # every way of giving `total` heads to `parts` relations, as the number of heads on each relation
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _group_sizes(total - first, parts - 1):
            yield (first, *rest)


def _diversity_other_counts(ns: dict) -> None:
    # the best of every assignment of heads to relations: ordered pairs of different heads on one relation score 0
    for heads, relations in ((4, 1), (9, 1), (3, 7), (10, 4), (9, 5)):
        want = max(
            1 - sum(s * (s - 1) for s in sizes) / (heads * (heads - 1))
            for sizes in _group_sizes(heads, relations)
        )
        got = float(ns["my_max_head_diversity"](heads, relations))
        assert math.isclose(got, want, abs_tol=1e-9), (
            f"{heads} heads, {relations} relation(s): expected {want:.4f}, got {got:.4f}"
            + ("; with one relation every pair of heads attends alike" if relations == 1 else "")
        )


GRADING = (
    Exercise(
        "lab6.2-ex1",
        "Exercise 1: multi-head attention",
        ("my_multi_head_attention",),
        points=3,
        cases=(
            ("self-check", lambda ns: check_multi_head_attention(ns["my_multi_head_attention"])),
            ("other sizes", _mha_other_sizes),
            ("a padding mask", _mha_padding_mask),
        ),
    ),
    Exercise(
        "lab6.2-ex2",
        "Exercise 2: attention FLOPs",
        ("my_attention_layer_flops",),
        points=1,
        cases=(
            ("self-check", lambda ns: check_attention_layer_flops(ns["my_attention_layer_flops"])),
            ("exact at other sizes", _flops_exact_at_other_sizes),
        ),
    ),
    Exercise(
        "lab6.2-ex3",
        "Exercise 3: maximal head diversity",
        ("my_max_head_diversity",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_max_head_diversity(ns["my_max_head_diversity"])),
            ("other numbers of heads and relations", _diversity_other_counts),
        ),
    ),
)
### END HIDDEN TESTS
