"""What several labs' self-checks share: the returned-value check and the usual attention slips, named."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def returned_tensor(got: object, shape: tuple[int, ...]) -> Tensor:
    """``got`` if it is one tensor of ``shape``; else an AssertionError saying what to return."""
    if isinstance(got, tuple):
        raise AssertionError(
            "return the output tensor only (the weighted values), not a tuple such as (output, weights)"
        )
    assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, f"the output should have shape {shape}, got {tuple(got.shape)}"
    return got


def explain_attention_mistake(got: Tensor, q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
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
