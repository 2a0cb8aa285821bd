import math

import numpy as np
import pytest
import torch
from test_blocks import torch_layer  # torch's encoder layer loaded with a block's weights
from test_positional_extra import formula_table  # the paper's sinusoidal table, written out
from torch import nn

from common.diagnostics import gradient_saliency, occlusion_importance
from common.sequence_models import (
    RecurrentRegressor,
    TransformerRegressor,
    scaling_exponent,
)
from common.sine_waves import sine_wave_splits, sine_waves


def test_sine_waves_follow_the_sine_recurrence():
    # Any sampled sine obeys y[t+1] = 2 cos(f) y[t] - y[t-1]; a single wave of known f checks the layout
    # (inputs are y(0..N-1), the target is y(N)).
    x, y = sine_waves(1, seq_len=20, seed=3, amplitude=(1.0, 1.0), frequency=(0.3, 0.3))
    assert x.shape == (1, 20, 1) and y.shape == (1, 1)
    seq = torch.cat([x[0, :, 0], y[0]]).double()
    torch.testing.assert_close(seq[2:], 2 * math.cos(0.3) * seq[1:-1] - seq[:-2], atol=1e-5, rtol=0)
    assert seq.abs().max() <= 1.0 + 1e-6


def test_sine_waves_are_reproducible_and_the_splits_differ():
    a, _ = sine_waves(8, seed=1)
    b, _ = sine_waves(8, seed=1)
    torch.testing.assert_close(a, b)
    splits = sine_wave_splits(16, 4, 8, seed=0)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [16, 4, 8]
    assert not torch.allclose(splits.train.tensors[0][:4], splits.val.tensors[0])


def test_noise_touches_inputs_only():
    clean_x, clean_y = sine_waves(4, seed=2)
    noisy_x, noisy_y = sine_waves(4, seed=2, noise_std=0.1)
    torch.testing.assert_close(clean_y, noisy_y)
    assert 0.03 < (noisy_x - clean_x).std().item() < 0.3


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="seq_len"):
        sine_waves(4, seq_len=1)
    with pytest.raises(ValueError, match="noise_std"):
        sine_waves(4, noise_std=-1)
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentRegressor("transformer")
    with pytest.raises(ValueError, match="divisible"):
        TransformerRegressor(d_model=32, num_heads=3)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 1\)"):
        TransformerRegressor()(torch.randn(2, 20))


def test_transformer_regressor_parameter_count_matches_the_seed_architecture():
    d, d_ff = 32, 128
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 4 * d
    expected = (1 * d + d) + block + 2 * d + (d + 1)  # input proj, block, final LayerNorm, head
    model = TransformerRegressor(d_model=d, num_heads=4, d_ff=d_ff)
    assert sum(p.numel() for p in model.parameters()) == expected
    out, weights = model(torch.randn(3, 20, 1), return_attention=True)
    assert out.shape == (3, 1) and len(weights) == 1 and weights[0].shape == (3, 4, 20, 20)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(3, 4, 20))


def test_transformer_regressor_equals_the_lab_guide_model_built_from_torch_layers():
    # Reference: Linear(1 -> d) + the paper's sinusoids, torch's TransformerEncoderLayer (pre-norm, GELU) per
    # block, a final LayerNorm, the last position, Linear(d -> 1); torch functions throughout, same weights.
    torch.manual_seed(0)
    model = TransformerRegressor(d_model=16, num_heads=2, d_ff=32, num_layers=2).eval()
    x = torch.randn(2, 12, 1)
    h = nn.functional.linear(x, model.input_proj.weight, model.input_proj.bias) + formula_table(12, 16)
    for block in model.blocks:
        h = torch_layer(block, norm_first=True)(h)
    h = nn.functional.layer_norm(h[:, -1], (16,), model.norm.weight, model.norm.bias)
    expected = nn.functional.linear(h, model.head.weight, model.head.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_without_positions_the_past_order_does_not_matter():
    # No positional encoding + last-position pooling: the last query sees the past as a set.
    torch.manual_seed(0)
    x = torch.randn(4, 10, 1)
    shuffled = torch.cat([x[:, torch.randperm(9)], x[:, -1:]], dim=1)
    blind = TransformerRegressor(positional=False).eval()
    torch.testing.assert_close(blind(x), blind(shuffled), atol=1e-5, rtol=0)
    aware = TransformerRegressor(positional=True).eval()
    assert not torch.allclose(aware(x), aware(shuffled), atol=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_regressor_reads_the_last_hidden_state(cell):
    torch.manual_seed(0)
    model = RecurrentRegressor(cell, hidden_size=8).eval()
    ref = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](1, 8, batch_first=True)
    ref.load_state_dict(model.rnn.state_dict())
    x = torch.randn(3, 7, 1)
    _, state = ref(x)
    h_last = (state[0] if cell == "lstm" else state)[-1]  # torch's final hidden state
    torch.testing.assert_close(model(x), model.head(h_last))


class LinearOverTime(nn.Module):
    """pred = Σ_i w_i x_i: the importance of every position is known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return (x.squeeze(-1) * self.w).sum(-1, keepdim=True)


def test_importance_methods_on_a_linear_model_match_the_formulas():
    w = torch.tensor([0.0, -1.0, 2.0, 0.5])
    model = LinearOverTime(w)
    x = torch.randn(5, 4, 1)
    torch.testing.assert_close(gradient_saliency(model, x), w.abs())
    torch.testing.assert_close(
        gradient_saliency(model, x, times_input=True), (w * x.squeeze(-1)).abs().mean(0)
    )
    # occluding step i with 0 removes w_i x_i; with the sequence mean m it changes by w_i (x_i - m)
    torch.testing.assert_close(occlusion_importance(model, x), (w * x.squeeze(-1)).abs().mean(0))
    m = x.mean(dim=1)
    torch.testing.assert_close(
        occlusion_importance(model, x, baseline=None), (w * (x.squeeze(-1) - m)).abs().mean(0)
    )


def test_train_regressor_learns_the_task_and_reports_test_mse():
    from common.sequence_models import train_regressor

    torch.manual_seed(0)
    splits = sine_wave_splits(256, 64, 128, seed=0)
    model = RecurrentRegressor("gru", hidden_size=16)
    baseline = nn.functional.mse_loss(torch.zeros(128, 1), splits.test.tensors[1]).item()  # predict 0
    run = train_regressor(model, splits, epochs=8, batch_size=32, lr=1e-2)
    assert len(run.history.records) == 8 and run.seconds > 0
    x_test, y_test = splits.test.tensors  # reference: the MSE over the whole test set, computed directly
    with torch.no_grad():
        ref = ((model(x_test) - y_test) ** 2).mean().item()
    assert run.test_mse == pytest.approx(ref, rel=1e-5)
    assert run.test_mse < 0.2 * baseline


# ------------------------------------------------------------------------------------------ scaling laws
def test_scaling_exponent_recovers_a_power_law_written_out():
    n = [8, 16, 32, 64]
    assert scaling_exponent(n, [3.0 * v**1.5 for v in n]) == pytest.approx(1.5)
    # two points: the exponent is log(t2/t1) / log(n2/n1), by hand
    assert scaling_exponent([10, 40], [0.2, 1.6]) == pytest.approx(math.log(8) / math.log(4))


# ------------------------------------------------------------------ lab 6.5's recall task and linear baseline
from common.recall import marked_recall, recall_splits  # noqa: E402
from common.sequence_models import (  # noqa: E402
    LinearAutoregressor,
    build_sequence_model,
    fit_least_squares,
    recall_accuracy_by_lag,
    train_recall,
)


def test_marked_recall_marks_one_step_and_targets_its_symbol():
    x, y, lags = marked_recall(500, seq_len=12, n_symbols=5, seed=3)
    assert x.shape == (500, 12, 2) and y.shape == (500,) and lags.shape == (500,)
    assert torch.equal(x[..., 1].sum(1), torch.ones(500))  # exactly one mark per sequence
    marked = x[..., 1].argmax(1)
    assert torch.equal(marked, 11 - lags)  # lag = steps from the mark to the last step
    levels = x[torch.arange(500), marked, 0]
    torch.testing.assert_close(levels, 2 * y.float() / 4 - 1)  # the target is the marked step's symbol
    assert set(lags.tolist()) == set(range(12)) and set(y.tolist()) == set(range(5))
    assert set(x[..., 0].unique().tolist()) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    torch.testing.assert_close(marked_recall(8, seed=1)[0], marked_recall(8, seed=1)[0])
    splits = recall_splits(16, 4, 8, seq_len=12)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [16, 4, 8]


def test_marked_recall_bad_arguments_raise():
    with pytest.raises(ValueError, match="max_lag"):
        marked_recall(4, seq_len=8, max_lag=8)
    with pytest.raises(ValueError, match="n_symbols"):
        marked_recall(4, n_symbols=1)


class _ReadStep(nn.Module):
    """A hand-written model: one-hot logits of the symbol at the marked step (or at the last step)."""

    def __init__(self, n_symbols, marked=True):
        super().__init__()
        self.n_symbols, self.marked = n_symbols, marked

    def forward(self, x):
        step = x[..., 1].argmax(1) if self.marked else torch.full((len(x),), x.shape[1] - 1)
        level = x[torch.arange(len(x)), step, 0]
        symbol = torch.round((level + 1) / 2 * (self.n_symbols - 1)).long()
        return nn.functional.one_hot(symbol, self.n_symbols).float()


def test_recall_accuracy_by_lag_against_hand_written_readers():
    data = recall_splits(8, 8, 4000, seq_len=10, n_symbols=8).test
    oracle = recall_accuracy_by_lag(_ReadStep(8), data)
    np.testing.assert_allclose(oracle, np.ones(10))
    last = recall_accuracy_by_lag(_ReadStep(8, marked=False), data)
    assert last[0] == 1.0 and abs(last[1:].mean() - 1 / 8) < 0.03  # right at lag 0, chance elsewhere


def test_linear_autoregressor_recovers_the_sine_recurrence():
    # one frequency: y[t+1] = 2 cos(f) y[t] - y[t-1] exactly, so least squares over 2 lags finds those weights,
    # the same as numpy's lstsq on the design matrix written out
    train = torch.utils.data.TensorDataset(*sine_waves(64, seq_len=2, seed=0, frequency=(0.3, 0.3)))
    model = fit_least_squares(LinearAutoregressor(2), train)
    torch.testing.assert_close(
        model.linear.weight[0], torch.tensor([-1.0, 2 * math.cos(0.3)]), atol=1e-4, rtol=0
    )
    x, y = sine_waves(256, seq_len=20, seed=1)
    train = torch.utils.data.TensorDataset(x, y)
    model = fit_least_squares(LinearAutoregressor(20), train)
    design = np.concatenate([x[..., 0].double().numpy(), np.ones((256, 1))], axis=1)
    want = np.linalg.lstsq(design, y.double().numpy(), rcond=None)[0][:, 0]
    with torch.no_grad():
        ours = model(x)[:, 0].double().numpy()
    np.testing.assert_allclose(ours, design @ want, atol=1e-4)
    with pytest.raises(ValueError, match="LinearAutoregressor"):
        fit_least_squares(LinearAutoregressor(5), train)


def test_build_sequence_model_sizes_and_channels():
    assert sum(p.numel() for p in build_sequence_model("RNN").parameters()) == 64 + 64 * 64 + 128 + 65
    transformer = build_sequence_model("Transformer", in_features=2, out_features=8)
    assert transformer(torch.randn(3, 7, 2)).shape == (3, 8)
    assert build_sequence_model("LSTM", in_features=2, out_features=8)(torch.randn(3, 7, 2)).shape == (3, 8)
    assert build_sequence_model("Transformer", num_heads=8).blocks[0].attn.num_heads == 8
    with pytest.raises(ValueError, match="unknown model"):
        build_sequence_model("GRU")
    with pytest.raises(ValueError, match="in_features=2"):
        transformer(torch.randn(3, 7, 1))


def test_train_recall_reports_accuracy_per_lag():
    splits = recall_splits(128, 32, 64, seq_len=6, n_symbols=4)
    torch.manual_seed(0)
    run = train_recall(build_sequence_model("RNN", in_features=2, out_features=4), splits, epochs=1, lr=1e-2)
    assert run.accuracy_by_lag.shape == (6,) and 0 <= run.test_accuracy <= 1
    assert len(run.history.records) == 1 and run.seconds > 0
