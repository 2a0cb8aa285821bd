"""Evaluating self-supervised features: weighted k-NN on frozen features, and masks from CLS attention.

- :func:`extract_features`: frozen CLS features (B, D) of a backbone over a loader.
- :func:`knn_predict` / :func:`knn_accuracy`: the weighted k-NN classifier DINO reports (Wu et al., 2018):
  cosine similarity, the ``k`` nearest training features vote for their label with weight ``exp(sim / T)``.
- :func:`attention_masks`: per head, the patches that hold ``mass`` (60 %) of the last block's CLS attention,
  the thresholding of the DINO paper's segmentation figures and Jaccard evaluation.
- :func:`attention_iou`: IoU of those masks with ground-truth object masks, per image and head.
- :func:`linear_probe_accuracy`: a multinomial logistic regression on frozen features (the linear probe).
- The opponents an attention mask must beat: :func:`saliency_iou` (no learning: each patch's mean distance
  from the image's median colour, cut with the same mass rule) and :func:`oracle_iou` (the best any choice of
  whole patches on the grid can reach).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: Iterable, device="cpu") -> tuple[Tensor, Tensor]:
    """CLS features and labels of every batch ``(images, labels, ...)``: (N, D) float, (N,) long, on CPU."""
    backbone.eval()
    features, labels = [], []
    for images, targets, *_ in loader:
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(features), torch.cat(labels).long()


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> Tensor:
    """Weighted k-NN labels for ``test_features`` (DINO's ``eval_knn``).

    Features are L2-normalised; each test point takes its ``k`` most cosine-similar training points and
    gives class ``c`` the score :math:`\\sum_{i \\in kNN,\\, y_i = c} \\exp(s_i / T)`; the top score wins.
    """
    if k < 1 or k > len(train_features):
        raise ValueError(f"k must be in [1, {len(train_features)}] (the training set size), got {k}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError("train and test features must have the same dimension.")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    predictions = []
    for start in range(0, len(test), chunk):
        sims, idx = (test[start : start + chunk] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes)
        votes.scatter_add_(1, train_labels[idx], (sims / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Fraction of ``test_labels`` the weighted k-NN classifier gets right."""
    pred = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
    return (pred == test_labels).float().mean().item()


@torch.no_grad()
def knn_eval(
    backbone: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    device="cpu",
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Extract frozen features of both sets and return the weighted k-NN accuracy."""
    train_f, train_y = extract_features(backbone, train_loader, device)
    test_f, test_y = extract_features(backbone, test_loader, device)
    return knn_accuracy(
        train_f,
        train_y,
        test_f,
        test_y,
        k=k,
        temperature=temperature,
        num_classes=int(max(train_y.max(), test_y.max())) + 1,
    )


def attention_masks(cls_attention: Tensor, mass: float = 0.6) -> Tensor:
    """Keep, per head, the smallest set of patches holding ``mass`` of the CLS attention (DINO's threshold).

    ``cls_attention``: (B, heads, N) attention of the CLS query over the N patch keys (the CLS key dropped).
    Returns a bool tensor of the same shape. As in DINO's ``visualize_attention.py``: sort the weights,
    renormalise over the patches, and keep those whose cumulative share (from the largest) reaches ``mass``.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}.")
    if cls_attention.dim() != 3:
        raise ValueError(f"cls_attention must be (B, heads, N), got shape {tuple(cls_attention.shape)}.")
    values, order = torch.sort(cls_attention, dim=-1)  # ascending
    values = values / values.sum(dim=-1, keepdim=True)
    keep_sorted = values.cumsum(dim=-1) > (1 - mass)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Intersection over union of boolean masks over their last two dims (1.0 when both are empty)."""
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def last_block_cls_attention(vit: nn.Module, images: Tensor) -> Tensor:
    """(B, heads, gh, gw): the last block's CLS-to-patch attention of a ``common.vit.VisionTransformer``."""
    attn = vit.get_attention_maps(images)[-1][:, :, 0, 1:]
    gh, gw = images.shape[-2] // vit.patch_size, images.shape[-1] // vit.patch_size
    return attn.reshape(*attn.shape[:2], gh, gw)


@torch.no_grad()
def attention_iou(
    vit: nn.Module, images: Tensor, masks: Tensor, mass: float = 0.6, batch_size: int = 256
) -> np.ndarray:
    """IoU between each head's thresholded last-block CLS attention and the ground-truth object mask.

    ``images`` (B, C, H, W); ``masks`` (B, H, W) foreground masks at pixel resolution. The patch masks are
    upsampled to pixels (nearest, every pixel takes its patch's value). Returns an array (B, heads).
    """
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} must be (B, H, W) for images {tuple(images.shape)}.")
    vit.eval()
    device = next(vit.parameters()).device
    scores = []
    for start in range(0, len(images), batch_size):
        attn = last_block_cls_attention(vit, images[start : start + batch_size].to(device)).cpu()
        b, h, gh, gw = attn.shape
        keep = attention_masks(attn.flatten(2), mass).reshape(b, h, gh, gw)
        keep = keep.repeat_interleave(vit.patch_size, -2).repeat_interleave(vit.patch_size, -1)
        scores.append(mask_iou(keep, masks[start : start + batch_size, None].bool()))
    return torch.cat(scores).numpy()


def _patch_mean(values: Tensor, patch_size: int) -> Tensor:
    """(B, H, W) -> (B, H/p, W/p): the mean over each patch."""
    return F.avg_pool2d(values[:, None].float(), patch_size)[:, 0]


def _to_pixels(keep: Tensor, patch_size: int) -> Tensor:
    return keep.repeat_interleave(patch_size, -2).repeat_interleave(patch_size, -1)


def _check_images_masks(images: Tensor, masks: Tensor, patch_size: int) -> None:
    if images.dim() != 4 or masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(
            f"need images (B, C, H, W) and masks (B, H, W), got {tuple(images.shape)}, {tuple(masks.shape)}."
        )
    if images.shape[-1] % patch_size or images.shape[-2] % patch_size:
        raise ValueError(
            f"image size {tuple(images.shape[-2:])} is not divisible by patch_size {patch_size}; crop or pad."
        )


def colour_saliency(images: Tensor, patch_size: int) -> Tensor:
    """(B, H/p, W/p): per patch, the mean Euclidean distance of its pixels from the image's median colour.

    A map with no learning at all: it finds whatever differs in colour from most of the image."""
    median = images.flatten(2).median(dim=-1).values[..., None, None]  # (B, C, 1, 1)
    return _patch_mean((images - median).norm(dim=1), patch_size)


def saliency_iou(images: Tensor, masks: Tensor, patch_size: int, mass: float = 0.6) -> np.ndarray:
    """IoU with the object mask of :func:`colour_saliency` cut with DINO's rule (the patches holding
    ``mass`` of the map), exactly as :func:`attention_iou` cuts an attention head. ``images`` in [0, 1]."""
    _check_images_masks(images, masks, patch_size)
    sal = colour_saliency(images.float(), patch_size)
    b, gh, gw = sal.shape
    keep = attention_masks(sal.reshape(b, 1, gh * gw) + 1e-12, mass).reshape(b, gh, gw)
    return mask_iou(_to_pixels(keep, patch_size), masks.bool()).numpy()


def oracle_iou(masks: Tensor, patch_size: int) -> np.ndarray:
    """(B,): the best IoU any set of whole patches reaches against each pixel mask.

    All patches have the same area, so the best set is, for some k, the k patches with the most object
    pixels (adding a fuller patch never lowers the IoU more than adding an emptier one): try every k."""
    if masks.dim() != 3 or masks.shape[-1] % patch_size or masks.shape[-2] % patch_size:
        raise ValueError(f"masks must be (B, H, W) with sides divisible by patch_size {patch_size}.")
    area = patch_size * patch_size
    inside = (_patch_mean(masks, patch_size) * area).flatten(1)  # object pixels per patch
    inside = inside.sort(dim=1, descending=True).values
    inter = inside.cumsum(1)
    k = torch.arange(1, inside.shape[1] + 1, dtype=inside.dtype)
    union = masks.flatten(1).sum(1, keepdim=True).float() + k * area - inter
    return (inter / union).max(1).values.numpy()


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    num_classes: int | None = None,
) -> float:
    """Test accuracy of a linear classifier fitted on frozen features (a linear probe).

    Features are standardised with the training features' statistics; the probe minimises the mean
    cross-entropy plus ``weight_decay / 2 * ||W||^2`` (bias not decayed) with L-BFGS, full batch: a convex
    problem, so the result does not depend on a learning rate or an initialisation."""
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels must have the same length.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if len(train_features) < 2:  # one example has no spread to standardise by
        raise ValueError(f"a linear probe needs at least 2 training examples, got {len(train_features)}.")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1 if num_classes is None else num_classes
    mean, std = train_features.float().mean(0), train_features.float().std(0).clamp_min(1e-6)
    x, x_test = (train_features.float() - mean) / std, (test_features.float() - mean) / std
    probe = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(probe.weight), nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), train_labels) + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (probe(x_test).argmax(1) == test_labels).float().mean().item()
