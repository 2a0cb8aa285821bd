import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.training import History, evaluate, fit, warmup_cosine


def _separable_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def test_fit_learns_a_separable_problem_and_records_history():
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    loader = _separable_data()
    hist = fit(
        model, loader, epochs=15, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), val_loader=loader
    )
    assert isinstance(hist, History) and hist["epoch"] == list(range(1, 16))
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist.last("val_metric") > 0.95
    # evaluate agrees with an accuracy computed directly
    x, y = loader.dataset.tensors
    direct = (model(x).argmax(-1) == y).float().mean().item()
    assert evaluate(model, loader)["metric"] == pytest.approx(direct)


def test_fit_regression_without_metric():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    hist = fit(
        model,
        loader,
        epochs=30,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.1),
        loss_fn=nn.MSELoss(),
        metric=None,
    )
    assert hist.last("train_metric") is None and hist.last("train_loss") < 1e-2


def test_warmup_cosine_follows_the_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    mid = 4 + 5  # half-way through the cosine part
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # reached the floor at total_steps


def test_bad_arguments():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(opt, 10, 5)
    with pytest.raises(ValueError, match="epochs"):
        fit(nn.Linear(1, 1), [], epochs=0, optimizer=opt)
