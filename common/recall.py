"""Lab 6.5's lookup task: recall the value marked k steps back.

Each sequence holds ``seq_len`` random symbols (one of ``n_symbols``, fed as a level in [-1, 1]) and a marker
channel that is 1 at exactly one step and 0 elsewhere. The target is the symbol at the marked step; the mark
sits ``lag`` steps before the last step (lag 0 = the last step itself), drawn uniformly for every sequence.
Nothing about the other steps helps, so the task isolates one thing: carrying one value across ``lag`` steps.
A Transformer reads it in one attention hop at any lag (the marker makes it a lookup by content); a recurrent
model must hold it through ``lag`` updates. Chance accuracy is 1 / ``n_symbols``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import TensorDataset


def marked_recall(
    n: int, seq_len: int = 32, n_symbols: int = 8, seed: int = 0, max_lag: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` sequences: inputs (n, seq_len, 2) = (symbol level, marker), targets (n,) = the marked symbol's
    index, lags (n,) = steps from the mark to the last step, uniform in 0..``max_lag`` (default seq_len - 1).
    The same ``seed`` always gives the same data, whatever the global RNG state."""
    max_lag = seq_len - 1 if max_lag is None else max_lag
    if n < 1 or seq_len < 2 or n_symbols < 2:
        raise ValueError(f"need n >= 1, seq_len >= 2 and n_symbols >= 2; got {n}, {seq_len}, {n_symbols}.")
    if not 0 <= max_lag < seq_len:
        raise ValueError(f"max_lag must be in 0..seq_len-1 = 0..{seq_len - 1}, got {max_lag}.")
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(n_symbols, (n, seq_len), generator=g)
    lags = torch.randint(max_lag + 1, (n,), generator=g)
    marked = seq_len - 1 - lags
    x = torch.zeros(n, seq_len, 2)
    x[..., 0] = 2 * symbols.float() / (n_symbols - 1) - 1  # evenly spaced levels, -1 ... 1
    x[torch.arange(n), marked, 1] = 1.0
    return x, symbols[torch.arange(n), marked], lags


@dataclass
class RecallSplits:
    train: TensorDataset  # (inputs, targets, lags)
    val: TensorDataset
    test: TensorDataset


def recall_splits(
    n_train: int, n_val: int, n_test: int, seq_len: int = 32, n_symbols: int = 8, seed: int = 0
) -> RecallSplits:
    """Independent train/validation/test sets (each split drawn from its own derived seed)."""
    sets = [
        TensorDataset(*marked_recall(n, seq_len, n_symbols, seed=1000 * seed + 500 + i))
        for i, n in enumerate((n_train, n_val, n_test))
    ]
    return RecallSplits(*sets)
