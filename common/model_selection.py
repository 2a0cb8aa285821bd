"""Choosing a vision backbone from a measured table, under a user's constraints, with the reasons.

Replaces a fixed decision tree: :func:`recommend` filters the rows of a table that was *measured on the
user's device* (latency, peak memory) by the user's budgets, keeps the models that suit the task,
prefers those that suit the amount of labelled data, and ranks what is left by quoted ImageNet top-1
accuracy. Every exclusion and the final choice come with a sentence saying why.

The accuracies are quoted, not measured here: each carries its source and its **protocol** (what data
the weights saw and how the accuracy was read out). Top-1s of different protocols are not like for
like; the recommendation says so whenever it ranks across protocols, and names the best of each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

TASKS = {
    "classification": "image-level labels: every family can serve",
    "dense": "detection or segmentation: needs a multi-scale feature pyramid (a hierarchical backbone)",
    "features": "frozen general-purpose features (retrieval, k-NN, few-shot): self-supervised pretraining",
}
DATA_SIZES = {
    "small": "few labelled images (roughly < 10k)",
    "medium": "a moderate labelled set (roughly 10k-1M)",
    "large": "a large labelled set (roughly > 1M)",
}
# How a quoted ImageNet-1k top-1 was obtained. The same backbone scores differently under each: more
# pre-training data raises it, a frozen backbone read out by a linear classifier lowers it.
PROTOCOLS = {
    "in1k": "supervised training on ImageNet-1k only (1.28 M labelled images), whole network trained",
    "in21k-ft-in1k": "supervised pre-training on ImageNet-21k (about 14 M images), then fine-tuned on ImageNet-1k",
    "ssl-linear": "self-supervised pre-training without labels (DINOv2: LVD-142M, distilled from ViT-g/14), "
    "backbone frozen, a linear classifier trained on ImageNet-1k",
}
REQUIRED_KEYS = (
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
CONSTRAINT_KEYS = ("task", "latency_budget_ms", "memory_budget_mb", "data_size")  # recommend()'s keywords

TIMM_CSV = (
    "timm results/results-imagenet.csv (huggingface/pytorch-image-models, commit 0173a13), "
    "row {row}, evaluated at {res}px"
)


@dataclass(frozen=True)
class Quoted:
    """An ImageNet-1k top-1 accuracy quoted from a published source, not measured in this course."""

    top1: float
    resolution: int  # test resolution, px
    protocol: str  # a key of PROTOCOLS
    source: str


# Keyed by the timm architecture the notebook builds (randomly initialised, pretrained=False).
QUOTED_TOP1: dict[str, Quoted] = {
    # quick-profile variants
    "resnet18": Quoted(
        69.76, 224, "in1k", TIMM_CSV.format(row="resnet18.tv_in1k (torchvision weights)", res=224)
    ),
    "efficientnet_b0": Quoted(77.69, 224, "in1k", TIMM_CSV.format(row="efficientnet_b0.ra_in1k", res=224)),
    "vit_tiny_patch16_224": Quoted(
        75.45,
        224,
        "in21k-ft-in1k",
        TIMM_CSV.format(row="vit_tiny_patch16_224.augreg_in21k_ft_in1k (ImageNet-21k pretraining)", res=224),
    ),
    "deit_tiny_patch16_224": Quoted(
        72.17,
        224,
        "in1k",
        TIMM_CSV.format(row="deit_tiny_patch16_224.fb_in1k (without distillation)", res=224),
    ),
    "swin_tiny_patch4_window7_224": Quoted(
        81.38, 224, "in1k", TIMM_CSV.format(row="swin_tiny_patch4_window7_224.ms_in1k", res=224)
    ),
    "convnext_tiny": Quoted(
        82.1,
        224,
        "in1k",
        "ConvNeXt paper (Liu et al., CVPR 2022), Table 1, and the facebookresearch/ConvNeXt README: "
        "ConvNeXt-T, ImageNet-1K trained, 224px",
    ),
    "vit_small_patch14_dinov2": Quoted(
        81.1,
        224,
        "ssl-linear",
        "DINOv2 README (facebookresearch/dinov2), pretrained-models "
        "table: ViT-S/14 distilled, ImageNet linear (k-NN: 79.0); 224px crop of its eval transform",
    ),
    # full-profile sizes (the ones the lab guide compares)
    "resnet50": Quoted(
        76.13, 224, "in1k", TIMM_CSV.format(row="resnet50.tv_in1k (torchvision V1 weights)", res=224)
    ),
    "tf_efficientnet_b7": Quoted(
        84.41,
        600,
        "in1k",
        TIMM_CSV.format(row="tf_efficientnet_b7.aa_in1k (the paper's AutoAugment weights)", res=600),
    ),
    "vit_base_patch16_224": Quoted(
        81.79,
        224,
        "in21k-ft-in1k",
        TIMM_CSV.format(
            row="vit_base_patch16_224.orig_in21k_ft_in1k (original ViT, ImageNet-21k pretraining)", res=224
        ),
    ),
    "deit_base_patch16_224": Quoted(
        81.8,
        224,
        "in1k",
        "DeiT paper (Touvron et al., ICML 2021) and the facebookresearch/deit README: DeiT-base, "
        "without distillation, ImageNet-1k only",
    ),
    "swin_base_patch4_window7_224": Quoted(
        83.5,
        224,
        "in1k",
        "Swin paper (Liu et al., ICCV 2021), Table 1a, and microsoft/Swin-Transformer get_started.md: "
        "Swin-B, ImageNet-1K trained, 224px",
    ),
    "convnext_base": Quoted(
        83.8,
        224,
        "in1k",
        "ConvNeXt paper (Liu et al., CVPR 2022), Table 1, and the facebookresearch/ConvNeXt README: "
        "ConvNeXt-B, ImageNet-1K trained, 224px",
    ),
    "vit_base_patch14_dinov2": Quoted(
        84.5,
        224,
        "ssl-linear",
        "DINOv2 README (facebookresearch/dinov2), pretrained-models "
        "table: ViT-B/14 distilled, ImageNet linear (k-NN: 82.1); 224px crop of its eval transform",
    ),
}


@dataclass
class Recommendation:
    model: str | None
    constraints: str
    reasons: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    ranking: list[str] = field(default_factory=list)

    def explain(self) -> str:
        head = f"Recommended: {self.model}" if self.model else "No model in the table meets the constraints."
        lines = [head, f"  constraints: {self.constraints}"]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  x {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines)

    __str__ = explain


def _check(rows: list[Mapping], task: str, data_size: str, budgets: dict[str, float | None]) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {sorted(TASKS)}.")
    if data_size not in DATA_SIZES:
        raise ValueError(f"Unknown data_size {data_size!r}; use one of {sorted(DATA_SIZES)}.")
    for name, value in budgets.items():
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be a positive number (or None for no limit), got {value!r}.")
    if not rows:
        raise ValueError("the table is empty; measure some models first.")
    for row in rows:
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(
                f"table row {row.get('model', row)!r} lacks columns {missing}; each row needs "
                f"{list(REQUIRED_KEYS)}."
            )


def recommend(
    table: Iterable[Mapping],
    *,
    task: str = "classification",
    latency_budget_ms: float | None = None,
    memory_budget_mb: float | None = None,
    data_size: str = "medium",
) -> Recommendation:
    """Pick a model from ``table`` (rows with :data:`REQUIRED_KEYS`, e.g. ``DataFrame.to_dict("records")``).

    1. Budgets are hard limits on the *measured* batch-1 latency and peak memory.
    2. The task keeps the families that suit it (``dense``: hierarchical; ``features``: self-supervised,
       falling back to all if none fits).
    3. Small data prefers convolutional or self-supervised models (inductive bias or transferable
       features instead of many labels); the others stay as a fallback.
    4. Among what is left, the highest quoted top-1 wins; ties go to the faster model. Each accuracy is
       shown with its protocol; when the ranked models span several protocols the reasons say that the
       ranking crosses protocols (not like for like) and name the best model within each protocol.
    """
    rows = [dict(r) for r in table]
    _check(
        rows, task, data_size, {"latency_budget_ms": latency_budget_ms, "memory_budget_mb": memory_budget_mb}
    )

    def limit(value):
        return "any" if value is None else f"{value:.1f}"

    constraints = (
        f"task={task} ({TASKS[task]}), latency <= {limit(latency_budget_ms)} ms, "
        f"memory <= {limit(memory_budget_mb)} MB, data={data_size} ({DATA_SIZES[data_size]})"
    )
    rec = Recommendation(model=None, constraints=constraints)

    fits = []
    for r in rows:
        if latency_budget_ms is not None and r["latency_ms"] > latency_budget_ms:
            rec.excluded[r["model"]] = (
                f"measured latency {r['latency_ms']:.1f} ms > budget {latency_budget_ms:.1f} ms"
            )
        elif memory_budget_mb is not None and r["peak_memory_mb"] > memory_budget_mb:
            rec.excluded[r["model"]] = (
                f"measured peak memory {r['peak_memory_mb']:.1f} MB > budget {memory_budget_mb:.1f} MB"
            )
        else:
            fits.append(r)

    if task == "dense":
        for r in [r for r in fits if not r["hierarchical"]]:
            rec.excluded[r["model"]] = (
                "single-scale (plain ViT) features; a dense task wants a feature pyramid"
            )
        fits = [r for r in fits if r["hierarchical"]]
    elif task == "features":
        ssl = [r for r in fits if r["self_supervised"]]
        if ssl:
            for r in fits:
                if not r["self_supervised"]:
                    rec.excluded[r["model"]] = (
                        "supervised features; frozen-feature tasks prefer self-supervised"
                    )
            fits = ssl
        elif fits:
            rec.reasons.append("no self-supervised model fits the budgets; falling back to supervised ones")

    if not fits:
        rec.reasons.append("relax a budget: every model is listed below with the limit it broke")
        return rec

    def rank(rs):
        return sorted(rs, key=lambda r: (-r["top1"], r["latency_ms"]))

    preferred, others = fits, []
    if data_size == "small":
        preferred = [r for r in fits if r["convolutional"] or r["self_supervised"]]
        others = [r for r in fits if not (r["convolutional"] or r["self_supervised"])]
        if preferred:
            rec.reasons.append(
                "small data: convolutional (built-in locality) or self-supervised (features learnt "
                "without labels) models are ranked first"
            )
        else:
            preferred, others = others, []
            rec.reasons.append(
                "small data, but no convolutional or self-supervised model fits; ranking the rest"
            )
    ordered = rank(preferred) + rank(others)
    best = ordered[0]
    rec.model, rec.ranking = best["model"], [r["model"] for r in ordered]
    rec.reasons.append(
        f"{best['model']} ({best['family']}) has the highest quoted top-1 ({_accuracy(best)}) of the "
        f"{len(fits)} model(s) that fit; measured {best['latency_ms']:.1f} ms, "
        f"{best['peak_memory_mb']:.1f} MB"
    )
    if len(ordered) > 1:
        nxt = ordered[1]
        differs = "" if nxt["protocol"] == best["protocol"] else " (another protocol: not like for like)"
        rec.reasons.append(
            f"runner-up {nxt['model']}: top-1 {_accuracy(nxt)}{differs}, {nxt['latency_ms']:.1f} ms"
        )
    protocols = list(dict.fromkeys(r["protocol"] for r in ordered))  # in ranking order
    if len(protocols) > 1:
        best_of = [next(r for r in ordered if r["protocol"] == p) for p in protocols]
        rec.reasons.append(
            f"these top-1s come from {len(protocols)} protocols, which are not like for like; "
            "best within each: " + ", ".join(f"{r['model']} {_accuracy(r)}" for r in best_of)
        )
    return rec


def _accuracy(row: Mapping) -> str:
    return f"{row['top1']:.1f}% {row['protocol']}"


def example_constraints() -> dict:
    """Exercise 3's worked reference: segmenting street scenes on a laptop CPU at 5 frames/s or more
    (200 ms per image), with 500 MB for activations, from a few thousand labelled images."""
    return dict(task="dense", latency_budget_ms=200.0, memory_budget_mb=500.0, data_size="medium")


def check_constraints(fn: Callable[[], Mapping], table: Iterable[Mapping]) -> Recommendation:
    """Exercise 3: ``fn()`` returns a project's constraints, the keywords of :func:`recommend`.

    Checks what an open answer allows: the form (known keys, a known task and data size, budgets that are
    positive numbers, at least one budget), then the consistency of the guide on ``table``: it finds a
    model, and every model it ranks meets the stated budgets (and, for ``dense``, is hierarchical).
    Returns the recommendation, for the student to read."""
    constraints = fn()
    assert isinstance(constraints, Mapping), f"return a dict of constraints, got {type(constraints).__name__}"
    unknown = sorted(set(constraints) - set(CONSTRAINT_KEYS))
    assert not unknown, f"unknown keys {unknown}: use {list(CONSTRAINT_KEYS)} (the keywords of recommend())"
    task, data_size = constraints.get("task", "classification"), constraints.get("data_size", "medium")
    assert task in TASKS, (
        f"task {task!r} is not one of {sorted(TASKS)} (detection and segmentation are 'dense')"
    )
    assert data_size in DATA_SIZES, f"data_size {data_size!r} is not one of {sorted(DATA_SIZES)}"
    budgets = {key: constraints.get(key) for key in ("latency_budget_ms", "memory_budget_mb")}
    for key, value in budgets.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        assert value is None or (number and value > 0), (
            f"{key} must be a positive number (or None for no limit), got {value!r}"
        )
    assert any(v is not None for v in budgets.values()), (
        "state at least one budget (latency_budget_ms or memory_budget_mb): a project has limits"
    )
    rows = list(table)
    rec = recommend(rows, **constraints)
    assert rec.model is not None, (
        "no model in the table meets these budgets; relax one (each model's broken limit is listed):\n"
        + rec.explain()
    )
    by_name = {r["model"]: r for r in rows}
    for name in rec.ranking:
        row = by_name[name]
        for key, column in (("latency_budget_ms", "latency_ms"), ("memory_budget_mb", "peak_memory_mb")):
            assert budgets[key] is None or row[column] <= budgets[key], (
                f"the guide ranked {name} although its {column} {row[column]:.1f} exceeds {key}={budgets[key]}"
            )
        assert task != "dense" or row["hierarchical"], (
            f"the guide ranked single-scale {name} for a dense task"
        )
    return rec


@dataclass(frozen=True)
class Family:
    """One of the lab guide's model families: the timm architecture per profile and what kind of model it
    is."""

    kind: str
    quick: str  # a small variant, so the quick profile runs on a laptop CPU
    full: str  # the size the lab guide compares
    hierarchical: bool  # multi-scale feature maps (a pyramid for detection/segmentation)
    self_supervised: bool  # pretrained without labels
    convolutional: bool  # convolutions carry the locality prior


FAMILIES: dict[str, Family] = {
    "ResNet": Family("CNN", "resnet18", "resnet50", True, False, True),
    "EfficientNet": Family("CNN (NAS-scaled)", "efficientnet_b0", "tf_efficientnet_b7", True, False, True),
    "ViT": Family("Transformer", "vit_tiny_patch16_224", "vit_base_patch16_224", False, False, False),
    "DeiT": Family(
        "Transformer (data-efficient training)",
        "deit_tiny_patch16_224",
        "deit_base_patch16_224",
        False,
        False,
        False,
    ),
    "Swin": Family(
        "hierarchical Transformer",
        "swin_tiny_patch4_window7_224",
        "swin_base_patch4_window7_224",
        True,
        False,
        False,
    ),
    "ConvNeXt": Family("modern CNN", "convnext_tiny", "convnext_base", True, False, True),
    "DINOv2": Family(
        "self-supervised ViT", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", False, True, False
    ),
}
