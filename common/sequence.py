"""Sequence modeling on random sine waves: the data, three regressors (Transformer, RNN, LSTM) and
two ways to ask a trained model which input positions it relies on (occlusion, gradient saliency).

Task (seed 004, Lab 5): see ``seq_len`` values of y(t) = A·sin(f·t + φ) at t = 0, 1, ..., seq_len-1
and predict the next one, y(seq_len). A, f and φ are drawn at random for every sequence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from common.blocks import TransformerBlock
from common.positional import SinusoidalPositionalEncoding
from common.training import History, evaluate, fit, warmup_cosine

# Ranges of the random wave parameters. f <= 0.5 rad/step keeps >= 12 samples per period, so the
# 20 observed steps always hold at least 1.5 periods of the slowest and most of the fastest wave.
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


class TransformerRegressor(nn.Module):
    """The seed's model: Linear(1 -> d_model), sinusoidal positions, ``num_layers`` transformer blocks
    (``num_heads`` heads, FFN d_model -> d_ff -> d_model), the last position's vector, Linear(d_model -> 1).

    ``positional=False`` drops the positional encoding (the practice task "train without positions").
    ``norm``/``activation`` are passed to :class:`common.blocks.TransformerBlock`; with pre-norm
    blocks a final LayerNorm closes the stack (as in GPT-2/ViT), with post-norm the blocks end normed.
    """

    def __init__(
        self,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 128,
        num_layers: int = 1,
        positional: bool = True,
        norm: str = "pre",
        activation: str = "gelu",
        residual: bool = True,
        dropout: float = 0.0,
        max_len: int = 4096,
    ):
        super().__init__()
        if d_ff % d_model:
            raise ValueError(f"d_ff ({d_ff}) must be a multiple of d_model ({d_model}).")
        self.input_proj = nn.Linear(1, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len=max_len) if positional else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d_model,
                num_heads,
                mlp_ratio=d_ff // d_model,
                dropout=dropout,
                activation=activation,
                norm=norm,
                residual=residual,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: Tensor, return_attention: bool = False):
        """``x`` (B, N, 1) -> (B, 1); with ``return_attention`` also a list of (B, heads, N, N) per layer."""
        _check_sequence(x)
        h = self.pos(self.input_proj(x))
        weights = []
        for block in self.blocks:
            if return_attention:
                h, w = block(h, return_attention=True)
                weights.append(w)
            else:
                h = block(h)
        out = self.head(self.norm(h)[:, -1])  # last-position pooling: the newest step summarises
        return (out, weights) if return_attention else out


RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentRegressor(nn.Module):
    """``cell`` ("rnn", "lstm" or "gru") over the sequence, the last hidden state -> Linear -> 1 value."""

    def __init__(self, cell: str = "rnn", hidden_size: int = 64, num_layers: int = 1):
        super().__init__()
        if cell not in RECURRENT:
            raise ValueError(f"unknown cell {cell!r}; use one of {sorted(RECURRENT)}.")
        self.rnn = RECURRENT[cell](1, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_sequence(x)
        out, _ = self.rnn(x)  # (B, N, hidden): the hidden state after every step
        return self.head(out[:, -1])


def _check_sequence(x: Tensor) -> None:
    if x.ndim != 3 or x.shape[-1] != 1:
        raise ValueError(
            f"expected a (batch, seq_len, 1) tensor, got shape {tuple(x.shape)}; "
            "add the feature axis with x.unsqueeze(-1)."
        )


@dataclass
class RegressionRun:
    history: History
    test_mse: float
    seconds: float  # wall time of the training loop (validation passes included)


def train_regressor(
    model: nn.Module,
    splits: SineWaveSplits,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_fraction: float = 0.05,
    device="cpu",
    seed: int = 0,
    grad_clip: float | None = None,
    desc: str = "train",
) -> RegressionRun:
    """The one training recipe every model in Labs 4-5 gets: Adam, linear warm-up + cosine decay,
    MSE loss, the same epochs and batches (``seed`` fixes the shuffling order). Returns the history,
    the test MSE and the measured training time."""
    loader = DataLoader(
        splits.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(splits.val, batch_size=1024)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * len(loader)
    scheduler = warmup_cosine(optimizer, int(warmup_fraction * total), total) if warmup_fraction else None
    start = time.perf_counter()
    history = fit(
        model,
        loader,
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=nn.MSELoss(),
        val_loader=val_loader,
        scheduler=scheduler,
        device=device,
        metric=None,
        grad_clip=grad_clip,
        desc=desc,
    )
    seconds = time.perf_counter() - start
    test = evaluate(model, DataLoader(splits.test, batch_size=1024), nn.MSELoss(), device, metric=None)
    return RegressionRun(history, test["loss"], seconds)


# --- Which input positions does a trained model use? -------------------------------------------------


@torch.no_grad()
def occlusion_importance(model: nn.Module, x: Tensor, baseline: float | None = 0.0) -> Tensor:
    """Mean |change of the prediction| when position i is replaced by ``baseline``, for every i.

    ``baseline=None`` replaces a step by its sequence's mean instead of a constant.
    Returns (seq_len,). Model-agnostic: it only calls ``model(x)``.
    """
    _check_sequence(x)
    model.eval()
    reference = model(x)
    fill = x.mean(dim=1) if baseline is None else torch.full_like(x[:, 0], baseline)  # (B, 1)
    scores = []
    for i in range(x.shape[1]):
        occluded = x.clone()
        occluded[:, i] = fill
        scores.append((model(occluded) - reference).abs().mean())
    return torch.stack(scores)


def gradient_saliency(model: nn.Module, x: Tensor, times_input: bool = False) -> Tensor:
    """Mean |d prediction / d x_i| over the batch, for every position i (``times_input``: |grad · x_i|).

    Returns (seq_len,). The gradient says how much a small change at step i moves the prediction.
    """
    _check_sequence(x)
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    # cuDNN's RNN backward refuses eval mode; the native kernels give the same gradient.
    with torch.backends.cudnn.flags(enabled=False):
        (grad,) = torch.autograd.grad(model(x).sum(), x)  # rows independent: d(sum)/dx_b = d(pred_b)/dx_b
    grad = grad * x if times_input else grad
    return grad.detach().abs().mean(dim=0).squeeze(-1)
