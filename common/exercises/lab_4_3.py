"""Lab 4.3's exercises (comparing models): window partition, attention memory, your constraints.

Self-checks: :func:`check_window_partition`, :func:`check_attention_gib` (with :func:`vit_attention_gib`, the
value it compares with), :func:`check_constraints`. Exercise 1's reference solution is a concept the lab itself
uses, :func:`common.swin.window_partition`; exercise 3's worked example comes with the solutions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from common.benchmark import attention_matrix_bytes
from common.exercises import Exercise
from common.model_selection import (
    CONSTRAINT_KEYS,
    DATA_SIZES,
    TASKS,
    Recommendation,
    inference_memory_mb,
    recommend,
)
from common.swin import window_partition


def check_window_partition(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Exercise 1: ``fn(x, M)`` must equal :func:`common.swin.window_partition` on a batch of two non-square maps (so
    row- and column-major window orders differ); the message names the usual slip."""
    B, H, W, C, M = 2, 14, 21, 3, 7
    x = torch.arange(B * H * W * C, dtype=torch.float32).view(B, H, W, C)
    got, want = fn(x.clone(), M), window_partition(x, M)
    assert isinstance(got, Tensor) and got.shape == want.shape, (
        f"expected shape {tuple(want.shape)} = (B * H/M * W/M, M, M, C), got "
        f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
    )
    if torch.equal(got, want):
        return
    blocks = x.view(B, H // M, M, W // M, M, C)  # (B, row of windows, y, column of windows, x, C)
    strips = x.reshape(-1, M, M, C)
    slips = [
        (
            strips,
            "a reshape alone cuts the map into strips of rows, not M x M blocks: split H into (H/M, M) and "
            "W into (W/M, M), then permute the two window-index axes before the two pixel axes",
        ),
        (
            blocks.permute(0, 3, 1, 2, 4, 5),
            "the windows come column by column; Swin and timm number them row by row: permute(0, 1, 3, 2, 4, 5)",
        ),
        (
            blocks.permute(0, 1, 3, 4, 2, 5),
            "each window is transposed: keep its rows before its columns, permute(0, 1, 3, 2, 4, 5)",
        ),
        (
            blocks.permute(1, 3, 0, 2, 4, 5),
            "the windows are grouped by position across the batch; keep the batch axis first (all the "
            "windows of image 0, then those of image 1)",
        ),
    ]
    for wrong, message in slips:
        if torch.equal(got, wrong.reshape(-1, M, M, C)):
            raise AssertionError(message)
    raise AssertionError(
        "the windows differ from common.swin.window_partition: window k = b*(H/M)*(W/M) + i*(W/M) + j must "
        "hold x[b, i*M:(i+1)*M, j*M:(j+1)*M]"
    )


def vit_attention_gib(
    image_size: int,
    patch_size: int,
    *,
    batch: int,
    heads: int,
    layers: int,
    dtype: torch.dtype = torch.float32,
) -> float:
    """GiB of the attention weights a ViT keeps for the backward pass: one (batch, heads, n, n) tensor per
    layer, n = (image_size / patch_size)² patch tokens (the class token is left out, as in the blog post's
    estimate: it adds 1 % at 224 px). The reference of :func:`check_attention_gib`."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
    n = (image_size // patch_size) ** 2
    return layers * attention_matrix_bytes(batch, heads, n, dtype) / 2**30


def check_attention_gib(fn: Callable[..., float]) -> None:
    """Exercise 2: ``fn(image_size=, patch_size=, batch=, heads=, layers=)`` must equal
    :func:`vit_attention_gib` (float32); the message names the usual slip."""
    # distinct batch, heads and layers first, so that each slip below gives a value of its own
    for size, patch, batch, heads, layers in ((384, 32, 3, 6, 4), (448, 16, 8, 12, 12)):
        got = float(fn(image_size=size, patch_size=patch, batch=batch, heads=heads, layers=layers))
        want = vit_attention_gib(size, patch, batch=batch, heads=heads, layers=layers)
        if math.isclose(got, want, rel_tol=1e-6):
            continue
        n = (size // patch) ** 2
        slips = [
            (
                1 / layers,
                "that is one layer; the backward pass keeps every layer's weights: multiply by layers",
            ),
            (1 / heads, "each head has its own n x n weights: multiply by heads"),
            (1 / batch, "each image of the batch has its own weights: multiply by batch"),
            (2, "that counts scores and weights; the exercise counts the weights, one tensor per layer"),
            (1 / 2, "float32 takes 4 bytes per number, not 2"),
            (1 / n, "n is the number of patches, (image_size / patch_size)², not image_size / patch_size"),
            (2**30, "return GiB, not bytes (1 GiB = 2**30 bytes)"),
            (2**30 / 1e9, "that is GB (10**9 bytes); GiB are 2**30 bytes"),
            (
                ((n + 1) / n) ** 2,
                "you counted the class token: right for a real ViT, but this exercise counts the patch "
                "tokens only, n = (image_size / patch_size)²",
            ),
        ]
        for factor, message in slips:
            if math.isclose(got, want * factor, rel_tol=1e-6):
                raise AssertionError(message)
        raise AssertionError(
            f"{size} px, patch {patch}, batch {batch}, {heads} heads, {layers} layers: expected {want:.4f} GiB, "
            f"got {got:.4f}: layers x batch x heads x n² x 4 bytes, n = (image_size / patch_size)²"
        )


def check_constraints(fn: Callable[[], Mapping], table: Iterable[Mapping]) -> Recommendation:
    """Exercise 3: ``fn()`` returns a project's constraints, the keywords of :func:`recommend`.

    Checks what an open answer allows: the form (known keys, a known task and data size, limits that are
    positive numbers, at least one budget), then the consistency of the guide on ``table``: it finds a
    model, every model it ranks meets the stated limits and, for ``zero-shot``, is an image-text model.
    Returns the recommendation, for the student to read."""
    constraints = fn()
    assert isinstance(constraints, Mapping), f"return a dict of constraints, got {type(constraints).__name__}"
    unknown = sorted(set(constraints) - set(CONSTRAINT_KEYS))
    assert not unknown, f"unknown keys {unknown}: use {list(CONSTRAINT_KEYS)} (the keywords of recommend())"
    task, data_size = constraints.get("task", "classification"), constraints.get("data_size", "medium")
    assert task in TASKS, (
        f"task {task!r} is not one of {sorted(TASKS)} (detection and segmentation are separate tasks)"
    )
    assert data_size in DATA_SIZES, f"data_size {data_size!r} is not one of {sorted(DATA_SIZES)}"
    limits = {key: constraints.get(key) for key in ("latency_budget_ms", "memory_budget_mb", "min_top1")}
    for key, value in limits.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        assert value is None or (number and value > 0), (
            f"{key} must be a positive number (or None for no limit), got {value!r}"
        )
    assert limits["latency_budget_ms"] is not None or limits["memory_budget_mb"] is not None, (
        "state at least one budget (latency_budget_ms or memory_budget_mb): a project has limits"
    )
    rows = list(table)
    rec = recommend(rows, **constraints)
    assert rec.model is not None, (
        "no model in the table meets these constraints; relax one (each model's broken limit is listed):\n"
        + rec.explain()
    )
    by_name = {r["model"]: r for r in rows}
    for name in rec.ranking:
        row = by_name[name]
        checks = (
            ("latency_budget_ms", row["latency_ms"], "latency_ms", 1),
            ("memory_budget_mb", inference_memory_mb(row), "weights + activations", 1),
            ("min_top1", row["top1"], "top1", -1),
        )
        for key, value, what, sign in checks:
            assert limits[key] is None or sign * value <= sign * limits[key], (
                f"the guide ranked {name} although its {what} {value:.1f} breaks {key}={limits[key]}"
            )
        assert (task == "zero-shot") == bool(row.get("zero_shot", False)), (
            f"the guide ranked {name} for task {task!r}, but zero-shot and the other tasks use different models"
        )
    return rec


### BEGIN SOLUTION
def reference_constraints() -> dict:
    """Exercise 3's worked example: segmenting street scenes on an embedded board that leaves 500 MB to the
    model (weights + activations), from a few thousand labelled images. (A memory budget, not a latency one:
    memory does not depend on how busy the machine is, so the reference holds on any device.)"""
    return dict(task="segmentation", memory_budget_mb=500.0, data_size="small")


### END SOLUTION


### BEGIN HIDDEN TESTS
def _windows_like_timm(ns: dict) -> None:
    # other sizes (a single window per image included) and a channels-last view, against timm's window_partition
    from timm.models.swin_transformer import window_partition as timm_window_partition

    gen = torch.Generator().manual_seed(41)
    cases = [
        (torch.randn(3, 8, 12, 5, generator=gen), 4, "a (3, 8, 12, 5) map, M = 4"),
        (torch.randn(2, 6, 6, 3, generator=gen), 6, "one 6 x 6 window per image"),
        (
            torch.randn(2, 5, 14, 21, generator=gen).permute(0, 2, 3, 1),
            7,
            "a channels-last view of a (B, C, H, W) map (x.permute(0, 2, 3, 1): not contiguous)",
        ),
    ]
    for x, M, what in cases:
        hint = (
            f"{what}: the windows differ from timm's window_partition; read B, H, W, C from x, split H and W "
            "without merging them with the batch axis, then one permute and a reshape"
        )
        try:
            got = ns["my_window_partition"](x, M)
        except RuntimeError as err:
            raise AssertionError(f"{hint} (it raised: {err})") from None
        want = timm_window_partition(x, (M, M))
        assert isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape) and torch.equal(got, want), (
            hint
        )


def _attention_gib_other_sizes(ns: dict) -> None:
    # written out: layers x batch x heads x n² weights x 4 bytes, n = (image_size / patch_size)² patches
    for size, patch, batch, heads, layers in ((224, 16, 1, 1, 1), (336, 14, 2, 16, 24), (1024, 16, 32, 1, 1)):
        n = (size // patch) ** 2
        want = layers * batch * heads * n * n * 4 / 2**30
        got = float(
            ns["attention_gib"](image_size=size, patch_size=patch, batch=batch, heads=heads, layers=layers)
        )
        assert math.isclose(got, want, rel_tol=1e-6), (
            f"{size} px, patch {patch}, batch {batch}, {heads} heads, {layers} layers: expected {want:.4f} GiB, got "
            f"{got:.4f}: use every argument, nothing fixed"
        )


def _constraints_of_your_own(ns: dict) -> None:
    assert dict(ns["my_constraints"]()) != reference_constraints(), (
        "state a project of your own: these are the worked example's constraints, the ones the solutions discuss"
    )


GRADING = (
    Exercise(
        "lab4.3-ex1",
        "Exercise 1: window partition",
        ("my_window_partition",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_window_partition(ns["my_window_partition"])),
            ("other sizes, like timm", _windows_like_timm),
        ),
    ),
    Exercise(
        "lab4.3-ex2",
        "Exercise 2: attention memory",
        ("attention_gib",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_attention_gib(ns["attention_gib"])),
            ("other sizes", _attention_gib_other_sizes),
        ),
    ),
    Exercise(
        "lab4.3-ex3",
        "Exercise 3: your constraints",
        ("my_constraints", "table"),
        points=1,
        cases=(
            ("self-check", lambda ns: check_constraints(ns["my_constraints"], ns["table"])),
            ("constraints of your own", _constraints_of_your_own),
        ),
    ),
)
### END HIDDEN TESTS
