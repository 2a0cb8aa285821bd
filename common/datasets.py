"""Image datasets for the week-4 labs: generated shapes (with masks), digits, photographs, CIFAR-10.

Everything except CIFAR-10 works offline. Images are float32 tensors in [0, 1], channels first.

Public API
----------
``ShapesDataset(n, image_size=32, *, seed=0, split="train", return_mask=False, transform=None,
classes=SHAPE_CLASSES, background="cluttered", texture=False, palette=None)``
    A procedurally generated classification set: one object per image from ``classes`` (by default all of
    ``SHAPE_CLASSES``: circle, square, triangle, cross, ring, star) at a random position, scale, rotation and
    colour, on a smooth random colour background with line and blob clutter and pixel noise
    (``background="plain"``: the same objects and noise on plain grey; ``texture=True``: shape k filled
    with ``TEXTURES[k]``).
    Item ``i`` is ``(image (3, S, S), label)`` or, with ``return_mask=True``,
    ``(image, label, mask (S, S) bool)``; the mask is the object's true silhouette.
    Deterministic: image ``i`` depends only on ``(seed, split, i)``, so a larger ``n`` extends a
    smaller set and "train" / "val" / "test" never overlap (separate random streams; tested). Whole tensors: ``.images`` (N, 3, S, S),
    ``.labels`` (N,), ``.masks`` (N, S, S); ``.classes`` and ``.num_classes``.
    ``transform`` (optional) is applied to the image only, on each access (augmentation).
    ``palette`` (optional, names from ``PALETTE``): each object's colour is one of these named colours (with a
    little jitter), drawn from a separate random stream, so everything else about image ``i`` stays the same;
    ``.colours`` names them and ``.colour_labels`` (N,) indexes them. Every set also has the objects'
    ``.centres`` (N, 2) (x, y in [0, 1], y down) and ``.radii`` (N,) (in units of the image side).
``generate_arrangement(n, image_size=32, seed=0, split="train", grid=4) -> ArrangementData``
    Lab 4.1's position test: a reddish circle and a bluish square, each inside its own cell of a ``grid`` x
    ``grid`` layout (a 32-pixel image's 8x8 patches), in different rows; the class (``ARRANGEMENT_CLASSES``)
    is which one lies above. The two kinds of patch look the same in both classes: only where they are
    tells the class. ``.images``, ``.labels``, ``.masks`` (N, 2, S, S), ``.centres`` (N, 2, 2).
``random_dihedral(image) -> image``
    Augmentation for the shapes: one of the square's 8 symmetries (flips, 90-degree turns), which
    change no shape's class.
``generate_shapes(n, image_size=32, seed=0, split="train", classes=SHAPE_CLASSES, chunk=512,
background="cluttered", texture=False, palette=None) -> ShapesData``
    The same data as a plain record (images, labels, masks, classes, centres, radii, colours, colour_labels)
    without the Dataset wrapper;
    ``chunk`` images are rendered at a time.
``DigitsDataset(split="train", image_size=8, *, rgb=False, test_fraction=0.25, seed=0, transform=None)``
    scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), scaled to [0, 1], optionally
    resized to ``image_size`` and repeated to 3 channels; a stratified, seeded train/test split.
``sample_photo(name="chelsea", size=None) -> (3, H, W)``
    A scikit-image sample photograph (``SAMPLE_PHOTOS``); with ``size`` resized (short side) and
    centre-cropped to ``size x size``.
``load_cifar10(split="train", root=None, transform=None)``
    torchvision's CIFAR-10 (downloaded to ``outputs/data`` on first use). Without the network it
    raises ``common.runtime.OfflineError`` within seconds, saying what to do.
``load_dataset(name, split="train", *, n=None, image_size=None, seed=0, transform=None)``
    One entry point for a ``DATASET`` parameter: ``name`` in ``DATASETS``; every result has ``.classes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from common.course import outputs_dir
from common.runtime import require_online

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "star")
BACKGROUNDS = ("cluttered", "plain", "camouflage")
# "camouflage" (lab 4.2): background field, clutter and object all take their colours from the same uniform
# distribution, so no colour statistic tells the object from the background; only its structure (a sharp
# textured silhouette against a smooth field with solid clutter) does.
# The textured variant fills shape k with texture k: the class shows in every part of the object.
TEXTURES = ("solid", "stripes", "checks", "dots", "grid", "rings")
# Three disjoint streams: choose recipes, schedules and thresholds on "val", report on "test" once.
SPLITS = {"train": 0, "test": 1, "val": 2}
# Named object colours for ``palette=...`` (lab 4.4's captions): far from each other and from the grey background.
PALETTE = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.50, 0.00),
}
_PALETTE_JITTER = 0.06  # each channel moves by at most this much: shades of one name, never another's
DATASETS = ("shapes", "digits", "cifar10")
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "immunohistochemistry")
CIFAR10_HOST = "www.cs.toronto.edu"

_SUPERSAMPLE = 2  # the object is drawn at 2x and averaged: anti-aliased edges
_MAX_LINES, _MAX_BLOBS = 4, 3


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {tuple(SPLITS)}.")
    return SPLITS[split]


# ------------------------------------------------------------------------------------ shapes
def _shape_params(rng: np.random.Generator, num_classes: int) -> dict[str, np.ndarray]:
    """Everything random about one image, drawn from that image's own generator."""
    label = rng.integers(num_classes)
    radius = rng.uniform(0.2, 0.32)  # in units of the image side
    centre = rng.uniform(radius, 1 - radius, size=2)
    bg = rng.uniform(0.1, 0.9, size=(3, 4, 4))  # coarse colour field, smoothly upsampled
    bg = 0.5 + (bg - 0.5) * rng.uniform(0.3, 1.0)  # random background contrast
    bg_mean = bg.mean(axis=(1, 2))
    for _ in range(50):  # an object colour that stands out from the background (not always by much)
        colour = rng.uniform(0, 1, size=3)
        if np.linalg.norm(colour - bg_mean) > 0.5:
            break
    n_lines, n_blobs = rng.integers(1, _MAX_LINES + 1), rng.integers(0, _MAX_BLOBS + 1)
    lines = np.zeros((_MAX_LINES, 9))  # x0, y0, x1, y1, half-width, r, g, b, opacity
    lines[:n_lines, :4] = rng.uniform(0, 1, size=(n_lines, 4))
    lines[:n_lines, 4] = rng.uniform(0.01, 0.025, size=n_lines)
    lines[:n_lines, 5:8] = rng.uniform(0, 1, size=(n_lines, 3))
    lines[:n_lines, 8] = rng.uniform(0.3, 0.7, size=n_lines)
    blobs = np.zeros((_MAX_BLOBS, 7))  # x, y, radius, r, g, b, opacity
    blobs[:n_blobs, :2] = rng.uniform(0, 1, size=(n_blobs, 2))
    blobs[:n_blobs, 2] = rng.uniform(0.03, 0.08, size=n_blobs)
    blobs[:n_blobs, 3:6] = rng.uniform(0, 1, size=(n_blobs, 3))
    blobs[:n_blobs, 6] = rng.uniform(0.3, 0.7, size=n_blobs)
    return {
        "label": np.int64(label),
        "centre": centre,
        "radius": np.float64(radius),
        "angle": np.float64(rng.uniform(0, 2 * math.pi)),
        "colour": colour,
        "bg": bg,
        "lines": lines,
        "blobs": blobs,
        "noise": np.float64(rng.uniform(0.02, 0.06)),
        "noise_seed": np.int64(rng.integers(2**31)),
    }


def _regular_polygon(u: Tensor, v: Tensor, sides: int, apothem: float) -> Tensor:
    """Inside a regular polygon centred at 0: below every edge's supporting line."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(sides):
        phi = 2 * math.pi * k / sides
        inside &= u * math.cos(phi) + v * math.sin(phi) <= apothem
    return inside


def _star(u: Tensor, v: Tensor, points: int = 5, outer: float = 1.1, inner: float = 0.5) -> Tensor:
    """Inside a star: fold the angle into one half-spike and test against its outer edge."""
    r = torch.sqrt(u * u + v * v)
    sector = 2 * math.pi / points
    a = torch.remainder(torch.atan2(v, u), sector)
    a = torch.minimum(a, sector - a)  # angle from the nearest tip: 0 at a tip, sector/2 at a valley
    x, y = r * torch.cos(a), r * torch.sin(a)
    tip = (outer, 0.0)
    valley = (inner * math.cos(sector / 2), inner * math.sin(sector / 2))
    # same side of the edge tip -> valley as the origin (the origin's cross product is positive)
    cross = (valley[0] - tip[0]) * (y - tip[1]) - (valley[1] - tip[1]) * (x - tip[0])
    return cross >= 0


def _inside(name: str, u: Tensor, v: Tensor) -> Tensor:
    """Silhouettes in the object's own frame (radius ~1); areas are within ~40 % of each other."""
    r = torch.sqrt(u * u + v * v)
    if name == "circle":
        return r <= 0.9
    if name == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.8
    if name == "triangle":
        return _regular_polygon(u, v, 3, 0.62)
    if name == "cross":
        return ((u.abs() <= 0.32) & (v.abs() <= 1.0)) | ((v.abs() <= 0.32) & (u.abs() <= 1.0))
    if name == "star":
        return _star(u, v)
    raise ValueError(f"unknown shape {name!r}; use names from {SHAPE_CLASSES}.")


def _texture(name: str, u: Tensor, v: Tensor, freq: Tensor, phase: Tensor) -> Tensor:
    """1 where a pattern in the object's own frame shows the object's colour, 0 its dark shade."""
    a, b = u * freq + phase, v * freq + phase
    fa, fb = torch.remainder(a, 1.0), torch.remainder(b, 1.0)
    if name == "solid":
        return torch.ones_like(u, dtype=torch.bool)
    if name == "stripes":
        return fa < 0.5
    if name == "checks":
        return (fa < 0.5) ^ (fb < 0.5)
    if name == "dots":
        return (fa - 0.5) ** 2 + (fb - 0.5) ** 2 > 0.09
    if name == "grid":
        return ((fa - 0.5).abs() > 0.2) & ((fb - 0.5).abs() > 0.2)
    if name == "rings":
        return torch.remainder(torch.sqrt(u * u + v * v) * freq + phase, 1.0) < 0.5
    raise ValueError(f"unknown texture {name!r}; use names from {TEXTURES}.")


def _grid(n_pixels: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in [0, 1]: (y, x), each (n_pixels, n_pixels)."""
    coords = (torch.arange(n_pixels, dtype=torch.float32) + 0.5) / n_pixels
    return torch.meshgrid(coords, coords, indexing="ij")


def _render(params: list[dict], size: int, classes: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """Draw a batch: background, clutter behind, the object, noise. Returns images and masks."""
    stack = {k: torch.as_tensor(np.stack([p[k] for p in params]), dtype=torch.float32) for k in params[0]}
    gy, gx = _grid(size)

    img = F.interpolate(stack["bg"], size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    for line in stack["lines"].unbind(1):  # pixels closer to the segment than its half-width
        p0, p1 = line[:, 0:2, None, None], line[:, 2:4, None, None]
        d = p1 - p0
        t = (((gx - p0[:, 0]) * d[:, 0] + (gy - p0[:, 1]) * d[:, 1]) / (d.pow(2).sum(1) + 1e-9)).clamp(0, 1)
        dist = torch.hypot(gx - (p0[:, 0] + t * d[:, 0]), gy - (p0[:, 1] + t * d[:, 1]))
        alpha = (dist <= line[:, 4, None, None]).float()[:, None] * line[:, 8, None, None, None]
        img = img * (1 - alpha) + line[:, 5:8, None, None] * alpha  # half-transparent clutter
    for blob in stack["blobs"].unbind(1):
        dist = torch.hypot(gx - blob[:, 0, None, None], gy - blob[:, 1, None, None])
        alpha = (dist <= blob[:, 2, None, None]).float()[:, None] * blob[:, 6, None, None, None]
        img = img * (1 - alpha) + blob[:, 3:6, None, None] * alpha

    # the object, rendered at a finer grid for anti-aliased edges: translate, rotate, scale to radius 1
    fy, fx = _grid(size * _SUPERSAMPLE)
    dx = (fx - stack["centre"][:, 0, None, None]) / stack["radius"][:, None, None]
    dy = (fy - stack["centre"][:, 1, None, None]) / stack["radius"][:, None, None]
    cos, sin = torch.cos(stack["angle"])[:, None, None], torch.sin(stack["angle"])[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    labels = stack["label"].long()
    inside = torch.zeros_like(u, dtype=torch.bool)
    for k, name in enumerate(classes):
        chosen = labels == k
        if chosen.any():
            inside[chosen] = _inside(name, u[chosen], v[chosen])
    alpha = F.avg_pool2d(inside.float()[:, None], _SUPERSAMPLE)  # (n, 1, S, S) pixel coverage
    colour = stack["colour"][:, :, None, None]
    if "texture" in stack:  # class k's texture: the object's colour and a dark shade of it
        freq, phase = stack["texture"][:, 0, None, None], stack["texture"][:, 1, None, None]
        lit = torch.zeros_like(u)
        for k in range(len(classes)):
            chosen = labels == k
            if chosen.any():
                lit[chosen] = _texture(TEXTURES[k], u[chosen], v[chosen], freq[chosen], phase[chosen]).float()
        shade = F.avg_pool2d((lit * inside)[:, None], _SUPERSAMPLE) / alpha.clamp_min(1e-6)
        colour = colour * (0.3 + 0.7 * shade)
    img = img * (1 - alpha) + colour * alpha

    noise = torch.stack(
        [
            torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(p["noise_seed"])))
            for p in params
        ]
    )
    img = (img + noise * stack["noise"][:, None, None, None]).clamp(0, 1)
    return img, alpha[:, 0] >= 0.5


@dataclass
class ShapesData:
    images: Tensor  # (N, 3, S, S) float32 in [0, 1]
    labels: Tensor  # (N,) int64
    masks: Tensor  # (N, S, S) bool: the object's silhouette
    classes: tuple[str, ...]
    centres: Tensor | None = None  # (N, 2) float32: the object's centre (x, y) in [0, 1], y pointing down
    radii: Tensor | None = None  # (N,) float32: the object's radius in units of the image side
    colours: tuple[str, ...] = ()  # the palette's colour names (empty without a palette)
    colour_labels: Tensor | None = None  # (N,) int64 index into ``colours`` (None without a palette)


def generate_shapes(
    n: int,
    image_size: int = 32,
    seed: int = 0,
    split: str = "train",
    classes: tuple[str, ...] = SHAPE_CLASSES,
    chunk: int = 512,
    background: str = "cluttered",
    texture: bool = False,
    palette: tuple[str, ...] | None = None,
) -> ShapesData:
    """``n`` generated images; image ``i`` depends only on ``(seed, split, i)`` (see the module docstring).

    ``background="plain"`` draws the same objects and noise on a plain grey background without clutter;
    ``texture=True`` fills shape ``k`` with the pattern ``TEXTURES[k]`` at a random frequency and phase;
    ``palette`` (names from ``PALETTE``) paints each object in one of these named colours."""
    if n < 1 or image_size < 8:
        raise ValueError(f"need n >= 1 and image_size >= 8, got n={n}, image_size={image_size}.")
    unknown = set(classes) - set(SHAPE_CLASSES)
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be at least two of {SHAPE_CLASSES}, got {classes}.")
    code = _split_code(split)
    params = [_shape_params(np.random.default_rng([seed, code, i]), len(classes)) for i in range(n)]
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; use one of {BACKGROUNDS}.")
    if background == "plain":  # transparent clutter: the random draws, and so every object, stay the same
        for p in params:
            p["lines"][:, 8] = p["blobs"][:, 6] = 0.0
            p["bg"][:] = p["bg"].mean()  # a plain grey background
    if background == "camouflage":  # a separate stream: the shapes, places and sizes stay the same
        for i, p in enumerate(params):
            rng = np.random.default_rng([seed, code, i, 3])
            p["bg"] = rng.uniform(0, 1, size=(3, 4, 4))  # full contrast, colours like the objects'
            p["colour"] = rng.uniform(0, 1, size=3)  # no longer chosen to stand out from the background
            p["lines"][:, 5:8] = rng.uniform(0, 1, size=(_MAX_LINES, 3))
            p["blobs"][:, 3:6] = rng.uniform(0, 1, size=(_MAX_BLOBS, 3))
            p["lines"][:, 8] = np.where(p["lines"][:, 8] > 0, 1.0, 0.0)  # opaque clutter
            p["blobs"][:, 6] = np.where(p["blobs"][:, 6] > 0, 1.0, 0.0)
    if texture:  # from a separate stream, so the objects themselves do not change
        for i, p in enumerate(params):
            rng = np.random.default_rng([seed, code, i, 1])
            p["texture"] = np.array([rng.uniform(1.6, 2.4), rng.uniform(0, 1)])
    colour_labels = None
    if palette is not None:  # also a separate stream: only the colours change
        palette = tuple(palette)
        unknown = set(palette) - set(PALETTE)
        if unknown or len(palette) < 1 or len(set(palette)) != len(palette):
            raise ValueError(f"palette must be distinct names from {tuple(PALETTE)}, got {palette}.")
        picks = []
        for i, p in enumerate(params):
            rng = np.random.default_rng([seed, code, i, 2])
            k = int(rng.integers(len(palette)))
            jitter = rng.uniform(-_PALETTE_JITTER, _PALETTE_JITTER, size=3)
            p["colour"] = np.clip(np.asarray(PALETTE[palette[k]]) + jitter, 0.0, 1.0)
            picks.append(k)
        colour_labels = torch.tensor(picks)
    images, masks = zip(
        *(_render(params[i : i + chunk], image_size, tuple(classes)) for i in range(0, n, chunk))
    )
    labels = torch.tensor([int(p["label"]) for p in params])
    centres = torch.tensor(np.stack([p["centre"] for p in params]), dtype=torch.float32)
    radii = torch.tensor([float(p["radius"]) for p in params], dtype=torch.float32)
    return ShapesData(
        torch.cat(images),
        labels,
        torch.cat(masks),
        tuple(classes),
        centres,
        radii,
        palette or (),
        colour_labels,
    )


class ShapesDataset(Dataset):
    """The generated shapes as a torch Dataset (see the module docstring)."""

    def __init__(
        self,
        n: int,
        image_size: int = 32,
        *,
        seed: int = 0,
        split: str = "train",
        return_mask: bool = False,
        transform: Callable[[Tensor], Tensor] | None = None,
        classes: tuple[str, ...] = SHAPE_CLASSES,
        background: str = "cluttered",
        texture: bool = False,
        palette: tuple[str, ...] | None = None,
    ):
        data = generate_shapes(
            n, image_size, seed, split, classes, background=background, texture=texture, palette=palette
        )
        self.images, self.labels, self.masks, self.classes = (
            data.images,
            data.labels,
            data.masks,
            data.classes,
        )
        self.centres, self.radii = data.centres, data.radii
        self.colours, self.colour_labels = data.colours, data.colour_labels
        self.num_classes = len(self.classes)
        self.return_mask = return_mask
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i] if self.transform is None else self.transform(self.images[i])
        if self.return_mask:
            return image, self.labels[i], self.masks[i]
        return image, self.labels[i]


def random_dihedral(image: Tensor) -> Tensor:
    """A random flip / 90-degree turn of a (C, H, W) image: 8x more views of every training shape."""
    k, flip = torch.randint(4, ()).item(), torch.rand(()).item() < 0.5
    image = torch.rot90(image, k, dims=(-2, -1))
    return image.flip(-1) if flip else image


# ------------------------------------------------------------------------------------ digits
class DigitsDataset(Dataset):
    """scikit-learn's 8x8 digits as (1 or 3, S, S) tensors in [0, 1] with a stratified split."""

    def __init__(
        self,
        split: str = "train",
        image_size: int = 8,
        *,
        rgb: bool = False,
        test_fraction: float = 0.25,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        _split_code(split)
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # pixel values 0..16
        labels = torch.tensor(digits.target, dtype=torch.int64)
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=digits.target
        )
        idx = torch.as_tensor(train_idx if split == "train" else test_idx)
        images = images[idx]
        if image_size != 8:
            images = F.interpolate(
                images, size=(image_size, image_size), mode="bilinear", align_corners=False
            ).clamp(0, 1)
        self.images = images.expand(-1, 3, -1, -1).contiguous() if rgb else images
        self.labels = labels[idx]
        self.classes = tuple(str(d) for d in range(10))
        self.num_classes = 10
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i] if self.transform is None else self.transform(self.images[i])
        return image, self.labels[i]


# ------------------------------------------------------------------------------------ photographs
def sample_photo(name: str = "chelsea", size: int | None = None) -> Tensor:
    """A scikit-image sample photograph as (3, H, W) in [0, 1]; ``size`` -> resized and centre-cropped square."""
    import skimage.data
    from torchvision.transforms import functional as TF

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; use one of {SAMPLE_PHOTOS}.")
    photo = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255.0
    if size is not None:
        photo = TF.center_crop(TF.resize(photo, size, antialias=True), [size, size]).clamp(0, 1)
    return photo


# ------------------------------------------------------------------------------------ CIFAR-10
def load_cifar10(split: str = "train", root: str | None = None, transform: Callable | None = None) -> Dataset:
    """torchvision's CIFAR-10 as (3, 32, 32) tensors in [0, 1] (or ``transform``'s output)."""
    from torchvision import datasets, transforms

    train = _split_code(split) == 0
    root = str(root or outputs_dir("data"))
    try:  # already downloaded: no network needed
        return datasets.CIFAR10(
            root, train=train, download=False, transform=transform or transforms.ToTensor()
        )
    except RuntimeError:
        require_online("Downloading CIFAR-10 (170 MB)", host=CIFAR10_HOST)
    return datasets.CIFAR10(root, train=train, download=True, transform=transform or transforms.ToTensor())


def load_dataset(
    name: str,
    split: str = "train",
    *,
    n: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    transform: Callable | None = None,
) -> Dataset:
    """The dataset behind a notebook's ``DATASET`` parameter. ``n`` (default 4000) applies to shapes,
    ``image_size`` and ``seed`` to shapes (default size 32) and digits (default size 8, always 3 channels);
    CIFAR-10 ignores them and is always 32 x 32."""
    if name == "shapes":
        return ShapesDataset(n or 4000, image_size or 32, seed=seed, split=split, transform=transform)
    if name == "digits":
        return DigitsDataset(split, image_size or 8, rgb=True, seed=seed, transform=transform)
    if name == "cifar10":
        return load_cifar10(split, transform=transform)
    raise ValueError(f"unknown DATASET {name!r}; use one of {DATASETS}.")


# ------------------------------------------------------------------------------------ arrangement
# Lab 4.1's position-embedding test: two objects whose class is WHERE they are relative to each other, not what
# they are. A model that sees the patches as an unordered bag cannot tell the classes apart when the two objects
# fall into different patches.
ARRANGEMENT_CLASSES = ("circle above square", "square above circle")
_ARRANGEMENT_COLOURS = ((0.85, 0.15, 0.10), (0.10, 0.25, 0.90))  # the circle's and the square's base shade


@dataclass
class ArrangementData:
    images: Tensor  # (N, 3, S, S) float32 in [0, 1]
    labels: Tensor  # (N,) int64 index into ARRANGEMENT_CLASSES
    masks: Tensor  # (N, 2, S, S) bool: the circle's and the square's silhouettes
    centres: Tensor  # (N, 2, 2) float32: (x, y) in [0, 1] of the circle and of the square, y pointing down
    classes: tuple[str, ...] = ARRANGEMENT_CLASSES


def generate_arrangement(
    n: int, image_size: int = 32, seed: int = 0, split: str = "train", grid: int = 4
) -> ArrangementData:
    """``n`` images of a reddish circle and a bluish square on a plain grey background; label 0 when the circle
    lies above the square, 1 when below. Each object sits wholly inside one cell of a ``grid`` x ``grid``
    layout, the two in different rows (columns, offsets in the cell, sizes, the square's turn, shades and
    noise random), so no cell ever holds part of both. Image ``i`` depends only on ``(seed, split, i)`` (a
    stream of its own, separate from the shapes'), so the splits are disjoint."""
    if n < 1 or grid < 2 or image_size % grid or image_size // grid < 4:
        raise ValueError(
            f"need n >= 1 and a grid >= 2 dividing image_size into cells of >= 4 pixels, got n={n}, "
            f"image_size={image_size}, grid={grid}; use e.g. image_size=32, grid=4 (8x8-pixel patches)."
        )
    code = _split_code(split)
    labels, centres, radii, angles, colours, greys, noise, seeds = [], [], [], [], [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, code, i, 4])
        label = int(rng.integers(2))
        # each object lies wholly inside one cell of a grid x grid layout (the 4x4 patch grid of a 32-pixel image
        # cut into 8x8 patches), the two in different rows, at the same random offset distribution inside its
        # cell: the multiset of patches has the same distribution in both classes; only their places differ
        cell = 1.0 / grid
        r = rng.uniform(0.30, 0.45, size=2) * cell  # circle, square (units of the image side)
        rows = rng.choice(grid, size=2, replace=False)
        top, bottom = rows.min(), rows.max()
        row = (top, bottom) if label == 0 else (bottom, top)  # (circle, square)
        col = rng.integers(grid, size=2)
        y = np.array(row) * cell + rng.uniform(r, cell - r)
        x = col * cell + rng.uniform(r, cell - r)
        grey = rng.uniform(0.3, 0.7)
        # each object is easy to recognise: the circle is reddish, the square bluish (jittered shades), so
        # what decides the class is only where they are
        pair = [np.clip(np.array(c) + rng.uniform(-0.1, 0.1, size=3), 0, 1) for c in _ARRANGEMENT_COLOURS]
        labels.append(label)
        centres.append(np.stack([x, y], axis=1))
        radii.append(r)
        angles.append(rng.uniform(0, math.pi / 2))
        colours.append(np.stack(pair))
        greys.append(grey)
        noise.append(rng.uniform(0.02, 0.05))
        seeds.append(int(rng.integers(2**31)))
    centres_t = torch.tensor(np.stack(centres), dtype=torch.float32)  # (n, 2, 2)
    radii_t = torch.tensor(np.stack(radii), dtype=torch.float32)  # (n, 2)
    angle = torch.tensor(angles, dtype=torch.float32)[:, None, None]
    fy, fx = _grid(image_size * _SUPERSAMPLE)
    masks, alphas = [], []
    for k, name in enumerate(("circle", "square")):
        dx = (fx - centres_t[:, k, 0, None, None]) / radii_t[:, k, None, None]
        dy = (fy - centres_t[:, k, 1, None, None]) / radii_t[:, k, None, None]
        u, v = torch.cos(angle) * dx + torch.sin(angle) * dy, -torch.sin(angle) * dx + torch.cos(angle) * dy
        alpha = F.avg_pool2d(_inside(name, u, v).float()[:, None], _SUPERSAMPLE)  # (n, 1, S, S)
        alphas.append(alpha)
        masks.append(alpha[:, 0] >= 0.5)
    img = torch.tensor(greys, dtype=torch.float32)[:, None, None, None].expand(n, 3, image_size, image_size)
    colour = torch.tensor(np.stack(colours), dtype=torch.float32)  # (n, 2, 3)
    for k in range(2):
        img = img * (1 - alphas[k]) + colour[:, k, :, None, None] * alphas[k]
    noise_t = torch.tensor(noise, dtype=torch.float32)[:, None, None, None]
    pixel_noise = torch.stack(
        [torch.randn(3, image_size, image_size, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )
    img = (img + noise_t * pixel_noise).clamp(0, 1)
    return ArrangementData(img, torch.tensor(labels), torch.stack(masks, 1), centres_t)
