"""Measurement helpers checked on models whose parameters, FLOPs and memory are known by hand."""

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import common.benchmark
from common.benchmark import (
    attention_matrix_bytes,
    count_flops,
    count_parameters,
    free_memory_bytes,
    measure_latency,
    measure_peak_memory,
    measure_throughput,
    sdpa_backends,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def test_parameters_by_hand():
    model = mlp()
    assert count_parameters(model) == (16 * 32 + 32) + (32 * 8 + 8)
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 32 * 8 + 8
    conv = nn.Conv2d(3, 4, kernel_size=3, bias=False)
    assert count_parameters(conv) == 4 * 3 * 3 * 3


def test_flops_by_hand():
    # A linear layer multiplies (B, in) by (in, out): B*in*out multiply-adds = 2*B*in*out FLOPs.
    assert count_flops(mlp(), torch.randn(5, 16)) == 2 * 5 * (16 * 32 + 32 * 8)
    # A 3x3 conv, 3 -> 4 channels, on 10x10 (no padding: 8x8 outputs), one image.
    assert count_flops(nn.Conv2d(3, 4, 3, bias=False), torch.randn(1, 3, 10, 10)) == 2 * 4 * 8 * 8 * 3 * 3 * 3


def test_fused_attention_flops_are_counted_on_every_device():
    q = torch.randn(2, 3, 10, 8)  # QKᵀ and (weights)V: 2 * (B*h*n*n*d) multiply-adds
    assert count_flops(F.scaled_dot_product_attention, q, q, q) == 2 * 2 * (2 * 3 * 10 * 10 * 8)


def test_latency_and_throughput_of_a_known_sleep():
    def sleep_10ms(batch):
        time.sleep(0.01)

    # A sleep never ends early, but a busy machine may wake it late: only the lower bound is exact; the upper
    # one (1 s, a hundred times the sleep) catches unit mistakes (ms for s), not scheduling delays.
    timing = measure_latency(sleep_10ms, torch.zeros(4), min_run_time=0.1)
    assert timing.runs >= 1 and 0.0095 < timing.median < 1.0 and timing.iqr >= 0
    rate = measure_throughput(sleep_10ms, torch.zeros(4, 2), min_run_time=0.1)
    assert rate.batch_size == 4 and 4 / 1.0 < rate.items_per_second < 4 / 0.0095
    with pytest.raises(ValueError):
        measure_throughput(sleep_10ms, torch.tensor(1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_peak_memory_counts_freed_intermediates(device):
    n = 256 * 1024  # float32 elements: 1 MiB per tensor

    def two_live_then_small():
        a = torch.ones(n, device=device)
        b = torch.ones(n, device=device)
        del a, b  # both freed before returning: only the peak remembers them
        return torch.ones(1, device=device)

    peak = measure_peak_memory(two_live_then_small, device=device)
    assert 2 * n * 4 <= peak.bytes <= 2 * n * 4 + 4096 and peak.device.startswith(device)
    assert peak.mib == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("device", DEVICES)
def test_peak_memory_of_naive_attention_is_two_score_matrices(device):
    n, d = 512, 16
    q = torch.randn(1, 2, n, d, device=device)

    def scores_then_softmax(q):
        scores = q @ q.transpose(-2, -1)
        return scores.softmax(dim=-1)  # scores and weights alive together

    peak = measure_peak_memory(scores_then_softmax, q)
    assert attention_matrix_bytes(1, 2, n) == 2 * n * n * 4
    assert peak.bytes == pytest.approx(2 * attention_matrix_bytes(1, 2, n), rel=0.01)


# CPU peak memory follows the tensors that torch ops return. The expected values below are written from
# the shapes alone: which tensors exist at the worst moment, times 4 bytes per float32 element.


def test_cpu_peak_of_naive_attention_is_exact():
    b, h, n, d = 2, 3, 64, 16
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    scores = weights = b * h * n * n * 4
    out = b * h * n * d * 4

    def named(q, k, v):
        s = q @ k.transpose(-2, -1)  # the transpose is a view: no bytes
        w = s.softmax(dim=-1)
        return w @ v  # s, w and the output alive together

    assert measure_peak_memory(named, q, k, v).bytes == scores + weights + out

    # One expression: the scores die as soon as softmax returns, before `@ v` allocates the output,
    # so the worst moment is scores + weights (n >= d, so weights + output is not larger).
    def one_line(q, k, v):
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    assert measure_peak_memory(one_line, q, k, v).bytes == scores + weights


def test_cpu_peak_is_the_max_of_successive_temporaries_not_their_sum():
    n = 1000

    def two_temporaries():
        big = torch.ones(3 * n)
        del big
        second = torch.ones(2 * n)
        return second.sum()  # 4 bytes while `second` is alive

    assert measure_peak_memory(two_temporaries).bytes == 3 * n * 4


def test_cpu_peak_counts_new_storages_once_and_views_and_in_place_ops_not_at_all():
    x = torch.randn(8, 16)  # exists before the call: never counted
    assert measure_peak_memory(lambda: torch.empty(1000)).bytes == 4 * 1000
    assert measure_peak_memory(lambda: torch.empty(1000, dtype=torch.float64)).bytes == 8 * 1000
    assert measure_peak_memory(lambda: torch.empty(1000, dtype=torch.int8)).bytes == 1000
    views = (
        lambda x: x.transpose(0, 1),
        lambda x: x.reshape(4, 32),
        lambda x: x.view(-1)[3:7],
        lambda x: x.T,
    )
    for view in views:
        assert measure_peak_memory(view, x).bytes == 0
    assert measure_peak_memory(lambda x: x.add_(1).mul_(2).clamp_(max=3), x).bytes == 0
    assert measure_peak_memory(lambda x: x.contiguous(), x).bytes == 0  # already contiguous: x itself
    assert measure_peak_memory(lambda x: x.t().contiguous(), x).bytes == 8 * 16 * 4  # a real copy

    def many_views_of_one_new_tensor():
        y = torch.zeros(100)
        return y[:50], y.view(10, 10), y.unsqueeze(0), y.chunk(4)

    assert measure_peak_memory(many_views_of_one_new_tensor).bytes == 100 * 4


def test_cpu_storage_is_freed_when_its_last_view_goes_not_its_first_tensor():
    n = 1000

    def view_outlives_base():
        base = torch.ones(n)
        half = base[: n // 2]  # keeps the whole storage of `base` alive
        del base
        other = torch.ones(n)  # allocated while base's storage still exists
        del half, other
        return torch.ones(n)  # both storages are gone by now

    assert measure_peak_memory(view_outlives_base).bytes == 2 * n * 4


def test_cpu_peak_of_a_small_network():
    batch = 5
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    # Sequential keeps one activation alive while the next is made: Linear(32) + ReLU(32) is the worst
    # moment (ReLU output + final 8 is smaller); the weights and the input existed before.
    assert measure_peak_memory(model, torch.randn(batch, 16)).bytes == 2 * batch * 32 * 4


def test_cpu_peak_memory_uses_no_profiler_and_writes_nothing(monkeypatch, capfd):
    def no_profiler(*args, **kwargs):
        raise AssertionError("the CPU measurement must not start the torch profiler")

    monkeypatch.setattr(torch.profiler, "profile", no_profiler)
    peak = measure_peak_memory(lambda q: (q @ q.transpose(-2, -1)).softmax(-1), torch.randn(1, 2, 32, 8))
    assert peak.bytes == 2 * (1 * 2 * 32 * 32 * 4) and "TorchFunctionMode" in peak.method
    captured = capfd.readouterr()  # file descriptors 1 and 2, where kineto wrote its USDT lines
    assert captured.out == "" and captured.err == ""


def test_import_and_timer_leave_logging_untouched():
    assert not hasattr(common.benchmark, "benchmark")  # torch.utils.benchmark is imported by its users
    # A fresh interpreter: the module imports torch.utils.benchmark (and cpp_extension) on first use only.
    code = textwrap.dedent("""
        import logging, sys
        import torch
        from common.benchmark import measure_latency
        logger = logging.getLogger("torch.utils.cpp_extension")
        assert "torch.utils.benchmark" not in sys.modules
        assert logger.level == logging.NOTSET and logger.filters == []
        measure_latency(lambda x: x + 1, torch.zeros(3), min_run_time=0.01)
        assert "torch.utils.benchmark" in sys.modules
        assert logger.level == logging.NOTSET and logger.filters == []
        logger.warning("still logs")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "still logs" in run.stderr and "No CUDA runtime" not in run.stderr
    assert logging.getLogger("torch.utils.cpp_extension").filters == []


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        attention_matrix_bytes(1, 0, 16)
    with pytest.raises(ValueError):
        measure_peak_memory(lambda: None, device="meta")


def test_math_backend_always_runs():
    q = torch.randn(1, 2, 16, 8)
    backends = sdpa_backends(q, q, q)
    assert backends["MATH"] is True and set(backends) >= {"FLASH_ATTENTION", "EFFICIENT_ATTENTION"}


def test_free_memory_is_within_physical_memory_and_drops_when_we_allocate():
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    before = free_memory_bytes("cpu")
    assert 0 < before <= total
    # Other processes may free memory meanwhile: take three written 1 GiB blocks one after another and
    # require that one of them shows, so a single unrelated change cannot fail the test.
    blocks, drops = [], []
    for _ in range(3):
        without = free_memory_bytes("cpu")
        blocks.append(torch.ones(2**28))  # 1 GiB of float32, written so the pages are really taken
        drops.append(without - free_memory_bytes("cpu"))
    assert max(drops) > 0.5 * 2**30, drops
