"""Lab 6.6's exercises (encoder-decoder): the decoder's causal self-attention and cross-attention, one head each.

Self-checks: :func:`check_causal_self_attention` (exercise 1), :func:`check_cross_attention` (exercise 2); each
compares with torch's ``F.scaled_dot_product_attention`` and names the usual slip. The models' own layers are in
:mod:`common.seq2seq`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from common.exercises import Exercise


def _output(got: object, shape: tuple[int, ...]) -> Tensor:
    assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, f"the output should have shape {shape}, got {tuple(got.shape)}"
    return got.detach()


def _attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, scale: bool = True) -> Tensor:
    scores = q @ k.T / (math.sqrt(k.shape[-1]) if scale else 1.0)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def check_causal_self_attention(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> None:
    """Exercise 1: ``fn(x, w_q, w_k, w_v)`` must equal ``F.scaled_dot_product_attention(..., is_causal=True)`` on
    the projections, so that output i does not change when tokens after i do."""
    g = torch.Generator().manual_seed(3)
    x, w_q, w_k, w_v = (torch.randn(*s, generator=g) for s in ((6, 8), (8, 4), (8, 4), (8, 5)))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
    got = _output(fn(x.clone(), w_q, w_k, w_v), (6, 5))
    if torch.allclose(got, want, atol=1e-5):
        return
    if torch.isnan(got).any():
        raise AssertionError(
            "NaN in the output: a row whose keys are all masked has no softmax. Position i may read itself: "
            "keep the diagonal (torch.tril, not tril(diagonal=-1))"
        )
    tril = torch.ones(6, 6, dtype=torch.bool).tril()
    weights = (q @ k.T / 2.0).softmax(-1)
    slips = {
        "no causal mask: position i reads the tokens after it, which the decoder has not produced yet "
        "(mask scores with -inf above the diagonal)": _attend(q, k, v, None),
        "the mask is flipped: position i reads i and the future; allow keys 0..i (lower triangle, torch.tril)": _attend(
            q, k, v, tril.T
        ),
        "the mask was applied after the softmax: set the masked scores to -inf before it, so the allowed "
        "weights still sum to 1": (weights * tril) @ v,
        "you did not scale the scores: divide Q Kᵀ by sqrt(d_k) before the softmax": _attend(
            q, k, v, tril, False
        ),
    }
    for message, wrong in slips.items():
        if torch.allclose(got, wrong, atol=1e-5):
            raise AssertionError(message)
    x2 = x.clone()
    x2[4:] = torch.randn(2, 8, generator=g)
    if not torch.allclose(_output(fn(x2, w_q, w_k, w_v), (6, 5))[:4], got[:4], atol=1e-5):
        raise AssertionError("outputs 0..3 changed when only tokens 4 and 5 changed: the future leaks in")
    raise AssertionError(
        "differs from causal attention: softmax(Q Kᵀ / sqrt(d_k) masked above the diagonal) V"
    )


def check_cross_attention(fn: Callable[..., Tensor]) -> None:
    """Exercise 2: ``fn(y, memory, key_mask, w_q, w_k, w_v)`` must equal torch's SDPA with queries from ``y`` and
    keys/values from ``memory``, padded source positions masked out."""
    g = torch.Generator().manual_seed(4)
    y, memory = torch.randn(4, 8, generator=g), torch.randn(7, 8, generator=g)
    w_q, w_k, w_v = (torch.randn(8, s, generator=g) for s in (4, 4, 5))
    keep = torch.tensor([True] * 5 + [False] * 2)  # the last two source positions are padding
    memory[~keep] = 10 * torch.randn(2, 8, generator=g)  # loud padding: ignoring the mask shows
    q, k, v = y @ w_q, memory @ w_k, memory @ w_v
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=keep[None, None])[0]
    got = fn(y.clone(), memory.clone(), keep.clone(), w_q, w_k, w_v)
    if isinstance(got, Tensor) and tuple(got.shape) == (7, 5):
        raise AssertionError(
            "one output row per source position: the queries come from the encoder. In cross-attention the "
            "decoder asks (Q = y W_q) and the encoder's memory answers (K = memory W_k, V = memory W_v)"
        )
    got = _output(got, (4, 5))
    if torch.allclose(got, want, atol=1e-5):
        return
    if torch.isnan(got).any():
        raise AssertionError(
            "NaN in the output: a query row has every key masked. Cross-attention needs no causal mask "
            "(the whole source is known); mask only the padding"
        )
    slips = {
        "the padding mask is missing: padded source positions (key_mask False) must get weight 0": _attend(
            q, k, v, None
        ),
        "the padding mask is flipped: key_mask is True on real tokens, so block where it is False": _attend(
            q, k, v, ~keep[None, :]
        ),
        "a causal mask does not belong in cross-attention: the decoder may read the whole source": _attend(
            q, k, v, torch.ones(4, 7, dtype=torch.bool).tril() & keep[None, :]
        ),
        "you did not scale the scores: divide Q Kᵀ by sqrt(d_k) before the softmax": _attend(
            q, k, v, keep[None, :], False
        ),
        "keys and values come from the decoder (that is self-attention): K = memory W_k, V = memory W_v": _attend(
            q, y @ w_k, y @ w_v, None
        ),
    }
    for message, wrong in slips.items():
        if torch.allclose(got, wrong, atol=1e-5):
            raise AssertionError(message)
    raise AssertionError(
        "differs from cross-attention: softmax((y W_q)(memory W_k)ᵀ / sqrt(d_k), padding masked) (memory W_v)"
    )


### BEGIN SOLUTION
def reference_causal_self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> Tensor:
    """The decoder's masked self-attention, one head: ``x`` (T, d) -> (T, d_v), position i reads 0..i only."""
    queries, keys, values = x @ w_q, x @ w_k, x @ w_v
    scores = queries @ keys.T / math.sqrt(keys.shape[-1])
    allowed = torch.ones(len(x), len(x), dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ values


def reference_cross_attention(
    y: Tensor, memory: Tensor, key_mask: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor
) -> Tensor:
    """Cross-attention, one head: queries from the decoder states ``y`` (T, d), keys and values from the
    encoder's ``memory`` (S, d); ``key_mask`` (S,) is True on real source tokens. Returns (T, d_v)."""
    queries, keys, values = y @ w_q, memory @ w_k, memory @ w_v
    scores = queries @ keys.T / math.sqrt(keys.shape[-1])
    return scores.masked_fill(~key_mask[None, :], float("-inf")).softmax(-1) @ values


### END SOLUTION


### BEGIN HIDDEN TESTS
def _lab_6_6_shape(got: object) -> object:
    return tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__


def _causal_sizes(ns: dict) -> None:
    # one token (it reads itself only) and a longer sequence with wider keys, against torch's causal SDPA
    g = torch.Generator().manual_seed(31)
    for t, d, d_k, d_v in ((1, 8, 4, 5), (11, 6, 16, 3)):
        x, w_q, w_k, w_v = (torch.randn(*s, generator=g) for s in ((t, d), (d, d_k), (d, d_k), (d, d_v)))
        expected = F.scaled_dot_product_attention(
            (x @ w_q)[None], (x @ w_k)[None], (x @ w_v)[None], is_causal=True
        )[0]
        got = ns["my_causal_self_attention"](x, w_q, w_k, w_v)
        assert isinstance(got, Tensor) and tuple(got.shape) == (t, d_v), (
            f"T={t}, d_v={d_v}: return a ({t}, {d_v}) tensor, got {_lab_6_6_shape(got)}"
        )
        assert torch.allclose(got.detach(), expected, atol=1e-5), (
            f"T={t}, d_k={d_k}: differs from causal attention; build the mask from the input's length "
            "(torch.ones(T, T, dtype=torch.bool).tril() with T = len(x)) and scale by sqrt(d_k) = sqrt(k.shape[-1])"
        )


def _causal_gradients(ns: dict) -> None:
    # output 0 reads token 0 only: no gradient may reach the tokens after it
    g = torch.Generator().manual_seed(32)
    x = torch.randn(5, 8, generator=g, requires_grad=True)
    w_q, w_k, w_v = (torch.randn(8, 4, generator=g) for _ in range(3))
    out = ns["my_causal_self_attention"](x, w_q, w_k, w_v)
    assert isinstance(out, Tensor) and out.requires_grad, (
        "gradients must flow back to x: use torch ops throughout"
    )
    out[0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), (
        "the gradient with respect to x must be finite"
    )
    assert torch.all(x.grad[1:] == 0), (
        "output 0 has a gradient from tokens 1..4: the future reaches it; mask the scores with -inf before the softmax"
    )


def _cross_sizes(ns: dict) -> None:
    # one query, no padding at all, and more queries than source positions, against torch's SDPA with the mask
    g = torch.Generator().manual_seed(33)
    for t, s, real, d_k, d_v in ((1, 3, 2, 4, 5), (6, 6, 6, 8, 2), (9, 4, 3, 4, 4)):
        y, memory = torch.randn(t, 8, generator=g), torch.randn(s, 8, generator=g)
        w_q, w_k, w_v = (torch.randn(8, n, generator=g) for n in (d_k, d_k, d_v))
        keep = torch.arange(s) < real
        expected = F.scaled_dot_product_attention(
            (y @ w_q)[None], (memory @ w_k)[None], (memory @ w_v)[None], attn_mask=keep[None, None]
        )[0]
        got = ns["my_cross_attention"](y, memory, keep, w_q, w_k, w_v)
        assert isinstance(got, Tensor) and tuple(got.shape) == (t, d_v), (
            f"T={t} decoder states, S={s} source positions: return a ({t}, {d_v}) tensor, got "
            f"{_lab_6_6_shape(got)}"
        )
        assert torch.allclose(got.detach(), expected, atol=1e-5), (
            f"T={t}, S={s} ({s - real} padded): differs from cross-attention; take the sizes from the inputs "
            "(the mask is key_mask[None, :], broadcast over the T queries) and scale by sqrt(d_k)"
        )


def _padding_gets_no_gradient(ns: dict) -> None:
    g = torch.Generator().manual_seed(34)
    y = torch.randn(3, 8, generator=g)
    memory = torch.randn(6, 8, generator=g, requires_grad=True)
    w_q, w_k, w_v = (torch.randn(8, 4, generator=g) for _ in range(3))
    keep = torch.tensor([True, True, True, True, False, False])
    out = ns["my_cross_attention"](y, memory, keep, w_q, w_k, w_v)
    assert isinstance(out, Tensor) and out.requires_grad, (
        "gradients must flow back to the memory: use torch ops throughout"
    )
    out.sum().backward()
    assert memory.grad is not None and torch.isfinite(memory.grad).all(), "the gradient must be finite"
    assert torch.all(memory.grad[~keep] == 0), (
        "the padded source positions get a gradient, so they reach the output: mask their scores with -inf before "
        "the softmax"
    )


GRADING = (
    Exercise(
        "lab6.6-ex1",
        "Exercise 1: causal self-attention",
        ("my_causal_self_attention",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_causal_self_attention(ns["my_causal_self_attention"])),
            ("other lengths and widths", _causal_sizes),
            ("no gradient from the future", _causal_gradients),
        ),
    ),
    Exercise(
        "lab6.6-ex2",
        "Exercise 2: cross-attention",
        ("my_cross_attention",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_cross_attention(ns["my_cross_attention"])),
            ("other lengths and paddings", _cross_sizes),
            ("no gradient into the padding", _padding_gets_no_gradient),
        ),
    ),
)
### END HIDDEN TESTS
