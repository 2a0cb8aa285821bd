"""Measuring models with the tools made for it: parameters, FLOPs (FlopCounterMode), latency
(torch.utils.benchmark: warm-up, repeated runs, CUDA synchronisation handled by the Timer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total floating-point operations of one call ``fn(*args)`` as counted by torch's FlopCounterMode
    (a multiply-add counts as 2 FLOPs; ops without a registered formula, e.g. softmax, count 0)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    return counter.get_total_flops()


@dataclass(frozen=True)
class Timing:
    median: float  # seconds per call
    iqr: float  # interquartile range, seconds
    runs: int

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms ± {self.iqr * 1e3:.3f} (IQR, {self.runs} runs)"


def measure_latency(fn: Callable, *args, min_run_time: float = 0.2, num_threads: int | None = None) -> Timing:
    """Median wall time of ``fn(*args)`` under no_grad; the Timer warms up and synchronises CUDA."""
    timer = benchmark.Timer(
        stmt="with torch.no_grad(): fn(*args)", globals={"fn": fn, "args": args, "torch": torch},
        num_threads=num_threads or torch.get_num_threads(),
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(median=m.median, iqr=m.iqr, runs=len(m.times))
