"""Next-value regressors for the sine-wave task (:mod:`common.sine_waves`) and their one training recipe.

- :class:`TransformerRegressor`: the lab guide's model, built from :class:`common.blocks.TransformerBlock`.
- :class:`RecurrentRegressor`: an RNN, LSTM or GRU with the same input and output.
- :func:`train_regressor`: Adam, warm-up + cosine, MSE; the same epochs and batches for every model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common.blocks import TransformerBlock
from common.positional import SinusoidalPositionalEncoding
from common.sine_waves import SineWaveSplits
from common.training import History, evaluate, fit, warmup_cosine


class TransformerRegressor(nn.Module):
    """The lab guide's model: Linear(1 -> d_model), sinusoidal positions, ``num_layers`` transformer blocks
    (``num_heads`` heads, FFN d_model -> d_ff -> d_model), the last position's vector, Linear(d_model -> 1).

    ``positional=False`` drops the positional encoding (the practice task "train without positions").
    ``norm``/``activation`` are passed to :class:`common.blocks.TransformerBlock`; with pre-norm
    blocks a final LayerNorm closes the stack (as in GPT-2/ViT), with post-norm the blocks end normed.
    """

    def __init__(
        self,
        d_model: int = 32,
        num_heads: int = 4,
        *,
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
        check_sequence(x)
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

    def __init__(self, cell: str = "rnn", hidden_size: int = 64, *, num_layers: int = 1):
        super().__init__()
        if cell not in RECURRENT:
            raise ValueError(f"unknown cell {cell!r}; use one of {sorted(RECURRENT)}.")
        self.rnn = RECURRENT[cell](1, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_sequence(x)
        out, _ = self.rnn(x)  # (B, N, hidden): the hidden state after every step
        return self.head(out[:, -1])


def check_sequence(x: Tensor) -> None:
    """Raise a ValueError saying how to fix ``x`` unless it is (batch, seq_len, 1)."""
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
    """The one training recipe every model of labs 6.4 and 6.5 gets: Adam, linear warm-up + cosine decay to 0
    (``warmup_fraction=0``: a constant rate instead), MSE loss, the same epochs and batches (``seed`` fixes
    the shuffling order). Returns the history, the test MSE and the measured training time."""
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
