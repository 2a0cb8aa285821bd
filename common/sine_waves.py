"""The sequence task of labs 6.4 and 6.5: random sine waves, predict the next value.

A sequence shows ``seq_len`` values of y(t) = A·sin(f·t + φ) at t = 0, 1, ..., seq_len-1; the target is the
next one, y(seq_len). A, f and φ are drawn at random for every sequence (the lab guide's practice task).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

# Ranges of the random wave parameters. f <= 0.5 rad/step keeps >= 12 samples per period; the 20 observed
# steps hold about 1.6 periods of the fastest wave but only a third of a period of the slowest (f = 0.1).
AMPLITUDE = (0.5, 1.5)
FREQUENCY = (0.1, 0.5)


def sine_waves(
    n: int,
    seq_len: int = 20,
    noise_std: float = 0.0,
    seed: int = 0,
    amplitude: tuple[float, float] = AMPLITUDE,
    frequency: tuple[float, float] = FREQUENCY,
) -> tuple[Tensor, Tensor]:
    """``n`` random waves: inputs (n, seq_len, 1) = y(0..seq_len-1), targets (n, 1) = y(seq_len).

    ``noise_std`` adds Gaussian noise to the inputs only (the target stays the clean next value).
    The same ``seed`` always gives the same waves, whatever the global RNG state.
    """
    if n < 1 or seq_len < 2:
        raise ValueError(f"need n >= 1 and seq_len >= 2, got n={n}, seq_len={seq_len}.")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=torch.float64)

    a, f, phi = uniform(*amplitude), uniform(*frequency), uniform(0.0, 2 * math.pi)
    t = torch.arange(seq_len + 1, dtype=torch.float64)[None, :]
    y = a * torch.sin(f * t + phi)  # (n, seq_len + 1)
    x = y[:, :seq_len] + noise_std * torch.randn(n, seq_len, generator=g, dtype=torch.float64)
    return x.float().unsqueeze(-1), y[:, seq_len:].float()


@dataclass
class SineWaveSplits:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


def sine_wave_splits(
    n_train: int, n_val: int, n_test: int, seq_len: int = 20, noise_std: float = 0.0, seed: int = 0
) -> SineWaveSplits:
    """Independent train/validation/test sets (each split drawn from its own derived seed)."""
    sets = [
        TensorDataset(*sine_waves(n, seq_len, noise_std, seed=1000 * seed + i))
        for i, n in enumerate((n_train, n_val, n_test))
    ]
    return SineWaveSplits(*sets)
