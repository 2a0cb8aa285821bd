"""Choosing a vision backbone from a measured table, under a user's constraints, with the reasons.

:func:`recommend` follows the lab guide's decision tree (task, data size, compute budget, accuracy
requirement), brought up to date and read off a table *measured on the user's device*:

- **task**: ``classification``; ``detection`` and ``segmentation`` (separate: each names its dense head,
  and plain ViTs stay in: ViTDet, Li et al. 2022, detects with a plain ViT and a simple feature pyramid;
  DPT, Ranftl et al. 2021, segments with one; DINOv2, Oquab et al. 2023, segments with a linear head on
  its frozen patch features); ``features`` (frozen features: self-supervised preferred); ``zero-shot``
  (classes named in text at test time: only an image-text model such as CLIP, Radford et al. 2021);
- **budgets**: hard limits on the measured batch-1 latency and on the memory of one inference, weights
  *plus* the activations' peak;
- **accuracy requirement**: a minimum quoted top-1;
- **data size**: every quoted accuracy is for *pretrained* weights, so the guide never assumes training
  from scratch; with few labels it ranks first the backbones whose quoted number is for frozen features.

What is left is ranked by quoted ImageNet top-1 (ties: the faster model). The accuracies are quoted, not
measured here: each carries its source and its **protocol** (what data the weights saw and how the
accuracy was read out). Top-1s of different protocols are not like for like; the recommendation says so
whenever it ranks across protocols, and names the best of each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TASKS = {
    "classification": "image-level labels: every family can serve",
    "detection": "boxes: a hierarchical backbone with a feature pyramid, or a plain ViT with ViTDet's simple "
    "feature pyramid",
    "segmentation": "per-pixel labels: a hierarchical backbone with a pyramid decoder, or a plain ViT with a "
    "DPT decoder or (frozen, self-supervised) a linear head",
    "features": "frozen general-purpose features (retrieval, k-NN, few-shot): self-supervised pretraining",
    "zero-shot": "classes named in text at test time, no labelled images: an image-text model (CLIP)",
}
# The dense head each kind of backbone takes, with the paper that made it work.
DENSE_HEADS = {
    ("detection", True): "an FPN on its multi-scale stages (Lin et al., 2017), e.g. Mask R-CNN",
    ("detection", False): "ViTDet's simple feature pyramid, built from its last single-scale map by "
    "strided (de)convolutions (Li et al., 2022, 'Exploring Plain Vision Transformer Backbones for Object "
    "Detection')",
    ("segmentation", True): "a UPerNet or FPN decoder on its stages (as in the Swin and ConvNeXt papers)",
    ("segmentation", False): "a DPT decoder that reassembles tokens of several layers into a pyramid "
    "(Ranftl et al., 2021, 'Vision Transformers for Dense Prediction'); on frozen self-supervised features "
    "even a linear head (DINOv2, Oquab et al., 2023)",
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
    "zero-shot": "image-text contrastive pre-training (CLIP: 400 M web image-text pairs), no ImageNet label "
    "used: each image goes to the class whose prompt embedding is nearest",
}
REQUIRED_KEYS = (
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
# an optional column: ``zero_shot`` (True for an image-text model), False when absent
CONSTRAINT_KEYS = ("task", "latency_budget_ms", "memory_budget_mb", "data_size", "min_top1")  # recommend()'s

TIMM_CSV = (
    "timm results/results-imagenet.csv (huggingface/pytorch-image-models, commit 0173a13), "
    "row {row}, evaluated at {res}px"
)
OPENCLIP_CSV = (
    "mlfoundations/open_clip docs/openclip_classification_results.csv (commit 05e7db4), row {row} "
    "(OpenAI's CLIP weights, Radford et al., 2021), column ImageNet 1k: zero-shot, 224px"
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
    # CLIP's image towers (timm builds them without the text tower): zero-shot ImageNet-1k top-1
    "vit_base_patch32_clip_224": Quoted(63.32, 224, "zero-shot", OPENCLIP_CSV.format(row="ViT-B-32, openai")),
    "vit_base_patch16_clip_224": Quoted(68.34, 224, "zero-shot", OPENCLIP_CSV.format(row="ViT-B-16, openai")),
}


@dataclass
class Recommendation:
    model: str | None
    constraints: str
    reasons: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    ranking: list[str] = field(default_factory=list)
    head: str | None = None  # the dense head (detection, segmentation) or the readout (zero-shot)

    def explain(self) -> str:
        head = f"Recommended: {self.model}" if self.model else "No model in the table meets the constraints."
        lines = [head, f"  constraints: {self.constraints}"]
        if self.head:
            lines.append(f"  with: {self.head}")
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  x {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines)

    __str__ = explain


def inference_memory_mb(row: Mapping) -> float:
    """What one batch-1 inference holds: the weights plus the peak of the activations."""
    return row["weights_mb"] + row["peak_memory_mb"]


def _check(rows: list[Mapping], task: str, data_size: str, limits: dict[str, float | None]) -> None:
    if task == "dense":
        raise ValueError("task 'dense' is now two tasks: use 'detection' or 'segmentation'.")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {sorted(TASKS)}.")
    if data_size not in DATA_SIZES:
        raise ValueError(f"Unknown data_size {data_size!r}; use one of {sorted(DATA_SIZES)}.")
    for name, value in limits.items():
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
    min_top1: float | None = None,
) -> Recommendation:
    """Pick a model from ``table`` (rows with :data:`REQUIRED_KEYS`, e.g. ``DataFrame.to_dict("records")``).

    1. Budgets are hard limits on the *measured* batch-1 latency and on :func:`inference_memory_mb`
       (weights + activations); ``min_top1`` is a hard floor on the quoted top-1.
    2. The task keeps the models that can do it: ``zero-shot`` only image-text models (a ``zero_shot``
       column), the other tasks every other model (a zero-shot top-1 is not comparable with theirs);
       ``features`` prefers self-supervised ones (falling back to all); ``detection`` and
       ``segmentation`` keep hierarchical backbones *and* plain ViTs, and name the head each takes.
    3. Small data ranks first the models whose features are meant to be used frozen (self-supervised):
       the quoted accuracies are all for pretrained weights, so nothing is trained from scratch.
    4. Among what is left, the highest quoted top-1 wins; ties go to the faster model. When the ranked
       models span several protocols the reasons say that the ranking crosses protocols (not like for
       like) and name the best model within each protocol.
    """
    rows = [dict(r) for r in table]
    limits = {
        "latency_budget_ms": latency_budget_ms,
        "memory_budget_mb": memory_budget_mb,
        "min_top1": min_top1,
    }
    _check(rows, task, data_size, limits)

    def limit(value, unit=""):
        return "any" if value is None else f"{value:.1f}{unit}"

    constraints = (
        f"task={task} ({TASKS[task]}), latency <= {limit(latency_budget_ms)} ms, "
        f"memory (weights + activations) <= {limit(memory_budget_mb)} MB, top-1 >= {limit(min_top1, '%')}, "
        f"data={data_size} ({DATA_SIZES[data_size]})"
    )
    rec = Recommendation(model=None, constraints=constraints)

    fits = []
    for r in rows:
        memory = inference_memory_mb(r)
        if latency_budget_ms is not None and r["latency_ms"] > latency_budget_ms:
            rec.excluded[r["model"]] = (
                f"measured latency {r['latency_ms']:.1f} ms > budget {latency_budget_ms:.1f} ms"
            )
        elif memory_budget_mb is not None and memory > memory_budget_mb:
            rec.excluded[r["model"]] = (
                f"weights {r['weights_mb']:.1f} MB + activations {r['peak_memory_mb']:.1f} MB = "
                f"{memory:.1f} MB > budget {memory_budget_mb:.1f} MB"
            )
        elif min_top1 is not None and r["top1"] < min_top1:
            rec.excluded[r["model"]] = f"quoted top-1 {_accuracy(r)} < required {min_top1:.1f}%"
        else:
            fits.append(r)

    def drop(keep, why):
        for r in fits:
            if not keep(r):
                rec.excluded[r["model"]] = why(r)
        return [r for r in fits if keep(r)]

    if task == "zero-shot":
        fits = drop(
            lambda r: r.get("zero_shot", False),
            lambda r: (
                "no text tower: it cannot score classes named only at test time (zero-shot needs an "
                "image-text model such as CLIP, Radford et al., 2021)"
            ),
        )
        if not fits and not any(r.get("zero_shot", False) for r in rows):
            rec.reasons.append("the table has no image-text model: measure a CLIP image tower and add it")
    else:
        fits = drop(
            lambda r: not r.get("zero_shot", False),
            lambda r: (
                f"its quoted top-1 is {r['protocol']} (no ImageNet label used), not comparable with the "
                f"others for a {task} ranking; fine-tuning its image tower is another experiment"
            ),
        )
    if task == "features":
        if any(r["self_supervised"] for r in fits):
            fits = drop(
                lambda r: r["self_supervised"],
                lambda r: "supervised features; frozen-feature tasks prefer self-supervised",
            )
        elif fits:
            rec.reasons.append("no self-supervised model fits the budgets; falling back to supervised ones")

    if not fits:
        rec.reasons.append("relax a constraint: every model is listed below with the one it broke")
        return rec

    def rank(rs):
        return sorted(rs, key=lambda r: (-r["top1"], r["latency_ms"]))

    preferred, others = fits, []
    if data_size == "small" and task != "zero-shot":  # zero-shot uses no labels at all
        preferred = [r for r in fits if r["self_supervised"]]
        others = [r for r in fits if not r["self_supervised"]]
        if preferred:
            rec.reasons.append(
                "small data: every quoted top-1 is for pretrained weights (nothing here is trained from "
                "scratch); with few labels, features meant to be used frozen (self-supervised) are ranked "
                "first, a light head on top"
            )
        else:
            preferred, others = others, []
            rec.reasons.append(
                "small data: fine-tune a pretrained model (or train a linear head on its frozen features); "
                "no self-supervised model fits, so the ranking is by top-1 alone"
            )
    ordered = rank(preferred) + rank(others)
    best = ordered[0]
    rec.model, rec.ranking = best["model"], [r["model"] for r in ordered]
    if task in ("detection", "segmentation"):
        rec.head = f"{DENSE_HEADS[task, bool(best['hierarchical'])]}"
        rec.reasons.append(
            "ranked by ImageNet top-1 as a proxy: the table holds no detection or segmentation score"
        )
    elif task == "zero-shot":
        rec.head = "its text tower: prompts such as 'a photo of a {class}', cosine similarity, argmax"
    rec.reasons.append(
        f"{best['model']} ({best['family']}) has the highest quoted top-1 ({_accuracy(best)}) of the "
        f"{len(fits)} model(s) that fit; measured {best['latency_ms']:.1f} ms, "
        f"{inference_memory_mb(best):.1f} MB (weights + activations)"
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
    zero_shot: bool = False  # an image-text model: classes can be named in text at test time


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
# The lab guide's zero-shot branch. Kept apart from FAMILIES (the benchmark app's zoo, ImageNet classifiers).
ZERO_SHOT_FAMILIES: dict[str, Family] = {
    "CLIP": Family(
        "image-text Transformer (image tower)",
        "vit_base_patch32_clip_224",
        "vit_base_patch16_clip_224",
        False,
        False,
        False,
        zero_shot=True,
    ),
}
