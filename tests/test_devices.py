"""scripts/check_devices.py: the emulated accelerator raises where CUDA would (and only there), and the check
catches lab 6.3's CPU-tokens-into-a-device-model bug."""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.course import repo_root
from common.positional import LearnedPositionalEmbedding
from common.runtime import seed_everything
from common.training import evaluate, fit
from scripts.check_devices import (
    DEVICE,
    SHRINK,
    DeviceMismatchError,
    EmulatedDevice,
    notebook_key,
    on_device,
    run_notebook,
)


def _tokens_model(max_len: int = 8) -> nn.Module:
    """Lab 6.3's 'learned' model in small: embedding, a learned position table (ValueError past max_len)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(12, 16),
        LearnedPositionalEmbedding(16, max_len),
        nn.Flatten(),
        nn.Linear(16 * max_len, 2),
    )


def test_cpu_tokens_into_a_device_model_raise_a_runtime_error_like_cuda():
    with EmulatedDevice():
        model = _tokens_model().to(DEVICE)
        assert all(on_device(p) for p in model.parameters()) and next(model.parameters()).device == DEVICE
        with pytest.raises(DeviceMismatchError, match="embedding") as caught:
            try:  # lab 6.3's extrapolation cell: `except ValueError` does not catch what CUDA raises
                model(torch.randint(0, 12, (1, 16)))
            except ValueError:
                pytest.fail("the device mismatch must come first, as a RuntimeError")
        assert isinstance(caught.value, RuntimeError) and not isinstance(caught.value, ValueError)
        with pytest.raises(ValueError, match="cannot extrapolate"):  # moved: the intended error
            model(torch.randint(0, 12, (1, 16)).to(DEVICE))
        assert on_device(model(torch.randint(0, 12, (3, 8)).to(DEVICE)))


def test_the_course_training_loop_runs_on_the_emulated_device_without_false_alarms():
    data = TensorDataset(torch.randint(0, 12, (64, 8)), torch.randint(0, 2, (64,)))
    with EmulatedDevice():
        model = _tokens_model()
        model(data.tensors[0][:2])  # a CPU forward before training, as the notebooks do
        history = fit(
            model,
            DataLoader(data, batch_size=16, shuffle=True),
            epochs=2,
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            device=DEVICE,
            grad_clip=1.0,
        )
        assert history.last("train_metric") is not None
        assert all(on_device(p) and on_device(p.grad) for p in model.parameters())
        assert 0 <= evaluate(model, DataLoader(data, batch_size=32), device=DEVICE)["metric"] <= 1
        model.cpu()
        assert not any(on_device(p) for p in model.parameters())
        model(data.tensors[0][:2])  # back on the CPU, CPU inputs are right again


def test_numpy_and_plots_need_cpu_first():
    with EmulatedDevice():
        t = torch.randn(5, device=DEVICE)
        for read in (lambda x: x.numpy(), np.asarray, lambda x: plt.plot(x)):
            with pytest.raises(DeviceMismatchError, match=r"\.cpu\(\) first"):
                read(t)
        assert t.cpu().numpy().shape == (5,) and not on_device(t.cpu())
        assert (
            len(t.tolist()) == 5 and isinstance(t.sum().item(), float) and f"{t[0]:.2f}"
        )  # CUDA allows these
        plt.close("all")


def test_what_cuda_accepts_passes_and_what_it_refuses_raises():
    with EmulatedDevice():
        x, host = torch.randn(4, 3, device=DEVICE), torch.randn(4, 3)
        assert on_device(x * torch.tensor(2.0))  # a CPU scalar (0-dim) is fine
        assert on_device(x[torch.tensor([0, 2])])  # CPU indices into a device tensor are fine
        assert on_device(host.to(x.device) + x) and x.device == DEVICE  # .device names the device
        assert on_device(x.new_zeros(2)) and on_device(torch.zeros_like(x))
        assert not on_device(torch.zeros_like(x, device="cpu"))
        x.copy_(host)  # copies across devices are fine
        assert not on_device(host) and not on_device(host.to(DEVICE).cpu())  # moves copy, the source stays
        for refused in (
            lambda: x + host,
            lambda: host + x,
            lambda: torch.cat([x, host]),
            lambda: host[torch.tensor([0, 1], device=DEVICE)],
            lambda: host.add_(x),  # a device result written into a CPU tensor
            lambda: torch.allclose(x, host),
            lambda: nn.functional.layer_norm(x, (3,), torch.ones(3), torch.zeros(3)),  # 6.3's CPU LayerNorm
            lambda: torch.randn(3, device=DEVICE, generator=torch.Generator().manual_seed(0)),
        ):
            with pytest.raises(DeviceMismatchError):
                refused()


def test_deterministic_seeding_fixes_the_cublas_workspace(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset")  # restored (removed) after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    try:
        seed_everything(0, deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # else every CUDA matmul warns
    finally:
        torch.use_deterministic_algorithms(False)


# ------------------------------------------------------------------------------------------------- lab 6.3
LAB = Path("week6/03_positional_encoding.ipynb")
FIXES = {  # each fix as the notebook has it now, and the original line, which fails on CUDA
    "embed": (".embed(test_sets[SEQ_LEN][0][:5].to(device)).cpu()", ".embed(test_sets[SEQ_LEN][0][:5])"),
    "extrapolation": (
        'models["learned"](test_sets[cfg["test_lengths"][1]][0][:1].to(device))',
        'models["learned"](test_sets[cfg["test_lengths"][1]][0][:1])',
    ),
}


def _run_lab(tmp_path, monkeypatch, undo: str | None = None) -> None:
    monkeypatch.setenv("COURSE_OUTPUTS", str(tmp_path / "outputs"))
    nb = nbformat.read(repo_root() / LAB, as_version=4)
    if undo:
        fixed, original = FIXES[undo]
        (cell,) = [c for c in nb.cells if fixed in c.source]
        cell.source = cell.source.replace(fixed, original)
    path = tmp_path / LAB.name
    nbformat.write(nb, path)
    run_notebook(path, {**SHRINK[notebook_key(LAB)], "n_train": 100, "n_test": 40})


def test_lab_6_3_runs_on_the_emulated_device(tmp_path, monkeypatch):
    _run_lab(tmp_path, monkeypatch)


@pytest.mark.parametrize("undo", FIXES)
def test_the_check_catches_lab_6_3s_cpu_tokens_bugs(tmp_path, monkeypatch, undo):
    with pytest.raises(DeviceMismatchError, match="embedding") as caught:
        _run_lab(tmp_path, monkeypatch, undo)
    nb = nbformat.read(repo_root() / LAB, as_version=4)
    (index,) = [i for i, c in enumerate(nb.cells) if FIXES[undo][0] in c.source]
    assert f"cell {index}" in caught.value.__notes__[-1]


def test_packed_sequences_keep_their_lengths_on_the_cpu_as_torch_requires():
    # torch's pack_padded_sequence takes `lengths` on the CPU even on CUDA, and a PackedSequence's batch_sizes
    # stay there; the data and the RNN's outputs are on the device. CPU data into a device GRU still raises.
    torch.manual_seed(0)
    with EmulatedDevice():
        gru = nn.GRU(4, 8, batch_first=True).to(DEVICE)
        x, lengths = torch.randn(3, 5, 4).to(DEVICE), torch.tensor([5, 3, 2])
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        assert on_device(packed.data) and not on_device(packed.batch_sizes)
        out, _ = nn.utils.rnn.pad_packed_sequence(gru(packed)[0], batch_first=True)
        assert on_device(out) and out.shape == (3, 5, 8)
        with pytest.raises(DeviceMismatchError, match="gru"):
            gru(nn.utils.rnn.pack_padded_sequence(torch.randn(3, 5, 4), lengths, batch_first=True))
