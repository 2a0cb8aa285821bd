"""The caption generator of lab 4.4: deterministic, true to the images, closed vocabulary, compositional splits."""

import numpy as np
import pytest
import torch

from common.captions import (
    COLOURS,
    HELD_OUT,
    HELD_OUT_TEMPLATES,
    POSITIONS,
    SHAPES,
    SIZES,
    TEMPLATES,
    WHERE,
    caption,
    caption_vocabulary,
    captioned_shapes,
    captions_fit,
    context_length,
    mean_colour,
    nearest_colour,
    pair_prompts,
    position_word,
    prompts,
    size_word,
)
from common.datasets import PALETTE, generate_shapes


@pytest.fixture(scope="module")
def train():
    return captioned_shapes(240, "train", seed=3)


@pytest.fixture(scope="module")
def test_set():
    return captioned_shapes(300, "test", seed=3)


def test_deterministic_by_seed(train):
    again = captioned_shapes(240, "train", seed=3)
    assert again.captions == train.captions and torch.equal(again.images, train.images)
    other = captioned_shapes(240, "train", seed=4)
    assert other.captions != train.captions


def test_a_larger_set_extends_a_smaller_one(train):
    small = captioned_shapes(100, "train", seed=3)
    assert small.captions == train.captions[:100]
    assert torch.equal(small.images, train.images[:100]) and torch.equal(small.index, train.index[:100])


def test_train_never_shows_a_held_out_pair_and_test_does(train, test_set):
    held = {(SHAPES.index(s), COLOURS.index(c)) for s, c in HELD_OUT}
    pairs = set(zip(train.shapes.tolist(), train.colours.tolist()))
    assert not pairs & held and bool(train.seen.all())
    assert len(set(zip(test_set.shapes.tolist(), test_set.colours.tolist())) & held) == len(held)
    assert 0.08 < float((~test_set.seen).float().mean()) < 0.26  # about 6 of the 36 pairs
    for s, c in HELD_OUT:  # each held-out pair's words still occur in training, only never together
        assert any(f" {c} " in f" {t} " for t in train.captions) and any(s in t for t in train.captions)


def test_captions_say_what_the_image_shows(train):
    data = generate_shapes(int(train.index.max()) + 1, seed=3, background="plain", palette=COLOURS)
    for k, text in enumerate(train.captions):
        i = int(train.index[k])
        words = f" {text} "
        assert (
            f" {SHAPES[int(data.labels[i])]} " in words
            and f" {COLOURS[int(data.colour_labels[i])]} " in words
        )
        x, y = data.centres[i].tolist()
        if "{where}" in TEMPLATES[int(train.templates[k])]:
            assert WHERE[position_word(x, y)] in text
        if "{size}" in TEMPLATES[int(train.templates[k])]:
            assert f" {size_word(float(data.radii[i]))} " in words
    assert torch.equal(train.images, data.images[train.index])
    assert set(train.templates.tolist()) == set(range(len(TEMPLATES)))


def test_palette_colours_are_the_named_ones():
    plain = generate_shapes(60, seed=1, background="plain")
    named = generate_shapes(60, seed=1, background="plain", palette=COLOURS)
    assert plain.colour_labels is None and plain.colours == ()
    # a separate random stream: the same objects, only their colours change
    assert torch.equal(plain.masks, named.masks) and torch.equal(plain.labels, named.labels)
    palette = torch.tensor([PALETTE[c] for c in COLOURS])
    for image, mask, k in zip(named.images, named.masks, named.colour_labels):
        mean = image[:, mask].mean(1)
        assert int(torch.cdist(mean[None], palette).argmin()) == int(k)
    with pytest.raises(ValueError, match="palette"):
        generate_shapes(4, palette=("red", "pink"))


def test_position_and_size_words():
    assert position_word(0.5, 0.55) == "centre"
    assert position_word(0.25, 0.45) == "left" and position_word(0.75, 0.6) == "right"
    assert position_word(0.45, 0.22) == "top" and position_word(0.55, 0.78) == "bottom"  # y points down
    assert size_word(0.21) == "small" and size_word(0.31) == "large"
    assert set(POSITIONS) == set(WHERE) and SIZES == ("small", "large")


def test_caption_and_prompts():
    assert caption("a {size} {colour} {shape} {where}", shape="star", colour="green", size="large",
                   position="left") == "a large green star on the left"  # fmt: skip
    assert prompts("a {colour} {shape}", ["star"], ["red", "blue"]) == ["a red star", "a blue star"]
    assert len(prompts("a {colour} {shape}")) == 36
    with pytest.raises(ValueError, match="position"):
        caption(TEMPLATES[0], shape="star", colour="red", position="middle")


def test_pair_prompts_list_every_caption_of_each_pair_once():
    every = pair_prompts()
    assert len(every) == 36 and {len(p) for p in every} == {20}  # 1 + 2 + 5 + 10 + 1 + 1 per pair
    assert every[0][0] == "a red circle" and every[1][0] == "a green circle"  # shape-major, like prompts()
    assert all(len(set(p)) == len(p) for p in every)
    assert all(
        f" {SHAPES[k // 6]} " in f" {t} " and f" {COLOURS[k % 6]} " in f" {t} "
        for k, p in enumerate(every)
        for t in p
    )
    assert pair_prompts(["a {colour} {shape}"]) == [[t] for t in prompts("a {colour} {shape}")]


def test_vocabulary_encodes_every_caption_the_language_has():
    vocab = caption_vocabulary()
    every = [
        caption(t, shape=s, colour=c, size=z, position=p)
        for t in TEMPLATES
        for s in SHAPES
        for c in COLOURS
        for z in SIZES
        for p in POSITIONS
    ]
    tokens = vocab.encode(every, context_length())
    assert tokens.shape == (len(every), context_length())
    assert int((tokens != vocab.pad_id).sum(1).max()) == context_length()  # the longest fills it exactly
    assert [vocab.decode(t) for t in tokens[:50]] == every[:50]
    assert vocab.itos[:2] == ["<pad>", "<eos>"] and len(vocab) == len(set(vocab.itos))


def test_encoding_layout_and_errors():
    vocab = caption_vocabulary()
    ids = vocab.encode(["a red star", "the star is red"], 7)
    assert ids[0].tolist()[3:] == [vocab.eos_id, 0, 0, 0] and ids[1].tolist()[4:] == [vocab.eos_id, 0, 0]
    assert ids[0, 1] == ids[1, 3] == vocab.stoi["red"]
    with pytest.raises(ValueError, match="caption language has only"):
        vocab.encode("a pink star")
    with pytest.raises(ValueError, match="context_length"):
        vocab.encode("a large red star on the left", 4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        captioned_shapes(4, "validation")
    with pytest.raises(ValueError, match="held-out"):
        captioned_shapes(4, held_out=[("star", "pink")])
    everything = [(s, c) for s in SHAPES for c in COLOURS]
    with pytest.raises(ValueError, match="nothing is left"):
        captioned_shapes(4, held_out=everything)
    assert len(captioned_shapes(8, held_out=everything, exclude_held_out=False)) == 8


def test_templates_are_drawn_from_their_own_stream():
    """The template of image i depends on (seed, split, i) only, not on which images were skipped."""
    a = captioned_shapes(40, "test", seed=5)
    b = captioned_shapes(40, "test", seed=5, held_out=HELD_OUT[:2], exclude_held_out=True)
    common_index = np.intersect1d(a.index.numpy(), b.index.numpy())
    ta = dict(zip(a.index.tolist(), a.templates.tolist()))
    tb = dict(zip(b.index.tolist(), b.templates.tolist()))
    assert len(common_index) > 20 and all(ta[i] == tb[i] for i in common_index)


def test_an_before_a_vowel():
    assert caption("a {colour} {shape}", shape="ring", colour="orange") == "an orange ring"
    assert caption("a picture of a {colour} {shape}", shape="cross", colour="orange") == (
        "a picture of an orange cross"
    )
    assert caption("a {size} {colour} {shape}", shape="ring", colour="orange", size="large") == (
        "a large orange ring"
    )
    every = [t for p in pair_prompts() for t in p]
    assert not [t for t in every if " a orange" in f" {t}"] and any(t.startswith("an orange") for t in every)
    assert "an" in caption_vocabulary()


def test_held_out_templates_are_new_sentences_of_known_words():
    vocab = caption_vocabulary()
    trained = {t for p in pair_prompts() for t in p}
    held = [t for p in pair_prompts(HELD_OUT_TEMPLATES) for t in p]
    assert not set(held) & trained  # the generator never writes one of them
    vocab.encode(held, context_length())  # ... yet every word is one it writes (no ValueError)
    assert not set(HELD_OUT_TEMPLATES) & set(TEMPLATES)
    assert all("{shape}" in t and "{colour}" in t for t in HELD_OUT_TEMPLATES)


def test_captions_fit_by_hand():
    # images: small red star on the left; large red star at the top; small blue star on the left
    images = torch.tensor([[5, 0, 0, 0], [5, 0, 1, 2], [5, 2, 0, 0]])
    captions = torch.tensor([[5, 0, -1, -1], [5, 0, 0, 0], [5, 2, 0, -1], [0, 0, -1, -1]])
    # "a red star", "a small red star on the left", "a small blue star", "a red circle"
    want = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(captions_fit(images, captions), want)
    with pytest.raises(ValueError, match="-1"):
        captions_fit(captions, images)


def test_caption_attributes_follow_the_templates(test_set):
    named = test_set.caption_attributes
    assert torch.equal(named[:, :2], test_set.attributes[:, :2])  # every template names shape and colour
    for k in range(len(test_set)):
        template = TEMPLATES[int(test_set.templates[k])]
        assert (int(named[k, 2]) >= 0) == ("{size}" in template) and (int(named[k, 3]) >= 0) == (
            "{where}" in template
        )
    fit = test_set.fit()
    assert bool(fit.diagonal().all())
    # a loop: caption j fits image i when every attribute caption j names matches image i
    for i, j in [(0, 1), (3, 7), (10, 2), (5, 5)] + [(i, j) for i in range(20) for j in range(20)]:
        want = all(n < 0 or n == a for n, a in zip(named[j].tolist(), test_set.attributes[i].tolist()))
        assert bool(fit[i, j]) == want
    same_string = torch.tensor([[a == b for b in test_set.captions] for a in test_set.captions])
    assert bool(fit[same_string].all())  # an exact duplicate always fits


def test_colour_baselines_against_the_masks():
    data = generate_shapes(80, seed=2, background="plain", palette=COLOURS)
    by_mask = torch.stack([image[:, mask].mean(1) for image, mask in zip(data.images, data.masks)])
    assert torch.equal(nearest_colour(by_mask), data.colour_labels)  # the named colour, from the true pixels
    fg = mean_colour(data.images, threshold=0.2)
    assert (fg - by_mask).abs().max() < 0.08  # the pixels that differ from the background are the object's
    assert torch.equal(nearest_colour(fg), data.colour_labels)
    assert torch.allclose(mean_colour(data.images), data.images.mean((2, 3)))
    palette = torch.tensor([PALETTE[c] for c in COLOURS])
    assert torch.equal(nearest_colour(palette + 0.01), torch.arange(len(COLOURS)))
    flat = torch.full((1, 3, 8, 8), 0.5)  # nothing differs from the background: the whole mean
    assert torch.equal(mean_colour(flat, threshold=0.2), flat.mean((2, 3)))
    with pytest.raises(ValueError, match="RGB"):
        mean_colour(torch.zeros(2, 1, 8, 8))
