"""The week-4 reference models: data, sizes and recipes of lab 4.1's ViT and lab 4.2's DINO, in one place.

The notebooks (every profile) and ``make checkpoints`` (``scripts/train_checkpoints.py``) build their data
and models here, so a committed checkpoint and a notebook's run differ only in their length.

- ``VIT_SIZES[profile]`` and :func:`classification_data`, :func:`new_vit`, :func:`train_vit`,
  :func:`accuracy` for the supervised ViT (the recipe is :class:`common.training.Recipe`; the sweep behind
  its choices is ``scripts/sweep_vit.py``).
- ``DINO_SIZES[profile]`` and :func:`dino_data`, :func:`new_dino`, :func:`dino_metrics` for DINO;
  :func:`dino_checkpoint_state` / :func:`dino_from_checkpoint` store and rebuild a trained one.

Profiles: ``quick`` (a 2-core CPU, minutes), ``full`` (one GPU), ``course`` (the committed checkpoints, trained
on a 2-core CPU by ``make checkpoints``), ``tiny`` (seconds: tests and smoke runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.transforms import v2

from common.datasets import SHAPE_CLASSES, ShapesDataset, generate_arrangement, random_dihedral
from common.dino import MultiCropAugmentation, MultiCropDataset
from common.dino_eval import attention_iou, knn_accuracy, knn_eval, oracle_iou, saliency_iou
from common.dino_train import DINO, DINOConfig, DINOHistory, DINOTrainer, train_dino
from common.runtime import seed_everything
from common.training import History, Recipe, evaluate, train_classifier
from common.vit import VisionTransformer

IMAGE_SIZE = 32

# ----------------------------------------------------------------------------------------------------------
# Lab 4.1: the supervised ViT
# ----------------------------------------------------------------------------------------------------------
# Chosen with scripts/sweep_vit.py (table: scripts/sweep_vit.md): 16 tokens of 8x8 pixels (4x cheaper than 4x4
# patches at this size), warm-up + cosine at 1e-3, weight decay on weight matrices only, label smoothing, the 8
# dihedral symmetries; the quick profile uses batches of 64 (twice the updates of 128 for the same images).
VIT_MODEL = dict(
    img_size=IMAGE_SIZE, patch_size=8, num_classes=6, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0
)
VIT_SIZES = {
    "tiny": dict(n_train=512, n_test=256, epochs=1, batch_size=64),
    "quick": dict(n_train=20000, n_test=2000, epochs=8, batch_size=64),
    "full": dict(n_train=50000, n_test=2000, epochs=20, batch_size=128),
    "course": dict(n_train=50000, n_test=2000, epochs=20, batch_size=128),
}
VIT_BACKGROUND = "plain"  # lab 4.1, section 3: on the cluttered one the same budget gets far less


def _sizes(table: dict, profile: str) -> dict:
    if profile not in table:
        raise ValueError(f"unknown profile {profile!r}; use one of {tuple(table)}.")
    return dict(table[profile])


def standardizer(images: torch.Tensor) -> v2.Normalize:
    """Per-channel standardisation with the statistics of ``images`` (N, C, H, W) (a training set)."""
    mean, std = images.mean((0, 2, 3)).tolist(), images.std((0, 2, 3)).tolist()
    return v2.Normalize(mean, std)


def classification_data(n_train: int, n_test: int, seed: int = 0, background: str = VIT_BACKGROUND):
    """``(train, test, normalize)``: shapes whose items come standardised; training items are also turned or
    flipped at random. ``.images`` stay raw [0, 1] pixels for display; the test set returns masks."""
    train = ShapesDataset(n_train, IMAGE_SIZE, seed=seed, split="train", background=background)
    test = ShapesDataset(n_test, IMAGE_SIZE, seed=seed, split="test", background=background, return_mask=True)
    normalize = standardizer(train.images)
    train.transform = v2.Compose([random_dihedral, normalize])
    test.transform = normalize
    return train, test, normalize


def new_vit(**overrides) -> VisionTransformer:
    return VisionTransformer(**{**VIT_MODEL, **overrides})


def vit_recipe(profile: str) -> Recipe:
    """The supervised recipe at a profile's length (the sweep compared the alternatives)."""
    s = _sizes(VIT_SIZES, profile)
    return Recipe(epochs=s["epochs"], batch_size=s["batch_size"], lr=1e-3, weight_decay=0.05)


def train_vit(model, train, test, profile: str, *, device="cpu", seed: int = 0, desc: str = "ViT") -> History:
    return train_classifier(model, train, test, vit_recipe(profile), device=device, seed=seed, desc=desc)


def accuracy(model, dataset, device="cpu") -> float:
    """Test accuracy of a classifier over ``dataset`` (its items standardised as for training)."""
    return evaluate(model.to(device), DataLoader(dataset, batch_size=500), device=device)["metric"]


def validation_data(n_val: int, normalize: v2.Normalize, seed: int = 0, background: str = VIT_BACKGROUND):
    """The validation split (disjoint from train and test) standardised with the training statistics: what
    recipes, schedules and per-epoch curves are judged on, so the test split is read once."""
    return ShapesDataset(
        n_val, IMAGE_SIZE, seed=seed, split="val", background=background, transform=normalize
    )


# Lab 4.1, section 6: the position test. A 2-block ViT of width 64 on the checkpoint's 4x4 patch grid, trained on
# the arrangement data (common.datasets.generate_arrangement) and on the shapes, with the fixed 2-D sin-cos table
# or none. Sizes and rate were chosen on the validation split (scripts/sweep_vit.md, "The position test").
POSITION_VIT = dict(img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)


def position_recipe(epochs: int) -> Recipe:
    return Recipe(epochs=epochs, batch_size=64, lr=2e-3, weight_decay=0.05)


def arrangement_data(n_train: int, n_val: int, n_test: int, seed: int = 0):
    """``(train, val, test, test_raw)``: the arrangement images as standardised TensorDatasets (training
    statistics) and the raw test record (images for display, labels, masks)."""
    train = generate_arrangement(n_train, IMAGE_SIZE, seed=seed, split="train")
    val = generate_arrangement(n_val, IMAGE_SIZE, seed=seed, split="val")
    test = generate_arrangement(n_test, IMAGE_SIZE, seed=seed, split="test")
    normalize = standardizer(train.images)
    sets = [TensorDataset(normalize(d.images), d.labels) for d in (train, val, test)]
    return (*sets, test)


# ----------------------------------------------------------------------------------------------------------
# Lab 4.2: DINO
# ----------------------------------------------------------------------------------------------------------
# DINO trains on the textured variant (shape k filled with texture k) on the "camouflage" background: field,
# clutter and object share one colour distribution, so colour contrast alone cannot find the object (on a plain
# grey background a saliency map with no learning beat DINO's attention; see scripts/dino_experiments.md).
# Every crop of the object still carries its class, which crops and colour jitter leave intact (lab 4.2, section 2).
DINO_DATA = dict(background="camouflage", texture=True)
# Masks are evaluated on the same test images rendered at 64 pixels (the generator draws the same objects at
# any size): the ViT, trained at 32, interpolates its position table to the 8x8 patch grid, as DINO's
# visualize_attention.py does for images larger than its training crops.
DINO_EVAL_SIZE = 64
DINO_BACKBONE = dict(img_size=IMAGE_SIZE, patch_size=8, num_classes=0, embed_dim=128, depth=4, num_heads=4)
DINO_SIZES = {
    "tiny": dict(
        n_train=64,
        n_test=32,
        epochs=2,
        batch_size=8,
        n_local=2,
        out_dim=128,
        embed_dim=32,
        depth=2,
        num_heads=2,
    ),
    "quick": dict(n_train=4000, n_test=1000, epochs=3, batch_size=64, n_local=4, out_dim=1024),
    "full": dict(n_train=20000, n_test=2000, epochs=45, batch_size=64, n_local=4, out_dim=1024),
    "course": dict(n_train=20000, n_test=2000, epochs=45, batch_size=64, n_local=4, out_dim=1024),
}


def dino_sizes(profile: str) -> dict:
    return _sizes(DINO_SIZES, profile)


@dataclass
class DINOData:
    """Everything DINO's training and evaluation read: raw sets, statistics and the loaders."""

    train: ShapesDataset  # raw [0, 1] images; labels only for evaluation
    test: ShapesDataset  # with masks
    normalize: v2.Normalize
    crops: DataLoader  # batches of multi-crop views, standardised
    bank: DataLoader  # k-NN memory: standardised training images and their labels
    queries: DataLoader  # standardised test images and labels
    large_spec: dict = field(default_factory=dict, repr=False)  # how to render test_large

    @cached_property
    def test_large(self) -> ShapesDataset:
        """The same test images rendered at ``DINO_EVAL_SIZE`` pixels, with masks (the 8x8 patch grid);
        made on first use."""
        return ShapesDataset(**self.large_spec)

    @property
    def test_images(self) -> torch.Tensor:
        return self.normalize(self.test.images)

    @property
    def test_large_images(self) -> torch.Tensor:
        return self.normalize(self.test_large.images)


def dino_data(
    profile: str,
    *,
    seed: int = 0,
    n_local: int | None = None,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    bank_size: int = 4000,
    texture: bool = True,
    background: str | None = None,
    eval_split: str = "test",
    stats: tuple[list[float], list[float]] | None = None,
    **overrides,
) -> DINOData:
    """The DINO pipeline of a profile: data, standardisation, multi-crop loader, k-NN loaders. ``overrides``
    change sizes; ``texture=False`` gives the untextured shapes of lab 4.1 on the same plain background;
    ``stats=(mean, std)`` standardises with given statistics (a checkpoint's) instead of this training set's."""
    s = {**dino_sizes(profile), **overrides}
    look = {**DINO_DATA, "texture": texture, **({} if background is None else {"background": background})}
    n_local = s["n_local"] if n_local is None else n_local
    train = ShapesDataset(s["n_train"], IMAGE_SIZE, seed=seed, split="train", **look)
    test = ShapesDataset(s["n_test"], IMAGE_SIZE, seed=seed, split=eval_split, return_mask=True, **look)
    normalize = standardizer(train.images) if stats is None else v2.Normalize(*stats)
    aug = MultiCropAugmentation(
        IMAGE_SIZE, 16, n_local=n_local, local_scale=(0.1, 0.4), mean=normalize.mean, std=normalize.std
    )
    views = MultiCropDataset(train, aug)
    sampler = (
        DistributedSampler(views, world, rank, shuffle=True, seed=seed, drop_last=True) if world > 1 else None
    )
    crops = DataLoader(
        views,
        batch_size=s["batch_size"],
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    if len(crops) == 0:
        raise ValueError(f"{s['n_train']} images give no full batch of {s['batch_size']} per process.")
    n_bank = min(bank_size, len(train))
    bank = DataLoader(TensorDataset(normalize(train.images[:n_bank]), train.labels[:n_bank]), batch_size=500)
    queries = DataLoader(TensorDataset(normalize(test.images), test.labels), batch_size=500)
    large = dict(
        n=s["n_test"], image_size=DINO_EVAL_SIZE, seed=seed, split=eval_split, return_mask=True, **look
    )
    return DINOData(train, test, normalize, crops, bank, queries, large)


def dino_backbone_config(profile: str = "quick") -> dict:
    s = dino_sizes(profile)
    return {**DINO_BACKBONE, **{k: s[k] for k in ("embed_dim", "depth", "num_heads") if k in s}}


def new_dino_backbone(profile: str = "quick") -> VisionTransformer:
    return VisionTransformer(**dino_backbone_config(profile))


def dino_config(profile: str, **overrides) -> DINOConfig:
    """DINO's recipe at our scale. Departures from the paper's ViT-S/16 defaults: teacher temperature 0.02
    (0.04 let the teacher drift to uniform on these small images: lab 4.2, section 4, and
    ``scripts/dino_experiments.md``), K = 1024, a smaller head, base learning rate 1e-3 (paper: 5e-4) and
    one warm-up epoch."""
    s = dino_sizes(profile)
    embed = s.get("embed_dim", DINO_BACKBONE["embed_dim"])
    settings = dict(
        epochs=s["epochs"],
        out_dim=s["out_dim"],
        hidden_dim=max(256, 4 * embed),
        bottleneck_dim=64,
        lr=1e-3,
        momentum_teacher=0.996,
        teacher_temp=0.02,
        warmup_teacher_temp=0.02,
        warmup_epochs=1,
    )
    return DINOConfig(**{**settings, **overrides})


def new_dino(profile: str, **overrides) -> DINO:
    backbone = new_dino_backbone(profile)
    return DINO(backbone, backbone.embed_dim, config=dino_config(profile, **overrides))


def dino_checkpoint_state(dino: DINO, profile: str, data: DINOData) -> dict:
    """Student and teacher (backbone and head, fp16), the center and what rebuilds them."""

    def half(module):
        return {k: v.detach().cpu().half() for k, v in module.state_dict().items()}

    return {
        "student": half(dino.student),
        "teacher": half(dino.teacher),
        "center": dino.loss.center.cpu(),
        "backbone": dino_backbone_config(profile),
        "dino_config": asdict(dino.config),
        "profile": profile,
        "mean": data.normalize.mean,
        "std": data.normalize.std,
        "data": {**DINO_DATA, "n_train": len(data.train), "n_test": len(data.test)},
    }


def dino_from_checkpoint(state: dict, **overrides) -> DINO:
    """A float32 DINO (student, teacher, center) from :func:`dino_checkpoint_state`; ``overrides`` change its
    config (e.g. to continue training with one piece removed)."""
    backbone = VisionTransformer(**state["backbone"])
    dino = DINO(backbone, backbone.embed_dim, config=DINOConfig(**{**state["dino_config"], **overrides}))
    dino.student.load_state_dict({k: v.float() for k, v in state["student"].items()})
    dino.teacher.load_state_dict({k: v.float() for k, v in state["teacher"].items()})
    dino.loss.center.copy_(state["center"])
    return dino


CONTINUATION = dict(momentum_teacher=0.9, warmup_epochs=0, freeze_last_layer_epochs=0, lr=2e-4)


def continue_dino(
    state: dict, loader, steps: int, *, seed: int = 0, device="cpu", desc: str = "DINO (continued)", **setting
) -> tuple[DINO, DINOHistory]:
    """Lab 4.2's short continuation of the course checkpoint (section 7, ``scripts/dino_continuation.py``):
    ``steps`` steps with :data:`CONTINUATION` (lr 2e-4, teacher momentum 0.9 -> 1, no warm-up, no frozen last
    layer) and ``setting`` changed (centering, temperatures, ...). Returns the continued DINO and its history."""
    seed_everything(seed)
    epochs = max(2, -(-steps // len(loader)))  # ceil: the schedules span at least the steps we run
    run = dino_from_checkpoint(state, epochs=epochs, **CONTINUATION, **setting).to(device)
    trainer = DINOTrainer(run, len(loader), batch_size=loader.batch_size, device=device)
    return run, train_dino(trainer, loader, max_steps=steps, desc=desc)


def dino_metrics(backbone, data: DINOData, device="cpu") -> dict[str, float]:
    """k-NN accuracy of the CLS features (k = 20), mean attention-mask IoU over heads and test images on the
    8x8 grid (the test images rendered at ``DINO_EVAL_SIZE``), and the best head's mean IoU."""
    iou = attention_iou(backbone, data.test_large_images, data.test_large.masks)
    return {
        "knn": knn_eval(backbone, data.bank, data.queries, device),
        "iou": float(iou.mean()),
        "best_head_iou": float(iou.mean(0).max()),
    }


def raw_pixel_knn(data: DINOData) -> float:
    """The same k-NN on standardised raw pixels: what the images give with no network at all."""
    bank_x, bank_y = map(torch.cat, zip(*data.bank))
    query_x, query_y = map(torch.cat, zip(*data.queries))
    return knn_accuracy(
        bank_x.flatten(1), bank_y, query_x.flatten(1), query_y, num_classes=len(data.train.classes)
    )


def momentum_share(momenta) -> float:
    """The teacher's remaining share of its initial weights: the product of the EMA momenta so far."""
    return float(np.prod(np.asarray(momenta, dtype=np.float64)))


def mask_baselines(data: DINOData) -> dict[str, float]:
    """The two references for an attention mask's IoU on the 8x8 grid: colour saliency with no learning, cut
    with the same 60 % mass rule, and the oracle (the best choice of whole patches)."""
    images, masks, patch = data.test_large.images, data.test_large.masks, DINO_BACKBONE["patch_size"]
    return {
        "saliency_iou": float(saliency_iou(images, masks, patch).mean()),
        "oracle_iou": float(oracle_iou(masks, patch).mean()),
    }


# The fair supervised opponent of lab 4.2: DINO's backbone with a linear head, trained with labels on DINO's
# training images to a plateau of validation accuracy (``make checkpoints``: ``checkpoints/dino_supervised.pt``).
DINO_SUPERVISED = dict(epochs=45, batch_size=128)


def dino_supervised_data(seed: int = 0, *, split: str = "val", stats=None, n_train=None, n_eval=None):
    """``(train, evaluation, normalize)``: DINO's course training images with their labels (turned and
    flipped at random, standardised) and a labelled evaluation split."""
    s = dino_sizes("course")
    n_train, n_eval = n_train or s["n_train"], n_eval or s["n_test"]
    train = ShapesDataset(n_train, IMAGE_SIZE, seed=seed, split="train", **DINO_DATA)
    held = ShapesDataset(n_eval, IMAGE_SIZE, seed=seed, split=split, **DINO_DATA)
    normalize = standardizer(train.images) if stats is None else v2.Normalize(*stats)
    train.transform = v2.Compose([random_dihedral, normalize])
    held.transform = normalize
    return train, held, normalize


def new_dino_supervised() -> VisionTransformer:
    return VisionTransformer(**{**DINO_BACKBONE, "num_classes": len(SHAPE_CLASSES)})
