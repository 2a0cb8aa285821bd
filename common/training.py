"""A small, reusable training loop: progress bar, per-epoch history, evaluation, warm-up + cosine schedules,
week 4's supervised recipe (:class:`Recipe`, :func:`train_classifier`, :func:`param_groups`), and
:func:`parallel_map` for independent runs (seeds, settings) on every CPU core."""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from tqdm import TqdmWarning

# Without ipywidgets, tqdm.auto warns (printing a machine-specific path) and falls back to text bars.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

METRICS = ("accuracy", None)


def progress(iterable: Iterable, **kwargs):
    """tqdm.auto progress bar that disappears when done (tqdm itself reads ``TQDM_DISABLE=1``, which the
    headless runs set: papermill, nbval, CI)."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


_JOB: tuple[Callable, Sequence] | None = None  # what forked workers inherit instead of unpickling
_BAD_FORK = (
    "fork-based multiprocessing"  # torch's error in a worker forked after autograd started its threads
)


def _worker_init() -> None:
    torch.set_num_threads(1)  # more than one: GNU OpenMP's pool does not survive fork and the worker hangs
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (a worker's bars would interleave)


def _worker_call(i: int):
    fn, items = _JOB
    return fn(items[i])


def parallel_workers(device="cpu") -> int:
    """How many processes :func:`parallel_map` uses here: one per core; 1 (serial) on any device but the
    plain CPU (CUDA cannot be forked), where fork is missing or unsafe (Windows, macOS), or with
    ``COURSE_WORKERS=1``."""
    value = os.environ.get("COURSE_WORKERS", "")
    if value and not (value.isdigit() and int(value) >= 1):
        raise ValueError(
            f"COURSE_WORKERS must be a whole number >= 1, got {value!r}; unset it to use every core."
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # any device but the plain CPU is serial, "cpu:0" included (scripts/check_devices' emulated accelerator)
    if torch.device(device) != torch.device("cpu") or sys.platform != "linux":
        return 1
    return min(int(value), cores) if value else cores


def _serial_map(fn: Callable, items: list, device, desc: str | None) -> list:
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        return [fn(item) for item in progress(items, desc=desc)]
    finally:
        torch.set_num_threads(threads)


def parallel_map(fn: Callable, items: Sequence, *, device="cpu", desc: str | None = None) -> list:
    """``[fn(item) for item in items]``, the items spread over one forked process per CPU core.

    The week-6 models are so small that a training step is bound by Python and operator dispatch, not
    arithmetic: one process keeps one core busy whatever torch's thread count, so independent runs go one
    per core (1.3-1.8x faster on the course's 2-core machine, whose two cores slow each other down). Every
    call of ``fn`` runs with one torch thread, serial or not, so the results do not depend on the number of
    workers. ``fn`` and ``items`` reach the workers by fork, not pickling (a closure or a notebook function
    is fine); the results are pickled back, so return tensors, numbers or modules on the CPU. Each call
    must seed itself (``seed_everything``). Where torch refuses autograd in a forked worker (this process
    has started autograd's device threads), the runs are repeated serially, with a warning.
    """
    global _JOB
    items = list(items)
    workers = min(parallel_workers(device), len(items))
    if workers <= 1:
        return _serial_map(fn, items, device, desc)
    # A torch optimizer's constructor imports torch._dynamo (about 1.4 s); imported here, before the fork, the
    # workers inherit it instead of each importing it again in every call.
    import torch._dynamo  # noqa: F401

    _JOB = (fn, items)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork in a threaded process (Jupyter's kernel has threads); the workers
            # only run torch and answer through their pipe, which is what that warning leaves safe.
            warnings.simplefilter("ignore", DeprecationWarning)
            # The workers' garbage collector would walk (and copy, page by page) the whole inherited heap of a
            # long notebook; frozen objects are left out of it (the gc module's advice for fork).
            gc.freeze()
            try:
                pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
            finally:
                gc.unfreeze()
        with pool:
            return list(progress(pool.imap(_worker_call, range(len(items))), total=len(items), desc=desc))
    except RuntimeError as err:
        if _BAD_FORK not in str(err):
            raise
        warnings.warn(
            "parallel_map: torch cannot run autograd in a process forked from this one (its autograd threads "
            "have started); running the jobs one after another. Set COURSE_WORKERS=1 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _serial_map(fn, items, device, desc)
    finally:
        _JOB = None


def tensor_loader(dataset, batch_size: int, *, shuffle: bool = False, generator=None) -> DataLoader:
    """The batches of ``DataLoader(dataset, batch_size, shuffle=shuffle, generator=generator)`` (the same
    tensors in the same order, the random numbers drawn alike) for a dataset that takes a list of indices,
    such as a ``TensorDataset``: one indexing per batch instead of one per example and a stack, which for
    week 6's small models is about 7 % of a training step (0.04 ms against 0.18 ms for a batch of 64)."""
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    # batch_size=None: the sampler yields whole batches of indices and the dataset is indexed with each
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=BatchSampler(sampler, batch_size, drop_last=False),
        generator=generator,
    )


@dataclass
class History:
    """Per-epoch records: epoch, train_loss, train_metric, val_loss, val_metric, lr, seconds.

    ``lr`` is read after the epoch's last scheduler step: the rate the next batch would get.
    """

    records: list[dict] = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        return [r[key] for r in self.records]

    def last(self, key: str):
        return self.records[-1][key]


def _batch_metric(outputs: torch.Tensor, targets: torch.Tensor, metric: str | None) -> float:
    if metric == "accuracy":
        return (outputs.argmax(-1) == targets).sum().item()
    return 0.0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable | None = None,
    device="cpu",
    metric: str | None = "accuracy",
) -> dict:
    """Mean loss and metric (accuracy as a fraction) of ``model`` over ``loader``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use 'accuracy' or None.")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.eval()
    total_loss, total_metric, n = 0.0, 0.0, 0
    for inputs, targets, *_ in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        total_loss += loss_fn(outputs, targets).item() * len(targets)
        total_metric += _batch_metric(outputs, targets, metric)
        n += len(targets)
    return {"loss": total_loss / n, "metric": total_metric / n if metric else None}


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable | None = None,
    val_loader: Iterable | None = None,
    scheduler=None,
    device="cpu",
    metric: str | None = "accuracy",
    grad_clip: float | None = None,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``epochs``; the scheduler (if any) steps after every batch.

    Batches are ``(inputs, targets, *extra)``; extra items (e.g. masks) are ignored here.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use 'accuracy' or None.")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device)
    history = History()
    for epoch in progress(range(1, epochs + 1), desc=desc, leave=True):
        model.train()
        start, total_loss, total_metric, n = time.perf_counter(), 0.0, 0.0, 0
        for inputs, targets, *_ in train_loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += loss.item() * len(targets)
            total_metric += _batch_metric(outputs.detach(), targets, metric)
            n += len(targets)
        record = {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "train_metric": total_metric / n if metric else None,
            "val_loss": None,
            "val_metric": None,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn, device, metric)
            record.update(val_loss=val["loss"], val_metric=val["metric"])
        history.records.append(record)
    return history


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """One value per step: a linear warm-up from ``warmup_start`` to ``base``, then a half cosine to ``final``.

    Warm-up step ``i < W = warmup_steps`` is ``warmup_start + (i + 1) / W · (base - warmup_start)`` (no step
    at the start value, the last warm-up step at ``base``); the ``n = total_steps - W`` steps after it are
    :math:`f + \\tfrac12 (b - f)(1 + \\cos(\\pi\\, i / (n-1)))` with ``b = base``, ``f = final``, so the
    last is exactly ``final`` (if ``n >= 2``; a single step stays at ``base``). The course's one schedule:
    every learning rate (:func:`warmup_cosine`; DINO's directly), DINO's weight decay and teacher momentum.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}.")
    warmup = np.linspace(warmup_start, base, warmup_steps + 1)[1:]
    n = total_steps - warmup_steps
    t = np.arange(n) / max(1, n - 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(math.pi * t))
    return np.concatenate([warmup, cosine])


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """:func:`cosine_schedule` as a learning-rate scheduler: a linear warm-up over ``warmup_steps`` that
    starts at base LR / ``warmup_steps``, not 0, then cosine decay to ``min_lr_ratio`` × base LR at the last
    of ``total_steps``, held after it. Step it once per batch."""
    factors = cosine_schedule(1.0, min_lr_ratio, total_steps, warmup_steps)
    return LambdaLR(optimizer, lambda step: float(factors[min(step, total_steps - 1)]))


# ------------------------------------------------------------------------------------ the supervised recipe
def param_groups(model: nn.Module, weight_decay: float, no_decay_names: tuple[str, ...] = ()) -> list[dict]:
    """Weight decay on weight matrices only: biases, norm gains (1-D) and the parameters named in
    ``no_decay_names`` (a ViT's ``pos_embed`` and ``cls_token``: embeddings, not weights) get none.
    Decaying those pulls every position and the CLS token towards zero, which slows a small ViT down."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in no_decay_names
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Recipe:
    """The supervised recipe of the week-4 labs (DeiT's ingredients, scaled down): AdamW with weight decay on
    weight matrices only, linear warm-up then cosine decay, label smoothing, gradient clipping."""

    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    decay_everything: bool = False  # True: weight decay on every parameter too (what the sweep compares)


def train_classifier(
    model: nn.Module,
    train_data,
    test_data,
    recipe: Recipe,
    *,
    device="cpu",
    seed: int = 0,
    desc: str = "train",
    num_workers: int = 0,
) -> History:
    """Train ``model`` on ``train_data`` with ``recipe``, evaluating on ``test_data`` after every epoch.

    The only supervised training loop of week 4 (lab 4.1's models, lab 4.2's supervised baseline,
    ``scripts/train_checkpoints.py``). ``seed`` fixes the shuffling and augmentation order.
    """
    torch.manual_seed(seed)
    loader = DataLoader(
        train_data,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    if len(loader) == 0:
        raise ValueError(f"{len(train_data)} training images give no full batch of {recipe.batch_size}.")
    test_loader = DataLoader(test_data, batch_size=500)
    groups = (
        model.parameters()
        if recipe.decay_everything
        else param_groups(model, recipe.weight_decay, ("pos_embed", "cls_token"))
    )
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * len(loader)
    scheduler = warmup_cosine(optimizer, max(1, int(recipe.warmup_fraction * steps)), steps)
    return fit(
        model,
        loader,
        epochs=recipe.epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        val_loader=test_loader,
        device=device,
        grad_clip=recipe.grad_clip,
        desc=desc,
    )
