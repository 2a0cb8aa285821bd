"""Where the code runs: one seed for every random generator, the device, and the network guard.

- :func:`seed_everything`, :func:`get_device`: reproducible runs on ``cuda`` > ``mps`` > ``cpu``.
- :func:`is_online` / :func:`require_online`: optional downloads fail within seconds, with what to do, offline
  (``COURSE_OFFLINE=1`` forces offline); :func:`in_colab`.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from functools import cache

import numpy as np
import torch


def seed_everything(seed: int = 0, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy and torch (all devices) with one number and return it.

    ``deterministic=True`` also asks torch for deterministic kernels (a warning where an op has none).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)  # reaches child processes only: this one's hash seed is fixed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, read before its first call (CUDA's docs)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def get_device(preferred: str | None = None) -> torch.device:
    """Pick the device: ``cuda`` > ``mps`` > ``cpu``, or the one asked for (``"auto"``/None = best)."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preferred in (None, "", "auto"):
        return torch.device(next(name for name, ok in available.items() if ok))
    kind = str(preferred).split(":")[0]
    if kind not in available:
        raise ValueError(f"Unknown device {preferred!r}; use one of 'auto', 'cuda', 'mps', 'cpu'.")
    if not available[kind]:
        raise ValueError(
            f"Device {preferred!r} is not available on this machine; use DEVICE='auto' or 'cpu'."
        )
    return torch.device(preferred)


class OfflineError(RuntimeError):
    """Raised when a step needs the network and there is none."""


@cache
def is_online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """True if ``host:port`` answers a TCP connect within ``timeout`` seconds (DNS included).

    The whole check runs in a daemon thread so a hanging DNS lookup cannot stall the caller. The answer is
    cached for the rest of the process (per host, port and timeout).
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def require_online(what: str, host: str = "huggingface.co") -> None:
    """Raise :class:`OfflineError` within seconds, saying what to do, if ``what`` cannot be downloaded."""
    if os.environ.get("COURSE_OFFLINE") == "1" or not is_online(host):
        raise OfflineError(
            f"{what} needs the network ({host} is unreachable). "
            "Run this notebook on Colab or a connected machine; the rest of the lab works offline."
        )


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True
