"""Measuring models with the tools made for it: parameters, FLOPs (FlopCounterMode), latency
(torch.utils.benchmark: warm-up, repeated runs, CUDA synchronisation handled by the Timer)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# torch.utils.benchmark imports cpp_extension, which warns "No CUDA runtime is found, using CUDA_HOME=..."
# on CPU-only machines: irrelevant here (nothing is compiled) and it leaks a machine path into notebooks.
_cpp_logger = logging.getLogger("torch.utils.cpp_extension")
_cpp_level = _cpp_logger.level
_cpp_logger.setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

_cpp_logger.setLevel(_cpp_level)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total floating-point operations of one call ``fn(*args)`` as counted by torch's FlopCounterMode
    (a multiply-add counts as 2 FLOPs; ops without a registered formula, e.g. softmax, count 0).

    Runs with SDPA's math backend: FlopCounterMode has no formula for the fused CPU flash kernel and
    would count ``F.scaled_dot_product_attention`` (used by timm's ViTs) as 0 FLOPs on CPU."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
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
        stmt="with torch.no_grad(): fn(*args)",
        globals={"fn": fn, "args": args, "torch": torch},
        num_threads=num_threads or torch.get_num_threads(),
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(median=m.median, iqr=m.iqr, runs=len(m.times))


@dataclass(frozen=True)
class Throughput:
    items_per_second: float
    batch_size: int
    timing: Timing  # of one whole batch

    def __str__(self) -> str:
        return f"{self.items_per_second:.1f} items/s at batch {self.batch_size} ({self.timing})"


def measure_throughput(fn: Callable, batch: torch.Tensor, min_run_time: float = 0.2) -> Throughput:
    """Items per second of ``fn(batch)``: the batch size over the median time of one call."""
    if batch.ndim == 0 or batch.shape[0] < 1:
        raise ValueError(
            f"batch needs a leading batch dimension of size >= 1, got shape {tuple(batch.shape)}."
        )
    timing = measure_latency(fn, batch, min_run_time=min_run_time)
    return Throughput(batch.shape[0] / timing.median, batch.shape[0], timing)


@dataclass(frozen=True)
class PeakMemory:
    bytes: int  # peak of tensor memory allocated during the call, above what was allocated before it
    device: str
    method: str  # what was measured and how

    @property
    def mib(self) -> float:
        return self.bytes / 2**20

    def __str__(self) -> str:
        return f"{self.mib:.2f} MiB on {self.device} ({self.method})"


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 for a moment: the profiler's C++ backend (kineto) logs a line on every
    start and stop straight to it, which would clutter notebook outputs. Python's own stderr is untouched."""
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no real file descriptor 2 (some embedded interpreters): nothing to silence
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _peak_from_cpu_profiler(fn: Callable, args: tuple, kwargs: dict) -> int:
    # The profiler records every allocation and free of the CPU allocator with its size and time;
    # replaying them in time order gives the running total of live tensor bytes, and its maximum.
    activities = [torch.profiler.ProfilerActivity.CPU]
    with (
        _quiet_native_stderr(),
        torch.profiler.profile(activities=activities, profile_memory=True) as prof,
        torch.no_grad(),
    ):
        fn(*args, **kwargs)
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def measure_peak_memory(
    fn: Callable, *args, device: torch.device | str | None = None, **kwargs
) -> PeakMemory:
    """Peak memory that one call ``fn(*args)`` under no_grad allocates on top of what already exists
    (its inputs and the model's weights are not counted; its intermediates and outputs are).

    CUDA: the caching allocator's statistics (``torch.cuda.max_memory_allocated`` after a reset).
    CPU: the torch profiler's record of the CPU allocator (``profile_memory=True``), replayed in order.
    ``device`` defaults to the device of the first tensor argument.
    """
    if device is None:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; use device='cpu'.")
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            fn(*args, **kwargs)
        torch.cuda.synchronize(device)  # kernels are asynchronous: wait before reading the statistics
        return PeakMemory(
            torch.cuda.max_memory_allocated(device) - before,
            str(device),
            "CUDA caching allocator: max_memory_allocated above the start",
        )
    if device.type == "cpu":
        return PeakMemory(
            _peak_from_cpu_profiler(fn, args, kwargs),
            "cpu",
            "torch profiler: CPU allocator events, peak of live bytes",
        )
    raise ValueError(
        f"peak memory is measured on 'cpu' or 'cuda', not {device.type!r}; run with DEVICE='cpu'."
    )


def attention_matrix_bytes(batch: int, heads: int, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
    """Size of one (batch, heads, n, n) attention-score tensor: the O(n²) term of naive attention."""
    if min(batch, heads, seq_len) < 1:
        raise ValueError(f"batch, heads and seq_len must be >= 1, got {batch}, {heads}, {seq_len}.")
    return batch * heads * seq_len**2 * torch.empty((), dtype=dtype).element_size()


def free_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Memory a new allocation can use now: free GPU memory on CUDA, else the OS's available RAM (psutil's
    ``available``: Linux's ``MemAvailable``, which counts reclaimable caches, and its equivalent on macOS)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def sdpa_backends(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, bool]:
    """Which kernels of ``F.scaled_dot_product_attention`` accept these inputs on their device.

    Each backend is forced in turn with ``torch.nn.attention.sdpa_kernel``; one that cannot run
    (wrong device, dtype, head size, GPU generation) raises, and is reported as False.
    """
    available = {}
    for backend in (
        SDPBackend.MATH,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
    ):
        try:
            with sdpa_kernel(backend), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the "why this kernel was not used" warnings
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
            available[backend.name] = True
        except RuntimeError:
            available[backend.name] = False
    return available
