import random
import time

import numpy as np
import pytest
import torch

from common import runtime


def test_seed_everything_seeds_python_numpy_and_torch_with_that_seed():
    # Reference: fresh generators of each library seeded with 123 by hand, untouched by seed_everything.
    expected = (
        random.Random(123).random(),
        np.random.RandomState(123).rand(),
        torch.rand(1, generator=torch.Generator().manual_seed(123)).item(),
    )
    random.random(), np.random.rand(), torch.rand(1)  # move the global generators somewhere else first
    assert runtime.seed_everything(123) == 123
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_seed_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        runtime.seed_everything(-1)


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    # The documented order, checked by faking which accelerators exist (nothing is allocated on them).
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.get_device() == runtime.get_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.get_device() == torch.device("cuda")
    assert runtime.get_device("cpu") == torch.device("cpu")  # an explicit choice wins
    assert runtime.get_device("cuda:1") == torch.device("cuda", 1)


def test_get_device_errors_name_the_fix():
    with pytest.raises(ValueError, match="Unknown device"):
        runtime.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            runtime.get_device("cuda")


def test_is_online_answers_fast_for_an_unreachable_host():
    runtime.is_online.cache_clear()
    start = time.time()
    # TEST-NET-1 (RFC 5737) never answers: the connect must time out, not hang.
    assert runtime.is_online("192.0.2.1", 443, timeout=1.0) is False
    assert time.time() - start < 3


def test_require_online_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    start = time.time()
    with pytest.raises(runtime.OfflineError, match="Colab"):
        runtime.require_online("Pretrained weights")
    assert time.time() - start < 3
