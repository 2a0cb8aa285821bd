"""Lab 6.1's exercises (attention basics): write attention, predict a word's attention, a softmax temperature.

Self-checks: :func:`check_attention`, :func:`check_attention_prediction` (with :func:`most_attended_word`, which
the check needs to name the right answer), :func:`check_softmax_with_temperature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from common.attention import scaled_dot_product_attention
from common.exercises import Exercise
from common.exercises.common_mistakes import explain_attention_mistake, returned_tensor


def most_attended_word(tokens: Sequence[str], queries: Tensor, keys: Tensor, *, word: str) -> str:
    """The token that ``word`` (its first occurrence) gives the largest weight in softmax(Q Kᵀ / sqrt(d_k))."""
    _, weights = scaled_dot_product_attention(queries, keys, keys)
    return tokens[int(weights[list(tokens).index(word)].argmax())]


def check_attention(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Exercise 1: ``fn(q, k, v)`` must equal ``torch.nn.functional.scaled_dot_product_attention``."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(2, 5, 8, generator=g),
        torch.randn(2, 7, 8, generator=g),
        torch.randn(2, 7, 3, generator=g),
    )
    got = returned_tensor(fn(q.clone(), k.clone(), v.clone()), (2, 5, 3))
    if not torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-5):
        explain_attention_mistake(got, q, k, v, "torch's F.scaled_dot_product_attention")


def check_attention_prediction(
    prediction: str | None, tokens: Sequence[str], queries: Tensor, keys: Tensor, *, word: str = "dog"
) -> None:
    """Exercise 2: ``prediction`` must be the word that ``word`` attends to most (a word tied with it counts too)
    in softmax(queries keysᵀ / sqrt(d_k)); raises NotImplementedError while it is None."""
    if prediction is None:
        raise NotImplementedError
    tokens = list(tokens)
    assert word in tokens, f"the check looks at '{word}': put '{word}' in your sentence"
    assert prediction in tokens, f"predict a word of your sentence {tokens}, got '{prediction}'"
    _, weights = scaled_dot_product_attention(queries, keys, keys)
    row = weights[tokens.index(word)]
    actual = most_attended_word(tokens, queries, keys, word=word)
    got = max(float(row[j]) for j, t in enumerate(tokens) if t == prediction)
    if got < float(row.max()) - 1e-6:
        raise AssertionError(
            f"'{word}' attends most to '{actual}' ({float(row.max()):.2f}); '{prediction}' gets {got:.2f}. "
            f"Which features does W_Q make '{word}' look for, and which words of the sentence have them?"
        )


def check_softmax_with_temperature(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Exercise 3: ``fn(scores, tau)`` must equal softmax(scores / tau) over the last axis, and tau = sqrt(d_k)
    must give the weights of :func:`common.attention.scaled_dot_product_attention`."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(10, 12, generator=g) * 5
    for tau in (0.5, 1.0, 2.0, 8.0):
        got = fn(scores.clone(), tau)
        assert isinstance(got, Tensor) and got.shape == scores.shape, (
            f"return weights of the scores' shape {tuple(scores.shape)}"
        )
        if torch.allclose(got, torch.softmax(scores / tau, dim=-1), atol=1e-6):
            continue
        if torch.allclose(got, torch.softmax(scores * tau, dim=-1), atol=1e-6):
            raise AssertionError(
                "you multiplied the scores by tau; divide them: a higher temperature must flatten the weights"
            )
        if not torch.allclose(got.sum(-1), torch.ones(10), atol=1e-5):
            raise AssertionError(
                "each row of weights must sum to 1: take the softmax over the last axis (dim=-1)"
            )
        raise AssertionError(f"tau={tau}: expected softmax(scores / tau) over the last axis")
    q, k = torch.randn(4, 64, generator=g), torch.randn(6, 64, generator=g)
    assert torch.allclose(fn(q @ k.T, 8.0), scaled_dot_product_attention(q, k, k)[1], atol=1e-6), (
        "tau = sqrt(d_k) = 8 should reproduce the attention weights for d_k = 64"
    )


### BEGIN SOLUTION
def reference_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(Q Kᵀ / sqrt(d_k)) V in the four steps of the lab, the output only."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


def reference_softmax_with_temperature(scores: Tensor, tau: float) -> Tensor:
    """softmax(scores / tau) over the last axis: tau > 1 flattens the weights, tau < 1 sharpens them."""
    return (scores / tau).softmax(dim=-1)


### END SOLUTION


### BEGIN HIDDEN TESTS
def _attention_heads(ns: dict) -> None:
    # (batch, heads, queries, d_k) against (batch, heads, keys, d_v): more axes, unequal widths
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(3, 4, n, d, generator=g) for n, d in ((6, 16), (9, 16), (9, 5)))
    got = returned_tensor(ns["my_attention"](q, k, v), (3, 4, 6, 5))
    if not torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-5):
        explain_attention_mistake(
            got, q, k, v, "F.scaled_dot_product_attention on (batch, heads, n, d) inputs"
        )


def _attention_gradients(ns: dict) -> None:
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(5, 8, generator=g, requires_grad=True) for _ in range(3))
    ns["my_attention"](q, k, v).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all(), "gradients must flow back to q: use torch ops"


def _own_sentence(ns: dict) -> None:
    assert ns["my_sentence"].strip().lower() != "the dog sat near the door", (
        "write a sentence of your own: the example sentence is the one the solutions discuss"
    )


def _extreme_temperatures(ns: dict) -> None:
    scores = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(13)) * 20
    for tau in (0.05, 1000.0):
        got = ns["my_softmax_with_temperature"](scores, tau)
        assert torch.isfinite(got).all(), f"tau={tau}: the weights must stay finite"
        assert torch.allclose(got, torch.softmax(scores / tau, dim=-1), atol=1e-5), (
            f"tau={tau} on (2, 3, 7) scores: softmax(scores / tau) over the last axis"
        )


GRADING = (
    Exercise(
        "lab6.1-ex1",
        "Exercise 1: my_attention",
        ("my_attention",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_attention(ns["my_attention"])),
            ("batched heads", _attention_heads),
            ("gradients", _attention_gradients),
        ),
    ),
    Exercise(
        "lab6.1-ex2",
        "Exercise 2: predict the attention",
        ("my_sentence", "my_prediction", "my_tokens", "my_X", "W_Q"),
        points=1,
        cases=(
            (
                "self-check",
                lambda ns: check_attention_prediction(
                    ns["my_prediction"], ns["my_tokens"], ns["my_X"] @ ns["W_Q"], ns["my_X"], word="dog"
                ),
            ),
            ("a sentence of your own", _own_sentence),
        ),
    ),
    Exercise(
        "lab6.1-ex3",
        "Exercise 3: temperature",
        ("my_softmax_with_temperature",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_softmax_with_temperature(ns["my_softmax_with_temperature"])),
            ("extreme temperatures", _extreme_temperatures),
        ),
    ),
)
### END HIDDEN TESTS
