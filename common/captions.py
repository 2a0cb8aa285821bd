"""Captions for the generated shapes: a tiny closed language for lab 4.4's CLIP, and its word-level tokeniser.

Each image of :func:`common.datasets.generate_shapes` (plain background, object colours from the named
``PALETTE``) is described by its attributes: shape, colour name, position word and size word, written with one
of several ``TEMPLATES`` ("a small red star on the left", "the star is red", ...). Everything is deterministic:
image ``i`` of a split and its template depend only on ``(seed, split, i)``.

Compositional splits: the training split never contains the (shape, colour) pairs of ``HELD_OUT`` (one per shape
and one per colour, so every word is still seen, only never together); the "val" and "test" splits contain every
pair, and ``CaptionedShapes.seen`` tells which images show a pair the model never saw in training.

Unseen phrasings: ``HELD_OUT_TEMPLATES`` are sentences the generator never writes, made only of words it does write
(the language is closed: a new word would have an untrained embedding), so zero-shot prompts can be new to the model.

What a caption says: a template names shape and colour, and some also size and position. Caption ``j`` *fits*
image ``i`` when every attribute it names is the image's (:func:`captions_fit`): "a red star" fits every red star,
"a small red star on the left" only those. Half of the templates name only colour and shape, so a batch
holds several captions that fit the same image; a loss that counts only caption ``i`` as right for image ``i``
cannot reach 0 even for a model that reads every attribute perfectly (``common.clip.content_loss_floor``).

Public API
----------
- ``COLOURS``, ``SHAPES``, ``POSITIONS``, ``SIZES``, ``TEMPLATES``, ``HELD_OUT_TEMPLATES``, ``HELD_OUT``;
  :func:`position_word`, :func:`size_word`, :func:`caption` (with "an" before a vowel), :func:`prompts`,
  :func:`pair_prompts`, :func:`named_attributes`, :func:`captions_fit`.
- No-learning colour baselines: :func:`mean_colour` (of the whole image, or of the pixels that differ from the
  background) and :func:`nearest_colour` (the palette name closest to a mean colour).
- ``Vocabulary(words)`` and :func:`caption_vocabulary`: the word-level tokeniser (``encode``, ``decode``).
- :func:`captioned_shapes` -> :class:`CaptionedShapes` (images, captions and every attribute as labels).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.datasets import PALETTE, SHAPE_CLASSES, SPLITS, generate_shapes

SHAPES = SHAPE_CLASSES
COLOURS = tuple(PALETTE)  # red, green, blue, yellow, purple, orange
POSITIONS = ("left", "right", "top", "bottom", "centre")
SIZES = ("small", "large")
WHERE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
# Several ways to say it: some name every attribute, some only colour and shape, one puts the colour last.
TEMPLATES = (
    "a {colour} {shape}",
    "a {size} {colour} {shape}",
    "a {colour} {shape} {where}",
    "a {size} {colour} {shape} {where}",
    "a picture of a {colour} {shape}",
    "the {shape} is {colour}",
)
# Never written by the generator, only words it writes: zero-shot prompts the text encoder has never read. Each
# changes the word order or the function words around the two class words ("the" before a colour, no article,
# "the" after "of", a size before a shape without a colour between, "is" before a colour after a size).
HELD_OUT_TEMPLATES = (
    "the {colour} {shape}",
    "{colour} {shape}",
    "a picture of the {colour} {shape}",
    "the {size} {shape} is {colour}",
)
ATTRIBUTES = ("shape", "colour", "size", "position")
# Never shown together in training: a Latin-square diagonal, each shape and each colour exactly once.
HELD_OUT = (
    ("circle", "blue"),
    ("square", "orange"),
    ("triangle", "red"),
    ("cross", "yellow"),
    ("ring", "purple"),
    ("star", "green"),
)
CENTRE_BOX = 0.1  # |x - 0.5| and |y - 0.5| both below this: "in the centre"
SMALL_BELOW = 0.26  # radii are drawn in [0.2, 0.32] of the image side
PAD, EOS = "<pad>", "<eos>"


def position_word(x: float, y: float) -> str:
    """Where the object's centre (x, y in [0, 1], y pointing down) is: the larger offset from the middle wins."""
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < CENTRE_BOX:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def size_word(radius: float) -> str:
    return "small" if radius < SMALL_BELOW else "large"


def caption(template: str, *, shape: str, colour: str, size: str = "small", position: str = "centre") -> str:
    """One caption: ``template`` (see ``TEMPLATES``) filled with the attributes; "a" becomes "an" before a vowel
    ("an orange ring")."""
    if position not in WHERE:
        raise ValueError(f"unknown position {position!r}; use one of {POSITIONS}.")
    text = template.format(shape=shape, colour=colour, size=size, where=WHERE[position])
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def named_attributes(template: str) -> tuple[bool, bool, bool, bool]:
    """Which of (shape, colour, size, position) ``template`` names."""
    return ("{shape}" in template, "{colour}" in template, "{size}" in template, "{where}" in template)


def captions_fit(image_attributes: Tensor, caption_attributes: Tensor) -> Tensor:
    """(N, 4) attributes of N images and (M, 4) of M captions (shape, colour, size, position indices; -1 where a
    caption does not name that attribute) -> (N, M) bool: caption j fits image i when every attribute it names is
    the image's. A caption always fits its own image; "a red star" fits every red star in the batch."""
    if image_attributes.ndim != 2 or caption_attributes.ndim != 2 or image_attributes.shape[1] != 4:
        raise ValueError("need (N, 4) image and (M, 4) caption attributes: shape, colour, size, position.")
    if caption_attributes.shape[1] != 4 or bool((image_attributes < 0).any()):
        raise ValueError("images have every attribute (no -1); captions are (M, 4) with -1 for 'not named'.")
    c, a = caption_attributes[None], image_attributes[:, None]
    return ((c == a) | (c < 0)).all(-1)


def prompts(template: str, shapes: Sequence[str] = SHAPES, colours: Sequence[str] = COLOURS) -> list[str]:
    """``template`` for every (shape, colour) pair, shape-major: ``[(s0, c0), (s0, c1), ...]``; a template
    with ``{size}`` or ``{where}`` gets "small" and "in the centre" (see :func:`pair_prompts` for all)."""
    return [caption(template, shape=s, colour=c) for s in shapes for c in colours]


def pair_prompts(
    templates: Sequence[str] = TEMPLATES, shapes: Sequence[str] = SHAPES, colours: Sequence[str] = COLOURS
) -> list[list[str]]:
    """For every (shape, colour) pair, shape-major, every caption the templates can say about it (all sizes
    and positions, without repeats): the prompts of a template ensemble. Every pair gets the same number."""
    out = []
    for s in shapes:
        for c in colours:
            texts = [
                caption(t, shape=s, colour=c, size=z, position=p)
                for t in templates
                for z in SIZES
                for p in POSITIONS
            ]
            out.append(list(dict.fromkeys(texts)))
    return out


# ------------------------------------------------------------------------------------------ no-learning baselines
def mean_colour(images: Tensor, threshold: float | None = None) -> Tensor:
    """(N, 3, S, S) images in [0, 1] -> (N, 3) mean colours. ``threshold=None``: of the whole image (the grey
    background dilutes the object's colour); otherwise of the pixels farther than ``threshold`` (Euclidean, in
    RGB) from the image's median colour, which is the plain background's since the object covers far less than
    half of the image. An image with no such pixel falls back to its whole mean."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"need (N, 3, S, S) RGB images, got {tuple(images.shape)}.")
    whole = images.mean((2, 3))
    if threshold is None:
        return whole
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    background = images.flatten(2).median(-1).values  # (N, 3)
    keep = ((images - background[..., None, None]).norm(dim=1) > threshold).float()[:, None]  # (N, 1, S, S)
    count = keep.sum((2, 3))
    return torch.where(count > 0, (images * keep).sum((2, 3)) / count.clamp_min(1), whole)


def nearest_colour(rgb: Tensor) -> Tensor:
    """(N, 3) colours -> (N,) index into ``COLOURS`` of the nearest palette colour."""
    palette = torch.tensor([PALETTE[c] for c in COLOURS], dtype=rgb.dtype)
    return torch.cdist(rgb, palette).argmin(1)


# ------------------------------------------------------------------------------------------ tokeniser
class Vocabulary:
    """A word-level tokeniser for a closed language: one id per word, ``<pad>`` = 0, ``<eos>`` = 1.

    ``encode`` splits on spaces, appends ``<eos>`` (the token whose state the text encoder returns) and pads
    with ``<pad>`` to a common length. A word outside the vocabulary raises ValueError listing the vocabulary:
    the caption language is closed, so an unknown word is a typo, not something to guess.
    """

    def __init__(self, words: Iterable[str]):
        words = sorted(set(words) - {PAD, EOS})
        self.itos = [PAD, EOS, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.eos_id = 0, 1

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for word in text.lower().split():
            if word not in self.stoi:
                raise ValueError(
                    f"unknown word {word!r} in {text!r}; the caption language has only: "
                    f"{' '.join(self.itos[2:])}."
                )
            ids.append(self.stoi[word])
        return [*ids, self.eos_id]

    def encode(self, texts: Sequence[str] | str, context_length: int | None = None) -> Tensor:
        """(B, L) int64 ids: each text's words, then ``<eos>``, then ``<pad>``; L = the longest unless given."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = [self.tokenize(t) for t in texts]
        length = max(map(len, rows)) if context_length is None else context_length
        if any(len(r) > length for r in rows):
            raise ValueError(f"a text has more than context_length={length} tokens (with <eos>); raise it.")
        out = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i != self.pad_id:
                words.append(self.itos[i])
        return " ".join(words)


def caption_vocabulary(templates: Sequence[str] = TEMPLATES) -> Vocabulary:
    """Every word the templates and attributes can produce: 28 words with the default templates ("an" included),
    30 tokens with ``<pad>`` and ``<eos>``."""
    fixed = [w for t in templates for w in re.sub(r"\{\w+\}", " ", t).split()]
    fixed += ["an"] if "a" in fixed else []  # "an orange ..."
    where = [w for phrase in WHERE.values() for w in phrase.split()]
    return Vocabulary([*fixed, *where, *SHAPES, *COLOURS, *SIZES])


def context_length(templates: Sequence[str] = TEMPLATES) -> int:
    """The longest caption the templates can produce, in tokens with ``<eos>``."""
    return 1 + max(
        len(caption(t, shape=SHAPES[0], colour=COLOURS[0], size=SIZES[0], position=p).split())
        for t in templates
        for p in POSITIONS
    )


# ------------------------------------------------------------------------------------------ the data set
@dataclass
class CaptionedShapes:
    """Images and their captions with every attribute as an index (into SHAPES, COLOURS, POSITIONS, SIZES,
    the templates); ``index`` is each image's number in ``generate_shapes`` (the train split skips some)."""

    images: Tensor  # (N, 3, S, S) float32 in [0, 1]
    captions: list[str]
    shapes: Tensor  # (N,) int64
    colours: Tensor
    positions: Tensor
    sizes: Tensor
    templates: Tensor
    index: Tensor
    held_out: tuple[tuple[str, str], ...]
    template_strings: tuple[str, ...] = TEMPLATES

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def attributes(self) -> Tensor:
        """(N, 4) int64: each image's (shape, colour, size, position)."""
        return torch.stack([self.shapes, self.colours, self.sizes, self.positions], 1)

    @property
    def caption_attributes(self) -> Tensor:
        """(N, 4) int64: what each caption says, -1 where its template does not name the attribute."""
        named = torch.tensor([named_attributes(t) for t in self.template_strings])[self.templates]
        return torch.where(named, self.attributes, torch.full_like(self.attributes, -1))

    def fit(self, images: Tensor | None = None, captions: Tensor | None = None) -> Tensor:
        """(n, m) bool: which of the captions (indices, default all) fit which of the images (default all)."""
        images = torch.arange(len(self)) if images is None else images
        captions = images if captions is None else captions
        return captions_fit(self.attributes[images], self.caption_attributes[captions])

    @property
    def seen(self) -> Tensor:
        """(N,) bool: True where the (shape, colour) pair occurs in the training split."""
        unseen = {(SHAPES.index(s), COLOURS.index(c)) for s, c in self.held_out}
        return torch.tensor(
            [(s, c) not in unseen for s, c in zip(self.shapes.tolist(), self.colours.tolist())]
        )


def captioned_shapes(
    n: int,
    split: str = "train",
    *,
    seed: int = 0,
    image_size: int = 32,
    held_out: Sequence[tuple[str, str]] = HELD_OUT,
    exclude_held_out: bool | None = None,
    templates: Sequence[str] = TEMPLATES,
) -> CaptionedShapes:
    """``n`` captioned images on the plain background. ``exclude_held_out`` (default: True for "train", False
    for "test") drops every image showing a ``held_out`` (shape, colour) pair, taking the next images instead.
    Image ``i`` of the split and its caption template depend only on ``(seed, split, i)``."""
    if n < 1:
        raise ValueError(f"need n >= 1, got {n}.")
    if not templates:
        raise ValueError("give at least one caption template.")
    held_out = tuple((s, c) for s, c in held_out)
    bad = [(s, c) for s, c in held_out if s not in SHAPES or c not in COLOURS]
    if bad:
        raise ValueError(f"held-out pairs must be (shape, colour) from {SHAPES} x {COLOURS}, got {bad}.")
    exclude = split == "train" if exclude_held_out is None else exclude_held_out
    if exclude and len(set(held_out)) == len(SHAPES) * len(COLOURS):
        raise ValueError("every (shape, colour) pair is held out: nothing is left to train on.")
    unseen = {(SHAPES.index(s), COLOURS.index(c)) for s, c in held_out} if exclude else set()
    code = SPLITS[split] if split in SPLITS else None
    if code is None:
        raise ValueError(f"unknown split {split!r}; use one of {tuple(SPLITS)}.")

    kept = 1 - len(unseen) / (len(SHAPES) * len(COLOURS))  # the expected share of images kept
    total = math.ceil((n + 4 * math.sqrt(n * (1 - kept) / kept) + 8) / kept)  # rarely too few: then grow
    while True:  # a larger set extends a smaller one, so growing it keeps every earlier image
        data = generate_shapes(total, image_size, seed, split, background="plain", palette=COLOURS)
        keep = torch.tensor(
            [(s, c) not in unseen for s, c in zip(data.labels.tolist(), data.colour_labels.tolist())]
        )
        if int(keep.sum()) >= n:
            break
        total = math.ceil(total * 1.3) + 16
    index = keep.nonzero()[:, 0][:n]

    centres, radii = data.centres[index], data.radii[index]
    positions = [POSITIONS.index(position_word(float(x), float(y))) for x, y in centres]
    sizes = [SIZES.index(size_word(float(r))) for r in radii]
    choice = [int(np.random.default_rng([seed, code, int(i), 3]).integers(len(templates))) for i in index]
    shapes, colours = data.labels[index], data.colour_labels[index]
    captions = [
        caption(
            templates[t],
            shape=SHAPES[s],
            colour=COLOURS[c],
            size=SIZES[z],
            position=POSITIONS[p],
        )
        for t, s, c, z, p in zip(choice, shapes.tolist(), colours.tolist(), sizes, positions)
    ]
    return CaptionedShapes(
        images=data.images[index],
        captions=captions,
        shapes=shapes,
        colours=colours,
        positions=torch.tensor(positions),
        sizes=torch.tensor(sizes),
        templates=torch.tensor(choice),
        index=index,
        held_out=held_out,
        template_strings=tuple(templates),
    )
