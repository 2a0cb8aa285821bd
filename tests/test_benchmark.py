"""Measurement helpers checked on models whose parameters, FLOPs and memory are known by hand."""

import os
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
