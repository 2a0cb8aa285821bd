"""Next-value regressors for the sine-wave task (:mod:`common.sine_waves`) and their one training recipe.

- :class:`TransformerRegressor`: the lab guide's model, built from :class:`common.blocks.TransformerBlock`.
- :class:`RecurrentRegressor`: an RNN, LSTM or GRU with the same input and output.
- :func:`train_regressor`: Adam, warm-up + cosine, MSE; the same epochs and batches for every model.
- Lab 6.5's exercises: the reference solutions :func:`attention_parameters`, :func:`scaling_exponent` (and
  :func:`common.sine_waves.shuffle_past`) and their checks ``check_<name>(fn)``, which raise an AssertionError
  that names the usual mistake.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from common.attention import MultiHeadAttention
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


# ------------------------------------------------------------------------------------------ lab 6.5's exercises
def attention_parameters(d_model: int, num_heads: int) -> int:
    """Parameters of one multi-head self-attention layer (fused QKV with bias, output projection with bias):
    ``4 d² + 4 d`` whatever ``num_heads``: the heads split ``d_model`` into ``num_heads`` slices of
    ``d_model / num_heads``, they do not add weights."""
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}).")
    return 3 * (d_model * d_model + d_model) + (d_model * d_model + d_model)


def check_attention_parameters(fn: Callable[[int, int], int]) -> None:
    """Exercise 1: ``fn(d_model, num_heads)`` must equal the parameter count of
    :class:`common.attention.MultiHeadAttention` (counted from the layer itself, not from a formula)."""
    for d, h in ((32, 1), (32, 2), (32, 4), (32, 8), (48, 3)):
        want = sum(p.numel() for p in MultiHeadAttention(d, h).parameters())
        got = fn(d, h)
        if got == want:
            continue
        if got == 4 * d * d:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} counts the weights only; add the four bias vectors"
            )
        if got == 3 * d * d + 3 * d:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} is Q, K and V only; add the output projection"
            )
        if h > 1 and got == h * want:
            raise AssertionError(
                f"d_model={d}, heads={h}: {got} gives every head full-size d_model x d_model projections; the heads "
                f"share one projection and split its {d} outputs into {h} slices of {d // h}"
            )
        raise AssertionError(f"d_model={d}, heads={h}: got {got}, the layer has {want}")


def check_shuffle_past(
    fn: Callable[[Tensor, torch.Generator], Tensor], x: Tensor, *, blind: nn.Module, aware: nn.Module
) -> None:
    """Exercise 2: ``fn(x, generator)`` must reorder the past of ``x`` (B, N, 1) and keep the last step; then a
    model without positions (``blind``) must give the same predictions, a model with positions (``aware``) not."""
    original = x.clone()
    shuffled = fn(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, original), "x was changed in place; return a shuffled copy"
    assert isinstance(shuffled, Tensor) and shuffled.shape == x.shape, (
        f"return a tensor shaped like x {tuple(x.shape)}, got "
        f"{tuple(shuffled.shape) if isinstance(shuffled, Tensor) else type(shuffled).__name__}"
    )
    assert torch.equal(shuffled[:, -1], x[:, -1]), (
        "the last step must stay last (it is the query); shuffle x[:, :-1] only"
    )
    assert torch.equal(shuffled.sort(dim=1).values, x.sort(dim=1).values), (
        "each sequence must keep its own values in a new order: permute the time axis (dim 1), not the batch"
    )
    assert not torch.equal(shuffled, x), "the past is in its original order; permute x[:, :-1]"
    with torch.no_grad():
        assert torch.allclose(blind(shuffled), blind(x), atol=1e-4), (
            "the model without positional encoding should not notice the shuffle; is the last step still last?"
        )
        assert not torch.allclose(aware(shuffled), aware(x), atol=1e-3), (
            "the model with positional encoding should notice the shuffle"
        )


def scaling_exponent(lengths: Sequence[float], seconds: Sequence[float]) -> float:
    """The exponent ``k`` of ``t = c n^k``, fitted by least squares on ``log t = log c + k log n``."""
    return float(np.polyfit(np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float)), 1)[0])


def check_scaling_exponent(
    fn: Callable[[Sequence[float], Sequence[float]], float],
    measured: tuple[Sequence[float], Sequence[float]] | None = None,
) -> None:
    """Exercise 3: ``fn(lengths, seconds)`` must recover known exponents from synthetic timings, and agree with
    :func:`scaling_exponent` on ``measured`` = (lengths, seconds) when given."""
    n = np.array([10.0, 20.0, 50.0, 100.0, 200.0])
    noise = np.exp(np.array([0.05, -0.04, 0.0, 0.03, -0.05]))
    for k, c in ((2.0, 3e-6), (1.0, 0.5), (0.5, 2e-3)):
        t = c * n**k * noise
        got, want = float(fn(n, t)), scaling_exponent(n, t)
        if abs(got - want) < 1e-6:
            continue
        if abs(got - np.polyfit(n, t, 1)[0]) < 1e-9:
            raise AssertionError("that is the slope of t against n; fit log(t) against log(n)")
        if abs(got - np.polyfit(np.log(n), np.log(t), 1)[1]) < 1e-9:
            raise AssertionError("that is the intercept log(c); np.polyfit returns [slope, intercept]")
        if abs(got - np.log(t[-1] / t[-2]) / np.log(n[-1] / n[-2])) < 1e-9:
            raise AssertionError(
                "two points give a noisy slope; fit a least-squares line through all of them"
            )
        raise AssertionError(
            f"t = {c} n^{k} (with 5% noise): expected an exponent near {want:.3f}, got {got:.3f}"
        )
    if measured is not None:
        got, want = float(fn(*measured)), scaling_exponent(*measured)
        assert abs(got - want) < 1e-6, f"on the measured timings: expected {want:.3f}, got {got:.3f}"
