"""The selection guide on a hand-made table whose right answers are known in advance."""

import pytest
import timm

import common.model_selection
from common.model_selection import (
    FAMILIES,
    PROTOCOLS,
    QUOTED_TOP1,
    check_constraints,
    example_constraints,
    recommend,
)


def row(model, family, latency, memory, top1, hierarchical=True, ssl=False, conv=False, protocol="in1k"):
    return {
        "model": model,
        "family": family,
        "latency_ms": latency,
        "peak_memory_mb": memory,
        "top1": top1,
        "protocol": protocol,
        "hierarchical": hierarchical,
        "self_supervised": ssl,
        "convolutional": conv,
    }


TABLE = [
    row("cnn_small", "ResNet", 5.0, 50.0, 70.0, conv=True),
    row("cnn_big", "ConvNeXt", 30.0, 300.0, 83.0, conv=True),
    row("vit", "ViT", 20.0, 200.0, 81.0, hierarchical=False),
    row("swin", "Swin", 25.0, 250.0, 82.0),
    row("dino", "DINOv2", 40.0, 400.0, 84.0, hierarchical=False, ssl=True, protocol="ssl-linear"),
]


def test_no_constraints_picks_the_most_accurate():
    assert recommend(TABLE).model == "dino"


def test_latency_budget_excludes_slow_models_with_a_reason():
    rec = recommend(TABLE, latency_budget_ms=22)
    assert rec.model == "vit"
    assert set(rec.excluded) == {"cnn_big", "swin", "dino"}
    assert "latency" in rec.excluded["dino"] and "22" in rec.excluded["dino"]


def test_memory_budget():
    assert recommend(TABLE, memory_budget_mb=260).model == "swin"


def test_dense_task_keeps_hierarchical_models():
    rec = recommend(TABLE, task="dense")
    assert rec.model == "cnn_big" and "vit" in rec.excluded and "dino" in rec.excluded


def test_features_task_prefers_self_supervised_and_falls_back():
    assert recommend(TABLE, task="features").model == "dino"
    rec = recommend(TABLE, task="features", latency_budget_ms=35)
    assert rec.model == "cnn_big" and any("falling back" in r for r in rec.reasons)


def test_small_data_ranks_convolutional_or_self_supervised_first():
    # within 26 ms: cnn_small (conv, 70 %) first, then the rest by top-1: swin (82 %), vit (81 %)
    rec = recommend(TABLE, data_size="small", latency_budget_ms=26)
    assert rec.model == "cnn_small" and rec.ranking == ["cnn_small", "swin", "vit"]


def test_ties_go_to_the_faster_model():
    table = [row("slow", "A", 9.0, 1.0, 80.0), row("fast", "B", 3.0, 1.0, 80.0)]
    assert recommend(table).model == "fast"


def test_nothing_fits_says_so():
    rec = recommend(TABLE, latency_budget_ms=1)
    assert rec.model is None and len(rec.excluded) == len(TABLE)
    assert "No model" in rec.explain()


def test_explanation_names_choice_constraints_and_runner_up():
    text = recommend(TABLE, latency_budget_ms=26).explain()
    assert "Recommended: swin" in text and "latency <= 26.0 ms" in text and "runner-up vit" in text


@pytest.mark.parametrize(
    "kwargs",
    [{"task": "segmentation"}, {"data_size": "huge"}, {"latency_budget_ms": -1}, {"memory_budget_mb": 0}],
)
def test_bad_constraints_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        recommend(TABLE, **kwargs)


# The columns a row of the measured table carries, written out here rather than read from the module:
# each one is required (below), and TABLE's rows, which have exactly these, are accepted (above).
DOCUMENTED_COLUMNS = (
    "model",
    "family",
    "latency_ms",
    "peak_memory_mb",
    "top1",
    "protocol",
    "hierarchical",
    "self_supervised",
    "convolutional",
)


def test_bad_tables_raise_value_error():
    with pytest.raises(ValueError, match="empty"):
        recommend([])
    for column in DOCUMENTED_COLUMNS:  # a row missing any one column is refused, and the column named
        broken = {k: v for k, v in TABLE[0].items() if k != column}
        with pytest.raises(ValueError, match=f"lacks columns \\['{column}'\\]"):
            recommend([broken, *TABLE[1:]])
    assert recommend([{**TABLE[0], "notes": "extra columns are fine"}]).model == "cnn_small"


def test_every_quoted_accuracy_has_a_source_a_protocol_and_a_plausible_value():
    for name, quoted in QUOTED_TOP1.items():
        assert 50 < quoted.top1 < 100 and quoted.resolution >= 224 and len(quoted.source) > 20, name
        assert quoted.protocol in PROTOCOLS, name


def test_protocols_follow_from_the_sources():
    # the source names the pre-training: ImageNet-21k rows, DINOv2's linear evaluation, the rest ImageNet-1k
    for name, quoted in QUOTED_TOP1.items():
        if "in21k" in quoted.source:
            assert quoted.protocol == "in21k-ft-in1k", name
        elif "DINOv2" in quoted.source:
            assert quoted.protocol == "ssl-linear" and "linear" in quoted.source, name
        else:
            assert quoted.protocol == "in1k" and ("in1k" in quoted.source or "ImageNet-1" in quoted.source), (
                name
            )


def test_ranking_across_protocols_says_so_and_names_the_best_of_each():
    table = [
        row("a21k", "ViT", 5.0, 1.0, 84.0, protocol="in21k-ft-in1k"),
        row("b1k", "ResNet", 5.0, 1.0, 80.0),
        row("c1k", "ConvNeXt", 5.0, 1.0, 79.0),
        row("dssl", "DINOv2", 5.0, 1.0, 82.0, protocol="ssl-linear"),
    ]
    rec = recommend(table)
    text = rec.explain()
    assert rec.model == "a21k" and "84.0% in21k-ft-in1k" in text
    assert "runner-up dssl: top-1 82.0% ssl-linear (another protocol: not like for like)" in text
    assert "3 protocols, which are not like for like" in text
    assert "best within each: a21k 84.0% in21k-ft-in1k, dssl 82.0% ssl-linear, b1k 80.0% in1k" in text


def test_one_protocol_is_ranked_without_a_warning():
    text = recommend([row("b1k", "ResNet", 5.0, 1.0, 80.0), row("c1k", "ConvNeXt", 5.0, 1.0, 79.0)]).explain()
    assert "runner-up c1k: top-1 79.0% in1k, 5.0 ms" in text and "not like for like" not in text


def test_constraints_check_accepts_the_worked_reference_and_explains_wrong_answers(exercise_output):
    rec = check_constraints(example_constraints, TABLE)
    # dense, <= 200 ms and 500 MB: the hierarchical models, of which cnn_big has the best top-1 (83 %)
    assert rec.model == "cnn_big" and "vit" in rec.excluded and "dino" in rec.excluded
    assert "[pass] your constraints" in exercise_output(
        "your constraints", lambda: check_constraints(example_constraints, TABLE)
    )
    wrong = {
        "unknown keys \\['latency_ms'\\]": dict(task="dense", latency_ms=20.0),
        "detection and segmentation are 'dense'": dict(task="segmentation", latency_budget_ms=20.0),
        "data_size 'tiny'": dict(data_size="tiny", latency_budget_ms=20.0),
        "memory_budget_mb must be a positive number": dict(memory_budget_mb=-5),
        "latency_budget_ms must be a positive number": dict(latency_budget_ms="fast"),
        "at least one budget": dict(task="dense"),
        "no model in the table meets these budgets": dict(latency_budget_ms=0.05),  # seconds, not ms
        "return a dict": ("dense", 20.0),
    }
    for message, answer in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_constraints(lambda answer=answer: answer, TABLE)
    assert "[fail] your constraints: state at least one budget" in exercise_output(
        "your constraints", lambda: check_constraints(lambda: dict(task="dense"), TABLE)
    )


def test_constraints_check_catches_a_guide_that_ignores_the_budgets(monkeypatch):
    def ignores_budgets(table, **constraints):
        return recommend(table, task=constraints.get("task", "classification"))

    monkeypatch.setattr(common.model_selection, "recommend", ignores_budgets)
    with pytest.raises(AssertionError, match="exceeds latency_budget_ms=22"):
        check_constraints(lambda: dict(latency_budget_ms=22), TABLE)


def test_every_family_builds_in_timm_and_has_a_quoted_accuracy():
    for family, fam in FAMILIES.items():
        for name in (fam.quick, fam.full):
            assert name in QUOTED_TOP1, f"{family}: no quoted accuracy for {name}"
            assert timm.is_model(name), f"{family}: timm has no architecture {name}"
