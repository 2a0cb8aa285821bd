"""Tab 2: the course's own trained models on one image.

- The supervised ViT of lab 4.1 (``checkpoints/vit_shapes.pt``): class probabilities, every head's last-block
  CLS attention and the attention rollout (``common.attention_analysis.attention_rollout``) over the image.
- DINO of lab 4.2 (``checkpoints/dino_shapes.pt``): the teacher's last-block CLS attention per head, the
  thresholded mask of each head (``common.dino_eval.attention_masks``: the patches holding 60 % of the
  attention) and, for a generated example, its IoU with the true object mask (``mask_iou``).

Inputs are standardised with the mean and std stored in each checkpoint (as week4/01 and ``common.
reference_models`` do) after the image's centre square is area-averaged to the models' 32 × 32 pixels.
Out-of-distribution warning (:func:`familiarity`): the ViT was trained on one shape on a plain grey background with
pixel noise, and it gives a confident class to anything, a photograph included. An input counts as familiar when the
border of its 32 × 32 version (the outer 2 pixels: background in every generated image) has the training background's
colour and spread, within ``OOD_MARGIN`` times the largest deviation seen on ``N_CALIBRATION`` generated images of the
validation split. The rule looks at the background only: it flags photographs, not a strange object on grey.

Examples are generated the way each model was trained: plain shapes for the ViT (``VIT_BACKGROUND``), the
textured shapes on the camouflage background for DINO (``DINO_DATA``), both from the test split, with their true masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from benchapp import InputError
from benchapp.images import enlarge, square, to_pixels
from common import checkpoints
from common import reference_models as ref
from common.attention_analysis import attention_rollout
from common.datasets import SAMPLE_PHOTOS, SHAPE_CLASSES, generate_shapes, sample_photo
from common.dino_eval import attention_masks, last_block_cls_attention, mask_iou

IMAGE_SIZE = ref.IMAGE_SIZE  # 32: what both checkpoints were trained on
MASS = 0.6  # DINO's threshold: each head keeps the patches that hold 60 % of its CLS attention
N_EXAMPLES = 6
N_CALIBRATION = 300  # generated validation-split shapes that set the familiarity limits
OOD_MARGIN = 1.25  # limits = this x the largest deviation among them
BORDER = 2  # pixels of the 32 x 32 input that are background in every generated image
DISPLAY = 8  # generated examples are shown enlarged 8x (nearest); area averaging undoes it exactly


class CheckpointMissing(InputError):
    """A course checkpoint is absent or does not match the manifest: the page says to run `make checkpoints`."""


@dataclass
class CourseModel:
    model: torch.nn.Module
    normalize: v2.Normalize
    entry: dict  # the manifest entry: metrics, command, date


def _load(name: str) -> tuple[dict, dict]:
    try:
        return checkpoints.load_course_checkpoint(name)
    except checkpoints.CheckpointError as err:
        detail = str(err).removeprefix("checkpoint missing: ")
        raise CheckpointMissing(
            f"체크포인트 없음 / checkpoint missing: run `make checkpoints` ({detail})"
        ) from None


@cache
def vit() -> CourseModel:
    """The course-trained ViT (lab 4.1), loaded once."""
    state, entry = _load("vit_shapes")
    return CourseModel(checkpoints.build_vit(state).eval(), v2.Normalize(state["mean"], state["std"]), entry)


@cache
def dino() -> CourseModel:
    """The course-trained DINO's teacher backbone (lab 4.2), loaded once."""
    state, entry = _load("dino_shapes")
    backbone = ref.dino_from_checkpoint(state).teacher_backbone.eval()
    return CourseModel(backbone, v2.Normalize(state["mean"], state["std"]), entry)


# ------------------------------------------------------------------------------------------------ examples
@dataclass(frozen=True)
class Example:
    key: str
    label: str  # for the page
    pixels: np.ndarray  # (H, W, 3) uint8, as shown (generated shapes enlarged DISPLAY×)
    mask: np.ndarray | None  # (32, 32) bool true silhouette, generated shapes only
    true_class: str | None


@cache
def _shapes(kind: str):
    look = {"background": ref.VIT_BACKGROUND} if kind == "vit" else dict(ref.DINO_DATA)
    return generate_shapes(N_EXAMPLES, IMAGE_SIZE, seed=0, split="test", **look)


def example_keys() -> list[tuple[str, str]]:
    """(label, key) pairs for the example picker: the ViT's plain shapes, DINO's textured shapes, photos."""
    keys = []
    for kind, what in (
        ("vit", "ViT · 단순 도형 / plain shape"),
        ("dino", "DINO · 무늬 도형 / textured shape"),
    ):
        labels = _shapes(kind).labels
        keys += [(f"{what} #{i} ({SHAPE_CLASSES[int(labels[i])]})", f"{kind}:{i}") for i in range(N_EXAMPLES)]
    keys += [(f"사진 / photo · {name} (scikit-image)", f"photo:{name}") for name in SAMPLE_PHOTOS]
    return keys


def example(key: str) -> Example:
    """A generated shape (with its true mask) or a scikit-image photo (no mask)."""
    labels = dict((k, label) for label, k in example_keys())
    if key not in labels:
        raise InputError(f"알 수 없는 예시 / Unknown example {key!r}.")
    kind, _, which = key.partition(":")
    if kind == "photo":
        return Example(key, labels[key], to_pixels(sample_photo(which)), None, None)
    data = _shapes(kind)
    i = int(which)
    pixels = enlarge(to_pixels(data.images[i]), DISPLAY)
    return Example(key, labels[key], pixels, data.masks[i].numpy(), data.classes[int(data.labels[i])])


def matching_mask(pixels: np.ndarray, held: Example | None) -> np.ndarray | None:
    """The true mask of the example on screen, if the image is still that example (not a later upload)."""
    if held is None or held.mask is None or pixels is None:
        return None
    return held.mask if np.array_equal(np.asarray(pixels), held.pixels) else None


# ------------------------------------------------------------------------------------------------ inference
def _input(pixels: np.ndarray, normalize: v2.Normalize) -> tuple[torch.Tensor, torch.Tensor]:
    raw = square(pixels, IMAGE_SIZE)  # (3, 32, 32) in [0, 1]
    return raw, normalize(raw)[None]


def _upsample(grid: torch.Tensor, size: int = IMAGE_SIZE) -> np.ndarray:
    """(..., gh, gw) patch values -> (..., size, size) by nearest (each pixel takes its patch's value)."""
    lead = grid.shape[:-2]
    up = F.interpolate(grid.reshape(-1, 1, *grid.shape[-2:]).float(), size=(size, size), mode="nearest")
    return up.reshape(*lead, size, size).numpy()


def _border_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (N, 3, 32, 32): the median colour of the border pixels (N, 3) and their largest per-channel std."""
    b = BORDER
    border = torch.cat(
        [images[..., :b, :].flatten(2), images[..., -b:, :].flatten(2), images[..., b:-b, :b].flatten(2),
         images[..., b:-b, -b:].flatten(2)],
        dim=2,
    )  # fmt: skip
    return border.median(2).values, border.std(2).max(1).values


@cache
def _calibration() -> tuple[torch.Tensor, float, float]:
    """The training background's colour and the limits on colour shift and spread, from generated images."""
    data = generate_shapes(N_CALIBRATION, IMAGE_SIZE, seed=0, split="val", background=ref.VIT_BACKGROUND)
    colour, spread = _border_stats(data.images)
    grey = colour.mean(0)
    shift = (colour - grey).abs().max(1).values
    return grey, OOD_MARGIN * float(shift.max()), OOD_MARGIN * float(spread.max())


@dataclass(frozen=True)
class Familiarity:
    familiar: bool
    colour_shift: float  # largest channel difference between the border's median colour and the training grey
    spread: float  # largest per-channel std of the border pixels
    shift_limit: float
    spread_limit: float

    def warning(self) -> str:
        return (
            "⚠ 학습 분포 밖의 이미지 / Not like the training images: this ViT knows only six generated shapes "
            f"({', '.join(SHAPE_CLASSES)}) on a plain grey background, and its confidence means nothing here. "
            f"The image's border differs from that background (colour shift {self.colour_shift:.2f}, limit "
            f"{self.shift_limit:.2f}; spread {self.spread:.2f}, limit {self.spread_limit:.2f}: limits from "
            f"{N_CALIBRATION} generated images)."
        )


def familiarity(raw: torch.Tensor) -> Familiarity:
    """Whether a (3, 32, 32) image in [0, 1] has the background of the ViT's training images (see module doc)."""
    grey, shift_limit, spread_limit = _calibration()
    colour, spread = _border_stats(raw[None])
    shift = float((colour[0] - grey).abs().max())
    spread = float(spread[0])
    return Familiarity(
        shift <= shift_limit and spread <= spread_limit, shift, spread, shift_limit, spread_limit
    )


@dataclass
class ViTResult:
    probabilities: dict[str, float]  # class -> probability
    heads: np.ndarray  # (heads, 32, 32): last block's CLS attention per head, upsampled
    rollout: np.ndarray  # (32, 32): CLS row of the attention rollout, upsampled
    image: np.ndarray  # (32, 32, 3) what the model saw
    familiarity: Familiarity | None = None


@torch.no_grad()
def classify(pixels: np.ndarray) -> ViTResult:
    course = vit()
    raw, x = _input(pixels, course.normalize)
    model = course.model
    probs = model(x).softmax(-1)[0]
    maps = model.get_attention_maps(x)  # per block (1, heads, 1+N, 1+N)
    gh, gw = model.grid_size
    heads = maps[-1][0, :, 0, 1:].reshape(-1, gh, gw)
    rollout = attention_rollout(maps)[0, 0, 1:].reshape(gh, gw)
    return ViTResult(
        {name: float(p) for name, p in zip(SHAPE_CLASSES, probs)},
        _upsample(heads),
        _upsample(rollout),
        to_pixels(raw),
        familiarity(raw),
    )


@dataclass
class DINOResult:
    attention: np.ndarray  # (heads, 32, 32) last block's CLS attention per head, upsampled
    masks: np.ndarray  # (heads, 32, 32) bool: each head's thresholded mask
    iou: np.ndarray | None  # (heads,) IoU with the true mask, when there is one
    true_mask: np.ndarray | None
    image: np.ndarray


@torch.no_grad()
def dino_attention(pixels: np.ndarray, true_mask: np.ndarray | None = None) -> DINOResult:
    course = dino()
    raw, x = _input(pixels, course.normalize)
    attn = last_block_cls_attention(course.model, x)  # (1, heads, gh, gw)
    b, h, gh, gw = attn.shape
    keep = attention_masks(attn.flatten(2), MASS).reshape(b, h, gh, gw)
    masks = _upsample(keep)[0].astype(bool)
    iou = None
    if true_mask is not None:
        target = torch.as_tensor(np.asarray(true_mask, dtype=bool))
        if tuple(target.shape) != (IMAGE_SIZE, IMAGE_SIZE):
            raise InputError(f"true mask must be {IMAGE_SIZE}×{IMAGE_SIZE}, got {tuple(target.shape)}.")
        iou = mask_iou(torch.from_numpy(masks), target[None]).numpy()
    return DINOResult(_upsample(attn)[0], masks, iou, true_mask, to_pixels(raw))


# ------------------------------------------------------------------------------------------------ figures
def vit_figure(result: ViTResult):
    from matplotlib.figure import Figure  # not pyplot: no global figure registry in a server

    n = len(result.heads)
    fig = Figure(figsize=(2.1 * (n + 2), 2.9), layout="constrained")
    axes = fig.subplots(1, n + 2)
    fig.suptitle(
        "ViT: last block's CLS attention per head, and attention rollout over all blocks", fontsize=10
    )
    axes[0].imshow(result.image)
    axes[0].set_title("input 32×32", fontsize=9)
    for k in range(n):
        axes[k + 1].imshow(result.image)
        axes[k + 1].imshow(result.heads[k], cmap="inferno", alpha=0.6)
        axes[k + 1].set_title(f"head {k + 1}", fontsize=9)
    axes[-1].imshow(result.image)
    axes[-1].imshow(result.rollout, cmap="inferno", alpha=0.6)
    axes[-1].set_title("rollout", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return fig


def dino_figure(result: DINOResult):
    from matplotlib.figure import Figure  # not pyplot: no global figure registry in a server

    n = len(result.attention)
    fig = Figure(figsize=(2.1 * (n + 1), 4.9), layout="constrained")
    axes = fig.subplots(2, n + 1)
    fig.suptitle(
        f"DINO teacher, last block: CLS attention per head (top) and the patches holding {MASS:.0%} of it (bottom)",
        fontsize=10,
    )
    axes[0, 0].imshow(result.image)
    axes[0, 0].set_title("input 32×32", fontsize=9)
    if result.true_mask is not None:
        axes[1, 0].imshow(result.true_mask, cmap="gray")
        axes[1, 0].set_title("true mask", fontsize=9)
    for k in range(n):
        axes[0, k + 1].imshow(result.attention[k], cmap="inferno")
        axes[0, k + 1].set_title(f"head {k + 1}", fontsize=9)
        # the mask's patches as they are, the rest dimmed
        kept = result.image * (0.2 + 0.8 * result.masks[k][..., None])
        axes[1, k + 1].imshow(kept.astype(np.uint8))
        title = f"mask {k + 1}" + (f", IoU {result.iou[k]:.2f}" if result.iou is not None else "")
        axes[1, k + 1].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    return fig
