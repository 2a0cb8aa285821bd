"""Lab 6.5's exercises (sequence modeling): what more heads cost, order blindness, a scaling exponent.

Self-checks: :func:`check_attention_parameters` (exercise 1), :func:`check_shuffle_past` (exercise 2, on the
notebook's trained models), :func:`check_scaling_exponent` (exercise 3, on the notebook's measured timings too).
The scaling fit itself is a concept the lab uses in §7.3: :func:`common.sequence_models.scaling_exponent`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from common.attention import MultiHeadAttention
from common.exercises import Exercise
from common.sequence_models import scaling_exponent


def check_attention_parameters(fn: Callable[[int, int], int]) -> None:
    """Exercise 1: ``fn(d_model, num_heads)`` must equal the parameter count of
    :class:`common.attention.MultiHeadAttention` (counted from the layer itself, not from a formula)."""
    for d, h in ((32, 1), (32, 2), (32, 4), (32, 8), (48, 3)):
        want = sum(p.numel() for p in MultiHeadAttention(d, h).parameters())
        got = fn(d, h)
        if got == want:
            continue
        if got == 4 * d * d:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} counts the weights only; add the four bias vectors"
            )
        if got == 3 * d * d + 3 * d:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} is Q, K and V only; add the output projection"
            )
        if h > 1 and got == h * want:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} gives every head full-size d_model x d_model projections; the heads "
                f"share one projection and split its {d} outputs into {h} slices of {d // h}"
            )
        raise AssertionError(f"d_model={d}, heads={h}: got {got}, the layer has {want}")


def check_shuffle_past(
    fn: Callable[[Tensor, torch.Generator], Tensor], x: Tensor, *, blind: nn.Module, aware: nn.Module
) -> None:
    """Exercise 2: ``fn(x, generator)`` must reorder the past of ``x`` (B, N, 1) and keep the last step; then a
    model without positions (``blind``) must give the same predictions, a model with positions (``aware``) not."""
    original = x.clone()
    shuffled = fn(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, original), "x was changed in place; return a shuffled copy"
    assert isinstance(shuffled, Tensor) and shuffled.shape == x.shape, (
        f"return a tensor shaped like x {tuple(x.shape)}, got "
        f"{tuple(shuffled.shape) if isinstance(shuffled, Tensor) else type(shuffled).__name__}"
    )
    assert torch.equal(shuffled[:, -1], x[:, -1]), (
        "the last step must stay last (it is the query); shuffle x[:, :-1] only"
    )
    assert torch.equal(shuffled.sort(dim=1).values, x.sort(dim=1).values), (
        "each sequence must keep its own values in a new order: permute the time axis (dim 1), not the batch"
    )
    assert not torch.equal(shuffled, x), "the past is in its original order; permute x[:, :-1]"
    with torch.no_grad():
        assert torch.allclose(blind(shuffled), blind(x), atol=1e-4), (
            "the model without positional encoding should not notice the shuffle; is the last step still last?"
        )
        assert not torch.allclose(aware(shuffled), aware(x), atol=1e-3), (
            "the model with positional encoding should notice the shuffle"
        )


def check_scaling_exponent(
    fn: Callable[[Sequence[float], Sequence[float]], float],
    measured: tuple[Sequence[float], Sequence[float]] | None = None,
) -> None:
    """Exercise 3: ``fn(lengths, seconds)`` must recover known exponents from synthetic timings, and agree with
    :func:`common.sequence_models.scaling_exponent` on ``measured`` = (lengths, seconds) when given."""
    n = np.array([10.0, 20.0, 50.0, 100.0, 200.0])
    noise = np.exp(np.array([0.05, -0.04, 0.0, 0.03, -0.05]))
    for k, c in ((2.0, 3e-6), (1.0, 0.5), (0.5, 2e-3)):
        t = c * n**k * noise
        got, want = float(fn(n, t)), scaling_exponent(n, t)
        if abs(got - want) < 1e-6:
            continue
        if abs(got - np.polyfit(n, t, 1)[0]) < 1e-9:
            raise AssertionError("that is the slope of t against n; fit log(t) against log(n)")
        if abs(got - np.polyfit(np.log(n), np.log(t), 1)[1]) < 1e-9:
            raise AssertionError("that is the intercept log(c); np.polyfit returns [slope, intercept]")
        if abs(got - np.log(t[-1] / t[-2]) / np.log(n[-1] / n[-2])) < 1e-9:
            raise AssertionError(
                "two points give a noisy slope; fit a least-squares line through all of them"
            )
        raise AssertionError(
            f"t = {c} n^{k} (with 5% noise): expected an exponent near {want:.3f}, got {got:.3f}"
        )
    if measured is not None:
        got, want = float(fn(*measured)), scaling_exponent(*measured)
        assert abs(got - want) < 1e-6, f"on the measured timings: expected {want:.3f}, got {got:.3f}"


### BEGIN SOLUTION
def reference_attention_parameters(d_model: int, num_heads: int) -> int:
    """Parameters of one multi-head self-attention layer (fused QKV with bias, output projection with bias):
    ``4 d² + 4 d`` whatever ``num_heads``: the heads split ``d_model`` into ``num_heads`` slices of
    ``d_model / num_heads``, they do not add weights."""
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}).")
    return 3 * (d_model * d_model + d_model) + (d_model * d_model + d_model)


def reference_shuffle_past(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A copy of ``x`` (batch, steps, 1) whose first ``steps - 1`` values are put in one random order (the same
    for the whole batch); the last step stays last."""
    order = torch.randperm(x.shape[1] - 1, generator=generator)
    return torch.cat([x[:, order], x[:, -1:]], dim=1)


### END SOLUTION


### BEGIN HIDDEN TESTS
def _other_sizes_integer_count(ns: dict) -> None:
    # a ViT-Base-sized layer and two small ones, counted on torch's own nn.MultiheadAttention (same layout)
    for d, h in ((768, 12), (64, 16), (6, 2)):
        want = sum(p.numel() for p in nn.MultiheadAttention(d, h).parameters())
        got = ns["my_attention_parameters"](d, h)
        assert isinstance(got, numbers.Integral), (
            f"d_model={d}, heads={h}: return an int ({type(got).__name__} given): a parameter count is a whole "
            "number; use // or int(), not /"
        )
        assert got == want, f"d_model={d}, heads={h}: got {got}, torch's nn.MultiheadAttention has {want}"


def _one_order_for_the_batch(ns: dict) -> None:
    # x[b, t] = t + 100 b: every value names its step, so the steps each row was given can be read back
    batch, steps = 5, 12
    x = (torch.arange(steps) + 100 * torch.arange(batch)[:, None]).float()[..., None]
    out = ns["my_shuffle_past"](x.clone(), torch.Generator().manual_seed(3))
    assert isinstance(out, Tensor) and out.shape == x.shape, f"return a tensor shaped like x {tuple(x.shape)}"
    steps_read = (out[..., 0] - 100 * torch.arange(batch)[:, None]).long()
    assert torch.equal(steps_read, steps_read[:1].expand(batch, -1)), (
        "every sequence got its own order: draw one permutation, torch.randperm(steps - 1, generator=generator), "
        "and apply it to the whole batch (x[:, order])"
    )


def _seeded_by_the_generator(ns: dict) -> None:
    x = torch.randn(3, 16, 1, generator=torch.Generator().manual_seed(4))
    outs = [ns["my_shuffle_past"](x.clone(), torch.Generator().manual_seed(s)) for s in (7, 7, 8, 9)]
    assert torch.equal(outs[0], outs[1]), (
        "the same seed gave two different orders: pass the generator to torch.randperm(..., generator=generator)"
    )
    assert not (torch.equal(outs[0], outs[2]) and torch.equal(outs[0], outs[3])), (
        "three seeds gave one order: draw the permutation from the generator, do not fix it"
    )


def _exact_power_laws(ns: dict) -> None:
    # t = c n^k written out: plain lists, unsorted lengths, two points, a falling time per step
    for lengths, k, c in (
        ([64, 16, 256, 32], 1.75, 5e-4),
        ([100, 400], -1.0, 2.0),
        ([3, 9, 27, 81, 243], 0.5, 1.0),
    ):
        seconds = [c * n**k for n in lengths]
        got = float(ns["my_scaling_exponent"](list(lengths), list(seconds)))
        assert abs(got - k) < 1e-6, (
            f"t = {c} n^{k} exactly at lengths {lengths}: expected the exponent {k}, got {got:.4f}; fit "
            "log(seconds) against log(lengths) through every point, in the order given, with any sign"
        )


GRADING = (
    Exercise(
        "lab6.5-ex1",
        "Exercise 1: attention parameters vs heads",
        ("my_attention_parameters",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_attention_parameters(ns["my_attention_parameters"])),
            ("other sizes, an integer count", _other_sizes_integer_count),
        ),
    ),
    Exercise(
        "lab6.5-ex2",
        "Exercise 2: shuffle the past",
        ("my_shuffle_past", "x_test", "model_nope", "transformer"),
        points=2,
        cases=(
            (
                "self-check",
                lambda ns: check_shuffle_past(
                    ns["my_shuffle_past"], ns["x_test"][:64], blind=ns["model_nope"], aware=ns["transformer"]
                ),
            ),
            ("one order for the whole batch", _one_order_for_the_batch),
            ("seeded by the generator", _seeded_by_the_generator),
        ),
    ),
    Exercise(
        "lab6.5-ex3",
        "Exercise 3: scaling exponent",
        ("my_scaling_exponent", "lengths", "timing"),
        points=2,
        cases=(
            (
                "self-check",
                lambda ns: check_scaling_exponent(
                    ns["my_scaling_exponent"], measured=(ns["lengths"], ns["timing"]["Transformer"])
                ),
            ),
            ("exact power laws", _exact_power_laws),
        ),
    ),
)
### END HIDDEN TESTS
