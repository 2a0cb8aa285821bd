"""Captions for the generated shapes: a tiny closed language for lab 4.4's CLIP, and its word-level tokeniser.

Each image of :func:`common.datasets.generate_shapes` (plain background, object colours from the named
``PALETTE``) is described by its attributes: shape, colour name, position word and size word, written with one
of several ``TEMPLATES`` ("a small red star on the left", "the star is red", ...). Everything is deterministic:
image ``i`` of a split and its template depend only on ``(seed, split, i)``.

Compositional splits: the training split never contains the (shape, colour) pairs of ``HELD_OUT`` (one per shape
and one per colour, so every word is still seen, only never together); the test split contains every pair, and
``CaptionedShapes.seen`` tells which test images show a pair the model never saw in training.

Public API
----------
- ``COLOURS``, ``SHAPES``, ``POSITIONS``, ``SIZES``, ``TEMPLATES``, ``HELD_OUT``; :func:`position_word`,
  :func:`size_word`, :func:`caption`, :func:`prompts`, :func:`pair_prompts`.
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
    """One caption: ``template`` (see ``TEMPLATES``) filled with the attributes."""
    if position not in WHERE:
        raise ValueError(f"unknown position {position!r}; use one of {POSITIONS}.")
    return template.format(shape=shape, colour=colour, size=size, where=WHERE[position])


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
    """Every word the templates and attributes can produce (28 words with the default templates)."""
    fixed = [w for t in templates for w in re.sub(r"\{\w+\}", " ", t).split()]
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

    def __len__(self) -> int:
        return len(self.captions)

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
    )
