"""Measuring models with the tools made for it: parameters, FLOPs (FlopCounterMode), latency
(torch.utils.benchmark: warm-up, repeated runs, CUDA synchronisation handled by the Timer) and peak
memory (CUDA: the caching allocator's statistics; CPU: the tensors that torch ops return, followed
from creation to release with the public ``torch.overrides.TorchFunctionMode``).

Importing this module changes no global state: torch.utils.benchmark is imported on first use, with
one known log line filtered out for the duration of that import only (see ``_torch_benchmark``).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import psutil
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


class _NoCudaHomeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _torch_benchmark() -> ModuleType:
    """torch.utils.benchmark. Its first import imports torch.utils.cpp_extension, which logs "No CUDA
    runtime is found, using CUDA_HOME=..." on CPU-only machines that have a CUDA toolkit: irrelevant here
    (nothing is compiled) and it prints a machine path into notebooks. A filter on that one logger drops
    that one message, and is removed as soon as the import is done; later imports are cached no-ops."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = _NoCudaHomeWarning()
    logger.addFilter(quiet)
    try:
        import torch.utils.benchmark as torch_benchmark
    finally:
        logger.removeFilter(quiet)
    return torch_benchmark


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
    timer = _torch_benchmark().Timer(
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
    bytes: int  # peak of the memory the call allocated, above the start (what each device sees: measure_peak_memory)
    device: str
    method: str  # what was measured and how

    @property
    def mib(self) -> float:
        return self.bytes / 2**20

    def __str__(self) -> str:
        return f"{self.mib:.2f} MiB on {self.device} ({self.method})"


def tensors_in(obj) -> Iterator[torch.Tensor]:
    """The tensors in an op's arguments or result (nested in tuples, lists, named tuples, dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


def _cpu_storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    if t.device.type != "cpu":
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and other layouts without one plain storage
        return None


class _LiveTensorBytes(TorchFunctionMode):
    """Running total and peak of the bytes of CPU tensor storages created by the ops run under it.

    Every torch function and Tensor method called under the mode reaches ``__torch_function__``, which
    sees its result. A result whose storage is not one of the op's inputs' and not already counted is a
    new allocation: its ``nbytes()`` are added. Views and in-place results share an input's storage and
    add nothing. The storage object (one Python object per storage, kept while any tensor uses it)
    gets a ``weakref.finalize`` that subtracts its bytes when the storage itself is freed, whichever
    tensors, views or C++ structures held it last. Storages are keyed by ``id()``, never reused while
    the object lives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # id(storage) -> nbytes, for storages created here and alive
        self.current = self.peak = 0
        self._finalizers: list[weakref.finalize] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)  # the mode is off inside this handler: no recursion
        new = [s for t in tensors_in(result) if (s := _cpu_storage(t)) is not None and id(s) not in self.live]
        if new:
            inputs = {id(s) for t in tensors_in((args, kwargs)) if (s := _cpu_storage(t)) is not None}
            for storage in new:
                if id(storage) not in inputs and id(storage) not in self.live and storage.nbytes() > 0:
                    self._allocated(storage)
        return result

    def _allocated(self, storage: torch.UntypedStorage) -> None:
        key, nbytes = id(storage), storage.nbytes()
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        self._finalizers.append(weakref.finalize(storage, self._freed, key))

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __exit__(self, *exc):
        for finalizer in self._finalizers:  # storages that outlive the call (the result) no longer report
            finalizer.detach()
        return super().__exit__(*exc)


def measure_peak_memory(
    fn: Callable, *args, device: torch.device | str | None = None, **kwargs
) -> PeakMemory:
    """Peak memory that one call ``fn(*args)`` under no_grad allocates on top of what already exists
    (its inputs and the model's weights are not counted; its intermediates and outputs are).

    CUDA: the caching allocator's statistics (``torch.cuda.max_memory_allocated`` after a reset): every
    allocation, including the scratch memory of kernels.
    CPU: the peak, during the call, of the summed ``nbytes()`` of the tensor storages that torch functions
    and Tensor methods returned (results of ops, not views or in-place results), each counted from its
    creation until it is freed (``_LiveTensorBytes``, built on ``torch.overrides.TorchFunctionMode``).
    Not seen, so this is a lower bound on what the CPU allocator held: memory allocated and freed inside
    one op — scratch buffers of a C++ kernel (e.g. a oneDNN convolution's), the intermediates of a C++
    composite op (SDPA's math backend computes its n×n weights inside one call) or of a torch.nn.functional
    op written in Python (F.layer_norm, F.multi_head_attention_forward count as one op) — and memory
    outside tensors. Exact for code written as a sequence of torch ops, such as naive attention.
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
        tracker = _LiveTensorBytes()
        with torch.no_grad(), tracker:
            fn(*args, **kwargs)
        return PeakMemory(
            tracker.peak,
            "cpu",
            "TorchFunctionMode: peak bytes of live tensor storages that torch ops returned; "
            "scratch memory inside one op (fused kernels, C++ composites) not seen",
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
