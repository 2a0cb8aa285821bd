"""Comparing two configurations trained with the same seeds: the paired per-seed difference.

Seeds are paired (seed s gives both configurations the same data order and, where shapes allow, the same
initial weights), so the noise the two share cancels in the per-seed difference d_s = a_s - b_s. We report
its mean and standard error, s.e. = std(d, ddof=1) / sqrt(n), and call the difference *real* when
|mean| > threshold * s.e. (threshold 2 by default: roughly a two-sided 5 % test for many seeds; with 3 seeds
it is a rough screen, not a significance test, and the labs say so).

``paired_difference(a, b, *, threshold=2.0) -> PairedDifference``
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over seeds of a_s - b_s
    std_error: float  # standard error of that mean (0.0 when all differences are equal)
    n: int  # number of paired seeds
    threshold: float

    @property
    def t(self) -> float:
        """mean / s.e. (infinite when the differences do not vary and are not zero)."""
        if self.std_error == 0.0:
            return 0.0 if self.mean == 0.0 else math.copysign(math.inf, self.mean)
        return self.mean / self.std_error

    @property
    def real(self) -> bool:
        return abs(self.t) > self.threshold

    def __str__(self) -> str:
        verdict = "real" if self.real else "within noise"
        return (
            f"{self.mean:+.4g} ± {self.std_error:.2g} (s.e., {self.n} paired seeds; "
            f"|mean| {'>' if self.real else '≤'} {self.threshold:g} s.e.): {verdict}"
        )


def paired_difference(a: Sequence[float], b: Sequence[float], *, threshold: float = 2.0) -> PairedDifference:
    """Mean and standard error of the per-seed differences ``a[s] - b[s]`` (same seed at the same index)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(
            f"a and b must hold one value per seed, in the same seed order; got {len(a)} and {len(b)}."
        )
    if len(a) < 2:
        raise ValueError(f"need at least 2 paired seeds to estimate a standard error, got {len(a)}.")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive (in standard errors), got {threshold}.")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return PairedDifference(mean, math.sqrt(var / n), n, threshold)
