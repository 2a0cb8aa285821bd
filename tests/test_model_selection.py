"""The selection guide on a hand-made table whose right answers are known in advance."""

import pytest
import timm

from common.model_selection import (
    DENSE_HEADS,
    FAMILIES,
    PROTOCOLS,
    QUOTED_TOP1,
    ZERO_SHOT_FAMILIES,
    inference_memory_mb,
    recommend,
)


def row(
    model,
    family,
    latency,
    memory,
    top1,
    hierarchical=True,
    ssl=False,
    conv=False,
    protocol="in1k",
    weights=10.0,
    **extra,
):
    return {
        "model": model,
        "family": family,
        "latency_ms": latency,
        "peak_memory_mb": memory,
        "weights_mb": weights,
        "top1": top1,
        "protocol": protocol,
        "hierarchical": hierarchical,
        "self_supervised": ssl,
        "convolutional": conv,
        **extra,
    }


TABLE = [
    row("cnn_small", "ResNet", 5.0, 50.0, 70.0, conv=True),
    row("cnn_big", "ConvNeXt", 30.0, 300.0, 83.0, conv=True),
    row("vit", "ViT", 20.0, 200.0, 81.0, hierarchical=False),
    row("swin", "Swin", 25.0, 250.0, 82.0),
    row("dino", "DINOv2", 40.0, 400.0, 84.0, hierarchical=False, ssl=True, protocol="ssl-linear"),
    row("clip", "CLIP", 15.0, 100.0, 63.0, hierarchical=False, protocol="zero-shot", zero_shot=True),
]


def test_no_constraints_picks_the_most_accurate():
    assert recommend(TABLE).model == "dino"


def test_latency_budget_excludes_slow_models_with_a_reason():
    rec = recommend(TABLE, latency_budget_ms=22)
    assert rec.model == "vit"
    assert {"cnn_big", "swin", "dino"} <= set(rec.excluded)
    assert "latency" in rec.excluded["dino"] and "22" in rec.excluded["dino"]


def test_memory_budget_counts_the_weights():
    # activations alone: swin 250 <= 260; with its 10 MB of weights 260 <= 260; vit's 20 MB of weights
    # push it over 230 although its activations (200) fit
    table = [*TABLE[:2], row("vit", "ViT", 20.0, 200.0, 81.0, hierarchical=False, weights=40.0), *TABLE[3:]]
    rec = recommend(table, memory_budget_mb=235)
    assert rec.model == "cnn_small" and "vit" in rec.excluded
    assert "weights 40.0 MB + activations 200.0 MB = 240.0 MB > budget 235.0 MB" in rec.excluded["vit"]
    assert recommend(TABLE, memory_budget_mb=260).model == "swin"
    assert inference_memory_mb(TABLE[3]) == 260.0


def test_accuracy_requirement_is_a_floor():
    rec = recommend(TABLE, latency_budget_ms=26, min_top1=81.5)
    assert rec.model == "swin" and "required 81.5%" in rec.excluded["vit"]
    assert recommend(TABLE, latency_budget_ms=22, min_top1=82).model is None


def test_detection_and_segmentation_keep_plain_vits_and_name_their_heads():
    det = recommend(TABLE, task="detection")
    seg = recommend(TABLE, task="segmentation")
    # the plain, self-supervised ViT is not excluded any more: the best top-1 wins in both tasks
    assert det.model == seg.model == "dino" and "vit" not in det.excluded
    assert det.head == DENSE_HEADS["detection", False] and "ViTDet" in det.head
    assert seg.head == DENSE_HEADS["segmentation", False] and "DPT" in seg.head
    hier = recommend(TABLE, task="detection", latency_budget_ms=32, min_top1=82.5)
    assert hier.model == "cnn_big" and "FPN" in hier.head and "Mask R-CNN" in hier.explain()


def test_zero_shot_needs_an_image_text_model():
    rec = recommend(TABLE, task="zero-shot")
    assert rec.model == "clip" and "no text tower" in rec.excluded["dino"] and "text tower" in rec.head
    none = recommend(TABLE[:5], task="zero-shot")
    assert none.model is None and any("no image-text model" in r for r in none.reasons)
    # and a zero-shot top-1 is not ranked against supervised ones
    assert "clip" in recommend(TABLE, latency_budget_ms=16).excluded


def test_features_task_prefers_self_supervised_and_falls_back():
    assert recommend(TABLE, task="features").model == "dino"
    rec = recommend(TABLE, task="features", latency_budget_ms=35)
    assert rec.model == "cnn_big" and any("falling back" in r for r in rec.reasons)


def test_small_data_ranks_frozen_self_supervised_features_first_and_never_assumes_scratch():
    rec = recommend(TABLE, data_size="small", latency_budget_ms=45)
    assert rec.ranking == ["dino", "cnn_big", "swin", "vit", "cnn_small"]
    assert any("pretrained weights" in r and "from scratch" in r for r in rec.reasons)
    fallback = recommend(TABLE, data_size="small", latency_budget_ms=26)
    assert fallback.model == "swin" and any("no self-supervised model fits" in r for r in fallback.reasons)


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
    [
        {"task": "dense"},
        {"task": "pose"},
        {"data_size": "huge"},
        {"latency_budget_ms": -1},
        {"memory_budget_mb": 0},
        {"min_top1": -3},
    ],
)
def test_bad_constraints_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        recommend(TABLE, **kwargs)


def test_dense_names_its_replacement():
    with pytest.raises(ValueError, match="'detection' or 'segmentation'"):
        recommend(TABLE, task="dense")


# The columns a row of the measured table carries, written out here rather than read from the module:
# each one is required (below), and TABLE's rows, which have exactly these, are accepted (above).
DOCUMENTED_COLUMNS = (
    "model",
    "family",
    "latency_ms",
    "peak_memory_mb",
    "weights_mb",
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
    # the source names the pre-training: ImageNet-21k rows, DINOv2's linear evaluation, CLIP's zero-shot,
    # the rest ImageNet-1k
    for name, quoted in QUOTED_TOP1.items():
        if "in21k" in quoted.source:
            assert quoted.protocol == "in21k-ft-in1k", name
        elif "DINOv2" in quoted.source:
            assert quoted.protocol == "ssl-linear" and "linear" in quoted.source, name
        elif "CLIP" in quoted.source:
            assert quoted.protocol == "zero-shot" and "zero-shot" in quoted.source, name
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


def test_every_family_builds_in_timm_and_has_a_quoted_accuracy():
    for family, fam in {**FAMILIES, **ZERO_SHOT_FAMILIES}.items():
        for name in (fam.quick, fam.full):
            assert name in QUOTED_TOP1, f"{family}: no quoted accuracy for {name}"
            assert timm.is_model(name), f"{family}: timm has no architecture {name}"
    assert all(f.zero_shot for f in ZERO_SHOT_FAMILIES.values())
    assert not any(f.zero_shot for f in FAMILIES.values())
