"""Lab 4.5's exercises (deployment): top-1 agreement between two paths, a float format from its bits.

Self-checks: :func:`check_top1_agreement` (exercise 1, against :func:`common.deployment.agreement`),
:func:`check_float_format` (exercise 2, against ``torch.finfo``); each names the usual slip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from common.deployment import agreement
from common.exercises import Exercise


def check_top1_agreement(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> None:
    """Exercise 1: ``fn(reference_logits, logits)`` must return the share (0..1) of rows whose top-1 class agrees,
    as :func:`common.deployment.agreement` computes it; the message names the usual slip."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(50, 6, generator=generator)
    logits = reference + 0.8 * torch.randn(50, 6, generator=generator)  # moved enough to change some top-1s
    want = agreement(reference, logits).top1_agreement
    got = float(fn(reference, logits))
    if abs(got - want) < 1e-6:
        return
    if abs(got - 100 * want) < 1e-4:
        raise AssertionError("return a share between 0 and 1, not a percentage")
    if abs(got - float((logits == reference).float().mean())) < 1e-6:
        raise AssertionError("compare the top-1 classes (argmax over dim 1), not the logits themselves")
    if (
        abs(got - float((reference.argmax(0)[:, None] == logits.argmax(0)).float().mean())) < 1e-6
        or abs(got - float((reference.argmax(0) == logits.argmax(0)).float().mean())) < 1e-6
    ):
        raise AssertionError("take the argmax over the classes (dim=1): dim 0 runs over the images")
    raise AssertionError(
        f"expected {want:.3f} on the check's 50 rows, got {got:.3f}: mean of argmax(1) == argmax(1)"
    )


def check_float_format(fn: Callable[[int, int], tuple[float, float, float]]) -> None:
    """Exercise 2: ``fn(exponent_bits, mantissa_bits)`` must return ``(eps, max, smallest_normal)`` of an IEEE-style
    binary format with that layout (checked against ``torch.finfo`` for float16, bfloat16 and float32)."""
    for dtype, (e, m) in ((torch.float16, (5, 10)), (torch.bfloat16, (8, 7)), (torch.float32, (8, 23))):
        info = torch.finfo(dtype)
        want = (info.eps, info.max, info.tiny)
        got = tuple(float(v) for v in fn(e, m))
        if len(got) != 3:
            raise AssertionError("return three numbers: (eps, max, smallest_normal)")
        if all(abs(g - w) <= 1e-6 * w for g, w in zip(got, want)):
            continue
        name = str(dtype).removeprefix("torch.")
        if abs(got[0] - info.eps / 2) <= 1e-9 * info.eps:
            raise AssertionError(
                f"{name}: eps is the gap between 1 and the next number, 2**-mantissa_bits; you gave half of it "
                "(the unit roundoff)"
            )
        if abs(got[0] - want[0]) > 1e-6 * want[0]:
            raise AssertionError(f"{name}: eps should be 2**-{m} = {info.eps:.3g}, got {got[0]:.3g}")
        if abs(got[2] - want[2]) > 1e-6 * want[2]:
            raise AssertionError(
                f"{name}: the smallest normal number is 2**(1 - bias) with bias = 2**(exponent_bits - 1) - 1, "
                f"= {info.tiny:.3g}; got {got[2]:.3g}"
            )
        raise AssertionError(
            f"{name}: the largest number is (2 - eps) * 2**bias (the all-ones exponent is kept for inf and NaN), "
            f"= {info.max:.4g}; got {got[1]:.4g}"
        )


### BEGIN SOLUTION
def reference_top1_agreement(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """The share of rows (images) whose top-1 class under ``logits`` is the one under ``reference``; both are
    (N, classes). :func:`common.deployment.agreement` reports it with the logit difference and the accuracies."""
    return float((reference.argmax(1) == logits.argmax(1)).float().mean())


def reference_float_format(exponent_bits: int, mantissa_bits: int) -> tuple[float, float, float]:
    """``(eps, max, smallest_normal)`` of an IEEE-style binary format: bias ``2**(e - 1) - 1``, eps ``2**-m``,
    max ``(2 - eps) * 2**bias`` (the all-ones exponent is kept for inf and NaN), smallest normal ``2**(1 - bias)``."""
    bias = 2 ** (exponent_bits - 1) - 1
    eps = 2.0**-mantissa_bits
    return eps, (2 - eps) * 2.0**bias, 2.0 ** (1 - bias)


### END SOLUTION


### BEGIN HIDDEN TESTS
def _top1_other_sizes(ns: dict) -> None:
    # one image, then 37 images over 1000 classes; the share computed with numpy
    g = torch.Generator().manual_seed(41)
    for n, classes in ((1, 3), (37, 1000), (8, 2)):
        reference = torch.randn(n, classes, generator=g)
        logits = reference + torch.randn(n, classes, generator=g)
        want = float(np.mean(reference.numpy().argmax(1) == logits.numpy().argmax(1)))
        got = float(ns["my_top1_agreement"](reference, logits))
        assert abs(got - want) < 1e-6, (
            f"{n} images x {classes} classes: expected {want:.4f}, got {got:.4f}; average over the rows of the "
            "inputs (their number is len(reference)), comparing argmax over dim 1"
        )


def _float_format_other_formats(ns: dict) -> None:
    # float64 (11, 52) and fp8 e5m2 (5, 2), both IEEE-style, against torch.finfo
    for dtype, (e, m) in ((torch.float64, (11, 52)), (torch.float8_e5m2, (5, 2))):
        finfo, label = torch.finfo(dtype), str(dtype).removeprefix("torch.")
        got = tuple(float(v) for v in ns["my_float_format"](e, m))
        assert len(got) == 3, "return three numbers: (eps, max, smallest_normal)"
        for what, g, w in zip(("eps", "max", "smallest_normal"), got, (finfo.eps, finfo.max, finfo.tiny)):
            assert abs(g - w) <= 1e-9 * w, (
                f"{label} ({e} exponent bits, {m} mantissa bits): {what} should be {w:.6g}, got {g:.6g}; compute "
                "from the bits with Python floats (float64: 2.0**(bias + 1) overflows, (2 - eps) * 2.0**bias does not)"
            )


GRADING = (
    Exercise(
        "lab4.5-ex1",
        "Exercise 1: top-1 agreement",
        ("my_top1_agreement",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_top1_agreement(ns["my_top1_agreement"])),
            ("other sizes", _top1_other_sizes),
        ),
    ),
    Exercise(
        "lab4.5-ex2",
        "Exercise 2: float format",
        ("my_float_format",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_float_format(ns["my_float_format"])),
            ("float64 and fp8", _float_format_other_formats),
        ),
    ),
)
### END HIDDEN TESTS
