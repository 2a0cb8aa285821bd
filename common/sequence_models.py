"""Next-value regressors for the sine-wave task (:mod:`common.sine_waves`) and their one training recipe.

- :class:`TransformerRegressor`: the lab guide's model, built from :class:`common.blocks.TransformerBlock`.
- :class:`RecurrentRegressor`: an RNN, LSTM or GRU with the same input and output.
- :func:`train_regressor`: Adam, warm-up + cosine, MSE; the same epochs and batches for every model.
- :func:`scaling_exponent`: the exponent ``k`` of a power law ``t = c n^k`` (lab 6.5's forward time against the
  sequence length).
- :func:`require_sequence`: the models' input check, a ValueError saying how to fix the shape.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from common.blocks import TransformerBlock
from common.positional import SinusoidalPositionalEncoding
from common.sine_waves import SineWaveSplits
from common.training import History, evaluate, fit, tensor_loader, warmup_cosine


class TransformerRegressor(nn.Module):
    """The lab guide's model: Linear(1 -> d_model), sinusoidal positions, ``num_layers`` transformer blocks
    (``num_heads`` heads, FFN d_model -> d_ff -> d_model), the last position's vector, Linear(d_model -> 1).

    ``in_features``/``out_features`` (default 1 and 1) serve lab 6.5's recall task: 2 input channels, one
    logit per symbol. ``positional=False`` drops the positional encoding (the practice task "train without positions").
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
        in_features: int = 1,
        out_features: int = 1,
    ):
        super().__init__()
        if d_ff % d_model:
            raise ValueError(f"d_ff ({d_ff}) must be a multiple of d_model ({d_model}).")
        self.in_features = in_features
        self.input_proj = nn.Linear(in_features, d_model)
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
        self.head = nn.Linear(d_model, out_features)

    def forward(self, x: Tensor, return_attention: bool = False):
        """``x`` (B, N, in_features) -> (B, out_features); with ``return_attention`` also a list of
        (B, heads, N, N) per layer."""
        require_sequence(x, self.in_features)
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
    """``cell`` ("rnn", "lstm" or "gru") over the sequence, the last hidden state -> Linear -> ``out_features``
    values (default 1)."""

    def __init__(
        self,
        cell: str = "rnn",
        hidden_size: int = 64,
        *,
        num_layers: int = 1,
        in_features: int = 1,
        out_features: int = 1,
    ):
        super().__init__()
        if cell not in RECURRENT:
            raise ValueError(f"unknown cell {cell!r}; use one of {sorted(RECURRENT)}.")
        self.in_features = in_features
        self.rnn = RECURRENT[cell](in_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, out_features)

    def forward(self, x: Tensor) -> Tensor:
        require_sequence(x, self.in_features)
        out, _ = self.rnn(x)  # (B, N, hidden): the hidden state after every step
        return self.head(out[:, -1])


SEQUENCE_MODELS = ("Transformer", "RNN", "LSTM")


def build_sequence_model(
    name: str, *, in_features: int = 1, out_features: int = 1, **transformer_kw
) -> nn.Module:
    """Lab 6.5's three models at their one size: the Transformer (d_model 32, 4 heads, FFN 128, one block; extra
    keywords go to :class:`TransformerRegressor`) or an RNN / LSTM of hidden size 64."""
    if name == "Transformer":
        kw = dict(d_model=32, num_heads=4, d_ff=128) | transformer_kw
        return TransformerRegressor(in_features=in_features, out_features=out_features, **kw)
    if name in ("RNN", "LSTM") and not transformer_kw:
        return RecurrentRegressor(name.lower(), 64, in_features=in_features, out_features=out_features)
    raise ValueError(
        f"unknown model {name!r} (or Transformer keywords given to it); use one of {SEQUENCE_MODELS}."
    )


def require_sequence(x: Tensor, features: int = 1) -> None:
    """Raise a ValueError saying how to fix ``x`` unless it is (batch, seq_len, features)."""
    if x.ndim != 3 or x.shape[-1] != features:
        fix = (
            "add the feature axis with x.unsqueeze(-1)"
            if features == 1 and x.ndim == 2
            else (f"the model was built with in_features={features}")
        )
        raise ValueError(
            f"expected a (batch, seq_len, {features}) tensor, got shape {tuple(x.shape)}; {fix}."
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
    loader = tensor_loader(
        splits.train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = tensor_loader(splits.val, 1024)
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
    test = evaluate(model, tensor_loader(splits.test, 1024), nn.MSELoss(), device, metric=None)
    return RegressionRun(history, test["loss"], seconds)


# -------------------------------------------------------------------------- the recall task (common.recall)
@dataclass
class RecallRun:
    history: History
    test_accuracy: float
    accuracy_by_lag: np.ndarray  # test accuracy at lag 0, 1, ..., max lag
    seconds: float


def recall_accuracy_by_lag(model: nn.Module, dataset, device="cpu") -> np.ndarray:
    """Accuracy of ``model`` on a (inputs, targets, lags) dataset, one value per lag 0..max(lags)."""
    x, y, lags = dataset.tensors
    model.eval()
    with torch.no_grad():
        correct = torch.cat(
            [model(xb.to(device)).argmax(-1).cpu() == yb for xb, yb in zip(x.split(1024), y.split(1024))]
        )
    counts = torch.bincount(lags).clamp_min(1)
    return (torch.bincount(lags, weights=correct.double()) / counts).numpy()


def train_recall(
    model: nn.Module,
    splits,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_fraction: float = 0.05,
    device="cpu",
    seed: int = 0,
    desc: str = "train",
) -> RecallRun:
    """:func:`train_regressor`'s recipe (Adam, warm-up + cosine) with cross-entropy, for
    :func:`common.recall.recall_splits`; returns the test accuracy overall and per lag."""
    loader = tensor_loader(
        splits.train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * len(loader)
    scheduler = warmup_cosine(optimizer, int(warmup_fraction * total), total) if warmup_fraction else None
    start = time.perf_counter()
    history = fit(
        model,
        loader,
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        val_loader=tensor_loader(splits.val, 1024),
        scheduler=scheduler,
        device=device,
        metric="accuracy",
        desc=desc,
    )
    seconds = time.perf_counter() - start
    by_lag = recall_accuracy_by_lag(model, splits.test, device)
    test = evaluate(model, tensor_loader(splits.test, 1024), nn.CrossEntropyLoss(), device)
    return RecallRun(history, test["metric"], by_lag, seconds)


# ---------------------------------------------------------------------------- the linear baseline (Zeng et al.)
class LinearAutoregressor(nn.Module):
    """The next value as one linear function of the ``seq_len`` observed values plus a bias: the one-layer
    linear forecaster of Zeng et al. (2023, "Are Transformers Effective for Time Series Forecasting?").
    :func:`fit_least_squares` gives its exact training-MSE minimiser, so it needs no learning rate."""

    def __init__(self, seq_len: int):
        super().__init__()
        self.linear = nn.Linear(seq_len, 1)

    def forward(self, x: Tensor) -> Tensor:
        require_sequence(x)
        return self.linear(x[..., 0])


def fit_least_squares(model: LinearAutoregressor, dataset) -> LinearAutoregressor:
    """Set ``model``'s weights to the least-squares solution on ``dataset`` (inputs (B, N, 1), targets (B, 1))."""
    x, y = dataset.tensors[:2]
    if x.shape[1] != model.linear.in_features:
        raise ValueError(f"the data has {x.shape[1]} steps; build LinearAutoregressor({x.shape[1]}).")
    design = torch.cat([x[..., 0], torch.ones(len(x), 1)], dim=1).double()  # last column: the bias
    solution = torch.linalg.lstsq(design, y.double(), driver="gelsd").solution[:, 0]
    with torch.no_grad():
        model.linear.weight.copy_(solution[:-1].float()[None])
        model.linear.bias.copy_(solution[-1:].float())
    return model


# ------------------------------------------------------------------------------------------ scaling laws
def scaling_exponent(lengths: Sequence[float], seconds: Sequence[float]) -> float:
    """The exponent ``k`` of ``t = c n^k``, fitted by least squares on ``log t = log c + k log n``."""
    return float(np.polyfit(np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float)), 1)[0])
