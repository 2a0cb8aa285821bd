import random
import time

import numpy as np
import pytest
import torch

from common import env


def test_seed_everything_repeats_python_numpy_torch():
    def draw():
        env.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert draw() == draw()


def test_seed_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        env.seed_everything(-1)


def test_get_device_auto_and_explicit():
    assert env.get_device("cpu") == torch.device("cpu")
    expected = (
        "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert env.get_device().type == expected == env.get_device("auto").type


def test_get_device_errors_name_the_fix():
    with pytest.raises(ValueError, match="Unknown device"):
        env.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            env.get_device("cuda")


def test_resolve_profile():
    assert env.resolve_profile("full", quick={"n": 1}, full={"n": 9}) == {"n": 9}
    with pytest.raises(ValueError, match="Unknown PROFILE"):
        env.resolve_profile("fast", quick={}, full={})


def test_paths_are_inside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    root = env.repo_root()
    assert (root / "common" / "env.py").exists()
    out = env.outputs_dir("week6")
    assert out == root / "outputs" / "week6" and out.is_dir()


def test_is_online_answers_fast_for_an_unreachable_host():
    env.is_online.cache_clear()
    start = time.time()
    # TEST-NET-1 (RFC 5737) never answers: the connect must time out, not hang.
    assert env.is_online("192.0.2.1", 443, timeout=1.0) is False
    assert time.time() - start < 3


def test_require_online_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    start = time.time()
    with pytest.raises(env.OfflineError, match="Colab"):
        env.require_online("Pretrained weights")
    assert time.time() - start < 3
