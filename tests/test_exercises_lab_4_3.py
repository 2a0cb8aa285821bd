"""Lab 4.3's exercises: the self-checks on the reference solutions and on wrong answers, and the grading cases."""

import pytest
import torch
from test_model_selection import TABLE  # a measured table's form, made up

import common.exercises.lab_4_3
from common.exercises.lab_4_3 import (
    GRADING,
    check_attention_gib,
    check_constraints,
    check_window_partition,
    reference_constraints,
    vit_attention_gib,
)
from common.model_selection import recommend
from common.swin import window_partition


# ------------------------------------------------------------------ exercise 1: window partition
def _partition_by_slicing(x, M):
    """An independent reference: window k = b*(H/M)*(W/M) + i*(W/M) + j is x[b, i*M:(i+1)*M, j*M:(j+1)*M]."""
    B, H, W, _ = x.shape
    return torch.stack(
        [
            x[b, i * M : (i + 1) * M, j * M : (j + 1) * M]
            for b in range(B)
            for i in range(H // M)
            for j in range(W // M)
        ]
    )


def test_window_partition_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_window_partition(window_partition)
    check_window_partition(_partition_by_slicing)  # any correct answer passes, loops included
    assert "[pass] window partition" in exercise_output(
        "window partition", lambda: check_window_partition(window_partition)
    )

    def split(x, M):
        B, H, W, C = x.shape
        return x.view(B, H // M, M, W // M, M, C)

    wrong = {
        "strips of rows": lambda x, M: x.reshape(-1, M, M, x.shape[-1]),
        "column by column": lambda x, M: split(x, M).permute(0, 3, 1, 2, 4, 5).reshape(-1, M, M, x.shape[-1]),
        "transposed": lambda x, M: split(x, M).permute(0, 1, 3, 4, 2, 5).reshape(-1, M, M, x.shape[-1]),
        "keep the batch axis first": lambda x, M: (
            split(x, M).permute(1, 3, 0, 2, 4, 5).reshape(-1, M, M, x.shape[-1])
        ),
        "expected shape": lambda x, M: split(x, M).permute(0, 1, 3, 2, 4, 5),
        "differ from common.swin": lambda x, M: window_partition(x, M).flip(0),
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_window_partition(fn)
    assert "[fail] window partition: the windows come column by column" in exercise_output(
        "window partition", lambda: check_window_partition(wrong["column by column"])
    )


# ------------------------------------------------------------------ exercise 2: attention memory
def test_vit_attention_gib_by_hand():
    # ViT-B/16 at 224 px, batch 32: 12 layers x 32 x 12 heads x 196² weights x 4 bytes, written out
    assert vit_attention_gib(224, 16, batch=32, heads=12, layers=12) == 12 * 32 * 12 * 196 * 196 * 4 / 2**30
    # the blog post's 1024 px row: n = 4096, one head of one layer at batch 32 is exactly 2 GiB
    assert vit_attention_gib(1024, 16, batch=32, heads=1, layers=1) == 2.0
    assert vit_attention_gib(64, 16, batch=1, heads=1, layers=1, dtype=torch.float16) == 16 * 16 * 2 / 2**30
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit_attention_gib(100, 16, batch=1, heads=1, layers=1)


def test_attention_gib_check_accepts_the_reference_and_explains_wrong_answers(exercise_output):
    check_attention_gib(vit_attention_gib)
    assert "[pass] attention memory" in exercise_output(
        "attention memory", lambda: check_attention_gib(vit_attention_gib)
    )

    def memory(n, bytes_per_number=4, divisor=2**30):
        return lambda image_size, patch_size, batch, heads, layers: (
            layers * batch * heads * n(image_size // patch_size) ** 2 * bytes_per_number / divisor
        )

    def one_layer(image_size, patch_size, batch, heads, layers):
        return batch * heads * (image_size // patch_size) ** 4 * 4 / 2**30

    wrong = {
        "one layer": one_layer,
        "not image_size / patch_size": memory(lambda side: side),
        "class token": memory(lambda side: side**2 + 1),
        "not 2": memory(lambda side: side**2, bytes_per_number=2),
        "GB": memory(lambda side: side**2, divisor=1e9),
        "expected": lambda **kwargs: 1.0,
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_attention_gib(fn)
    assert "[fail] attention memory: that is one layer" in exercise_output(
        "attention memory", lambda: check_attention_gib(one_layer)
    )


# ------------------------------------------------------------------ exercise 3: your constraints
def test_constraints_check_accepts_the_worked_example_and_explains_wrong_answers(exercise_output):
    rec = check_constraints(reference_constraints, TABLE)
    # segmentation in 500 MB (dino: 410, cnn_big: 310), small data: dino's frozen features first
    assert rec.model == "dino" and "DPT" in rec.head and "clip" in rec.excluded
    assert "[pass] your constraints" in exercise_output(
        "your constraints", lambda: check_constraints(reference_constraints, TABLE)
    )
    wrong = {
        "unknown keys \\['latency_ms'\\]": dict(task="detection", latency_ms=20.0),
        "detection and segmentation are separate tasks": dict(task="dense", latency_budget_ms=20.0),
        "data_size 'tiny'": dict(data_size="tiny", latency_budget_ms=20.0),
        "memory_budget_mb must be a positive number": dict(memory_budget_mb=-5),
        "latency_budget_ms must be a positive number": dict(latency_budget_ms="fast"),
        "min_top1 must be a positive number": dict(latency_budget_ms=20.0, min_top1="high"),
        "at least one budget": dict(task="detection", min_top1=80.0),
        "no model in the table meets these constraints": dict(latency_budget_ms=0.05),  # seconds, not ms
        "return a dict": ("detection", 20.0),
    }
    for message, answer in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_constraints(lambda answer=answer: answer, TABLE)
    assert "[fail] your constraints: state at least one budget" in exercise_output(
        "your constraints", lambda: check_constraints(lambda: dict(task="detection"), TABLE)
    )


def test_constraints_check_catches_a_guide_that_ignores_the_limits(monkeypatch):
    def ignores_limits(table, **constraints):
        return recommend(table, task=constraints.get("task", "classification"))

    monkeypatch.setattr(common.exercises.lab_4_3, "recommend", ignores_limits)
    with pytest.raises(AssertionError, match="breaks latency_budget_ms=22"):
        check_constraints(lambda: dict(latency_budget_ms=22), TABLE)
    with pytest.raises(AssertionError, match="breaks memory_budget_mb=300"):
        check_constraints(lambda: dict(memory_budget_mb=300), TABLE)
    with pytest.raises(AssertionError, match="breaks min_top1=90"):
        check_constraints(lambda: dict(latency_budget_ms=1000, min_top1=90), TABLE)


def test_constraints_check_catches_a_guide_that_mixes_zero_shot_models_in(monkeypatch):
    def no_task_filter(table, **constraints):
        return recommend([{**r, "zero_shot": False} for r in table])

    monkeypatch.setattr(common.exercises.lab_4_3, "recommend", no_task_filter)
    with pytest.raises(AssertionError, match="zero-shot and the other tasks use different models"):
        check_constraints(lambda: dict(task="zero-shot", latency_budget_ms=1000), TABLE)


# ------------------------------------------------------------------ grading: reference answers get every point
def _reference_namespace():
    return {
        "my_window_partition": window_partition,
        "attention_gib": vit_attention_gib,
        "my_constraints": lambda: dict(task="detection", latency_budget_ms=30.0),  # a project of one's own
        "table": TABLE,
    }


def test_grading_gives_the_reference_solutions_every_point(graded):
    results = graded(GRADING, _reference_namespace(), allow_course_code=True)
    assert {r["exercise"]: r["points"] for r in results} == {r["exercise"]: r["max"] for r in results}
    assert [r["exercise"] for r in results] == ["lab4.3-ex1", "lab4.3-ex2", "lab4.3-ex3"]


def merges_the_batch_axis(x, M):
    # right on a contiguous map; a view that merges B with H/M fails on a channels-last one
    B, H, W, C = x.shape
    return x.view(B * H // M, M, W // M, M, C).permute(0, 2, 1, 3, 4).reshape(-1, M, M, C)


def test_grading_cases_catch_what_the_self_check_does_not(graded):
    check_window_partition(merges_the_batch_axis)  # the self-check passes
    namespace = {
        **_reference_namespace(),
        "my_window_partition": merges_the_batch_axis,
        "my_constraints": reference_constraints,
    }
    by_id = {r["exercise"]: r for r in graded(GRADING, namespace, allow_course_code=True)}
    assert 0 < by_id["lab4.3-ex1"]["points"] < by_id["lab4.3-ex1"]["max"]
    assert by_id["lab4.3-ex1"]["hint"].startswith("other sizes, like timm: a channels-last view")
    # the worked example passes the self-check, but it is not a project of one's own
    assert 0 < by_id["lab4.3-ex3"]["points"] < by_id["lab4.3-ex3"]["max"]
    assert by_id["lab4.3-ex3"]["hint"].startswith("constraints of your own:")
    assert by_id["lab4.3-ex2"]["points"] == by_id["lab4.3-ex2"]["max"]


def test_grading_of_attention_memory_reads_every_argument(graded):
    # the self-check's two configurations only: right there, wrong elsewhere
    def memorised(image_size, patch_size, batch, heads, layers):
        return vit_attention_gib(
            image_size, patch_size, batch=batch, heads=heads, layers=layers if layers != 1 else 2
        )

    result = graded(GRADING[1:2], {"attention_gib": memorised})[0]
    assert result["passed"] == 1 and result["hint"].startswith("other sizes:")


def test_grading_refuses_the_course_own_function(graded):
    hint = graded(GRADING[:1], _reference_namespace())[0]["hint"]
    assert "the course's own code" in hint
