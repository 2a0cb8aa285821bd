import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.training import (
    History,
    Recipe,
    cosine_schedule,
    evaluate,
    fit,
    parallel_map,
    parallel_workers,
    param_groups,
    tensor_loader,
    train_classifier,
    warmup_cosine,
)
from common.vit import VisionTransformer


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


def test_cosine_schedule_follows_the_formula():
    # Written out by hand: 10 warm-up steps 0.1, 0.2, ..., 1.0, then n = 100 steps base -> final.
    values = cosine_schedule(1.0, 0.1, total_steps=110, warmup_steps=10, warmup_start=0.0)
    assert len(values) == 110
    assert values[:10] == pytest.approx([0.1 * (i + 1) for i in range(10)])
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 99)) for i in range(100)]
    assert values[10:] == pytest.approx(expected)
    assert values[10] == 1.0 and values[-1] == pytest.approx(0.1)  # starts at base, ends exactly at final
    momentum = cosine_schedule(0.996, 1.0, total_steps=50)  # DINO's teacher momentum: ends exactly at 1
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, total_steps=5, warmup_steps=5)


def test_warmup_cosine_steps_the_learning_rate_through_the_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):  # two steps past the end stay at the floor
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    cosine = [2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 9))) for i in range(10)]
    assert lrs[4:14] == pytest.approx(cosine)
    assert lrs[13:] == pytest.approx([0.2, 0.2, 0.2])


@pytest.mark.parametrize("shuffle, seeded", [(True, True), (True, False), (False, False)])
def test_tensor_loader_gives_dataloaders_batches_and_draws_the_same_random_numbers(shuffle, seeded):
    data = TensorDataset(torch.randn(203, 5, 2), torch.arange(203))  # 203: a last, shorter batch
    g1, g2 = (torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)) if seeded else (None, None)
    reference = DataLoader(data, batch_size=16, shuffle=shuffle, generator=g1)
    loader = tensor_loader(data, 16, shuffle=shuffle, generator=g2)
    assert len(loader) == len(reference) == 13
    for _ in range(3):  # every epoch, not only the first: each one draws a new permutation
        torch.manual_seed(11)
        expected = list(reference)
        after_reference = torch.rand(1)
        torch.manual_seed(11)
        got = list(loader)
        assert torch.equal(torch.rand(1), after_reference)  # the global generator was used alike
        assert len(got) == len(expected)
        for (x, y), (ex, ey) in zip(got, expected):
            assert torch.equal(x, ex) and torch.equal(y, ey)
    if seeded:
        assert torch.equal(g1.get_state(), g2.get_state())


def test_bad_arguments():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(opt, 10, 5)
    with pytest.raises(ValueError, match="epochs"):
        fit(nn.Linear(1, 1), [], epochs=0, optimizer=opt)


def test_param_groups_skip_embeddings_biases_and_norms():
    vit = VisionTransformer(img_size=16, patch_size=8, num_classes=2, embed_dim=16, depth=1, num_heads=2)
    decay, no_decay = param_groups(vit, 0.05, ("pos_embed", "cls_token"))
    names = {id(p): n for n, p in vit.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"pos_embed", "cls_token", "norm.weight", "head.bias", "blocks.0.attn.qkv.bias"} <= skipped
    assert all(p.ndim in (2, 4) for p in decay["params"])  # linear and conv weights only
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(vit.parameters()))


def test_train_classifier_learns_a_separable_task():
    torch.manual_seed(0)
    x = torch.randn(512, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0).long()  # the class is the sign of one channel's mean: linear
    data = TensorDataset(x, y)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    history = train_classifier(
        model, data, data, Recipe(epochs=6, batch_size=64, lr=1e-2, label_smoothing=0.0)
    )
    assert history.last("val_metric") > 0.9
    with pytest.raises(ValueError, match="no full batch"):
        train_classifier(model, TensorDataset(x[:10], y[:10]), data, Recipe(epochs=1, batch_size=64))


# parallel_map forks only on Linux with more than one core (os.sched_getaffinity is missing on macOS and Windows).
MULTICORE = sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1

# A fresh interpreter: this test process may have started autograd's threads, after which torch refuses
# autograd in forked workers (parallel_map then runs serially; tested below).
_PARALLEL_PROBE = """
import os, torch
from common.runtime import seed_everything
from common.training import parallel_map

def train(seed):  # a few Adam steps of a tiny MLP: its weights, and the process that trained it
    seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return os.getpid(), torch.cat([p.detach().flatten() for p in model.parameters()])

threads = torch.get_num_threads()
torch.set_num_threads(1)
expected = [train(s)[1] for s in range(3)]  # the reference: a plain loop here, on one thread
torch.set_num_threads(threads)
got = parallel_map(lambda s: train(s), range(3))  # a closure: the workers inherit it
print(all(torch.equal(g, e) for (_, g), e in zip(got, expected)), len({p for p, _ in got} - {os.getpid()}) > 0,
      torch.get_num_threads() == threads)
"""


def test_parallel_map_equals_a_plain_loop_on_one_thread_and_uses_other_processes():
    env = dict(os.environ, COURSE_WORKERS="2", TQDM_DISABLE="1")
    out = subprocess.run(
        [sys.executable, "-c", _PARALLEL_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    equal, other_process, threads_restored = out.stdout.split()
    assert equal == "True", "parallel results differ from the plain loop's"
    assert threads_restored == "True"
    if MULTICORE:
        assert other_process == "True", "no run left the calling process"


def test_parallel_map_is_serial_with_one_worker_and_restores_the_thread_count(monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "1")
    threads = torch.get_num_threads()
    assert parallel_map(lambda s: (os.getpid(), torch.get_num_threads()), [0, 1]) == [(os.getpid(), 1)] * 2
    assert torch.get_num_threads() == threads
    assert parallel_workers("cuda") == 1  # CUDA cannot be forked
    assert parallel_workers("cpu:0") == 1  # scripts/check_devices' emulated accelerator


def test_parallel_map_passes_a_workers_error_on(monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")

    def fails(i):
        if i == 1:
            raise ValueError("run 1 diverged")
        return i

    with pytest.raises(ValueError, match="run 1 diverged"):
        parallel_map(fails, [0, 1, 2])


@pytest.mark.skipif(not MULTICORE, reason="one core or not Linux: parallel_map is serial")
def test_parallel_map_runs_serially_where_torch_refuses_autograd_in_a_fork(monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "2")
    parent = os.getpid()

    def job(i):  # torch's own message, raised in a worker as torch raises it there
        if os.getpid() != parent:
            raise RuntimeError(
                "Unable to handle autograd's threading in combination with fork-based "
                "multiprocessing. See https://github.com/pytorch/pytorch/wiki/Autograd-and-Fork"
            )
        return i * i

    with pytest.warns(RuntimeWarning, match="one after another"):
        assert parallel_map(job, [1, 2, 3]) == [1, 4, 9]


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_parallel_workers_rejects_a_bad_setting_naming_the_fix(monkeypatch, value):
    monkeypatch.setenv("COURSE_WORKERS", value)
    with pytest.raises(ValueError, match="COURSE_WORKERS must be a whole number >= 1"):
        parallel_workers()
