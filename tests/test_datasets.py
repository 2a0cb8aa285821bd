"""The course's datasets: determinism, shapes and masks against independent checks, clear errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.datasets import (
    SHAPE_CLASSES,
    DigitsDataset,
    ShapesDataset,
    generate_arrangement,
    generate_shapes,
    load_cifar10,
    load_dataset,
    sample_photo,
)
from common.runtime import OfflineError


def test_shapes_are_deterministic_and_a_larger_set_extends_a_smaller_one():
    a, b = generate_shapes(40, 32, seed=3), generate_shapes(60, 32, seed=3)
    assert torch.equal(a.images, b.images[:40]) and torch.equal(a.labels, b.labels[:40])
    assert not torch.equal(a.images, generate_shapes(40, 32, seed=4).images)
    assert not torch.equal(a.images, generate_shapes(40, 32, seed=3, split="test").images)


@pytest.mark.parametrize("background", ["cluttered", "plain"])
def test_train_val_and_test_splits_share_no_image(background):
    # Byte-exact hashes over every image of three splits: a recipe chosen on "val" never saw a "test" image.
    seen = {}
    for split in ("train", "val", "test"):
        for image in generate_shapes(300, 16, seed=0, split=split, background=background).images:
            seen.setdefault(hash(image.numpy().tobytes()), set()).add(split)
    assert len(seen) == 900 and all(len(s) == 1 for s in seen.values())


def test_shapes_tensors_have_the_documented_types_and_ranges():
    d = ShapesDataset(120, image_size=24, return_mask=True)
    image, label, mask = d[0]
    assert d.images.shape == (120, 3, 24, 24) and d.images.dtype == torch.float32
    assert d.masks.shape == (120, 24, 24) and d.masks.dtype == torch.bool
    assert 0 <= d.images.min() and d.images.max() <= 1
    assert image.shape == (3, 24, 24) and mask.shape == (24, 24) and 0 <= int(label) < len(SHAPE_CLASSES)
    assert set(d.labels.tolist()) == set(range(len(SHAPE_CLASSES)))  # every class occurs
    assert d.classes == SHAPE_CLASSES and d.num_classes == 6


def test_masks_have_the_area_of_each_shape_formula():
    """The radius is random, so compare the mean areas of two classes against their geometric ratio."""
    d = generate_shapes(200, 64, seed=1)
    areas = {name: d.masks[d.labels == k].float().sum((1, 2)) for k, name in enumerate(d.classes)}
    # a ring (r in [0.55, 1]) covers (1 - 0.55^2) / 0.9^2 of a circle (r <= 0.9) of the same radius
    ratio = areas["ring"].mean() / areas["circle"].mean()
    assert ratio == pytest.approx((1 - 0.55**2) / 0.81, rel=0.15)
    assert all(a.min() > 0 for a in areas.values())


def test_mask_is_where_the_object_colour_is():
    d = generate_shapes(50, 64, seed=2)
    inside = d.masks[0]
    # pixels inside the mask are close to one colour (the object's + noise); the background is not
    assert d.images[0][:, inside].std(dim=1).max() < 0.1


def test_masks_are_compact_blobs_inside_the_image():
    d = generate_shapes(50, 32, seed=5)
    frac = d.masks.float().mean((1, 2))
    assert (frac > 0.03).all() and (frac < 0.5).all()
    circle = d.masks[d.labels == 0][0].numpy()
    ys, xs = np.nonzero(circle)
    r = math.sqrt(circle.sum() / math.pi)  # a circle's radius from its area
    assert np.hypot(ys - ys.mean(), xs - xs.mean()).max() == pytest.approx(r, abs=1.5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="split"):
        generate_shapes(4, split="validation")
    with pytest.raises(ValueError, match="classes"):
        generate_shapes(4, classes=("circle", "blob"))
    with pytest.raises(ValueError, match="DATASET"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="photo"):
        sample_photo("mona_lisa")


def test_digits_split_is_stratified_and_scaled():
    # Reference: scikit-learn's digits (pixel values 0..16). Train and test together are exactly those images
    # divided by 16, with their labels; each class is split 3:1 (stratified, test_fraction 0.25).
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = DigitsDataset("train"), DigitsDataset("test")
    ours = sorted(
        ((d.images[i, 0] * 16).numpy().tobytes(), int(d.labels[i]))
        for d in (train, test)
        for i in range(len(d))
    )
    ref = sorted((img.astype(np.float32).tobytes(), int(t)) for img, t in zip(digits.images, digits.target))
    assert ours == ref
    per_class = np.bincount(digits.target)
    assert np.all(np.abs(torch.bincount(test.labels, minlength=10).numpy() - 0.25 * per_class) <= 1)
    big = DigitsDataset("test", image_size=16, rgb=True)
    assert big.images.shape[1:] == (3, 16, 16) and torch.equal(big.labels, test.labels)
    assert torch.equal(big.images[:, 0], big.images[:, 2]) and 0 <= big.images.min() and big.images.max() <= 1


def test_sample_photo_is_a_float_image_and_can_be_cropped_square():
    cat = sample_photo("chelsea")
    assert cat.shape == (3, 300, 451) and 0 <= cat.min() and cat.max() <= 1
    assert sample_photo("chelsea", size=224).shape == (3, 224, 224)


def test_cifar10_fails_fast_and_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    with pytest.raises(OfflineError, match="CIFAR-10"):
        load_cifar10("train", root=str(tmp_path))


def test_plain_background_is_grey_noise_around_the_same_objects():
    cluttered, plain = generate_shapes(64, 32, seed=5), generate_shapes(64, 32, seed=5, background="plain")
    assert torch.equal(cluttered.labels, plain.labels) and torch.equal(cluttered.masks, plain.masks)
    grown = torch.nn.functional.max_pool2d(plain.masks[:, None].float(), 5, 1, 2)[
        :, 0
    ].bool()  # object + margin
    for image, near in zip(plain.images, grown):
        background = image[:, ~near]  # (3, pixels): grey (equal channels) with pixel noise of std <= 0.06
        assert background.mean(1).max() - background.mean(1).min() < 0.03
        assert background.std(1).max() < 0.08
    with pytest.raises(ValueError, match="background"):
        generate_shapes(4, background="striped")


def test_textured_objects_keep_their_silhouette_and_solid_ones_their_colour():
    plain = generate_shapes(96, 32, seed=6, background="plain")
    textured = generate_shapes(96, 32, seed=6, background="plain", texture=True)
    assert torch.equal(plain.masks, textured.masks) and torch.equal(plain.labels, textured.labels)
    outside = ~torch.nn.functional.max_pool2d(plain.masks[:, None].float(), 3, 1, 1)[:, 0].bool()
    assert torch.equal(
        plain.images.permute(1, 0, 2, 3)[:, outside], textured.images.permute(1, 0, 2, 3)[:, outside]
    )
    solid = plain.labels == SHAPE_CLASSES.index("circle")  # texture 0 is "solid": the same pixels
    assert solid.any() and torch.equal(plain.images[solid], textured.images[solid])
    for k in range(1, len(SHAPE_CLASSES)):  # patterned: the object has dark (0.3 x colour) and lit parts
        i = int(torch.nonzero(plain.labels == k)[0])
        ratio = textured.images[i][:, plain.masks[i]].sum(0) / plain.images[i][:, plain.masks[i]].sum(
            0
        ).clamp_min(1e-3)
        assert ratio.min() < 0.5 and ratio.max() > 0.9, SHAPE_CLASSES[k]


# ------------------------------------------------------------------------------------ arrangement (lab 4.1)
def test_arrangement_is_deterministic_and_its_splits_share_no_image():
    a, b = generate_arrangement(30, seed=1), generate_arrangement(50, seed=1)
    assert torch.equal(a.images, b.images[:30]) and torch.equal(a.labels, b.labels[:30])
    seen = {}
    for split in ("train", "val", "test"):
        for image in generate_arrangement(200, 16, seed=0, split=split).images:
            seen.setdefault(hash(image.numpy().tobytes()), set()).add(split)
    assert len(seen) == 600


def test_arrangement_label_says_which_rendered_object_is_above():
    d = generate_arrangement(300, 32, seed=2)
    rows = torch.arange(32, dtype=torch.float32)[:, None]
    mass = d.masks.float()  # (N, 2, S, S): circle, square
    centroid_y = (mass * rows).sum((2, 3)) / mass.sum(
        (2, 3)
    )  # from the pixels, not from the generator's numbers
    circle_above = centroid_y[:, 0] < centroid_y[:, 1]
    assert torch.equal(circle_above, d.labels == 0)
    assert 0.4 < d.labels.float().mean() < 0.6
    # reddish circle, bluish square
    red = (d.images[:, 0] * mass[:, 0]).sum((1, 2)) / mass[:, 0].sum((1, 2))
    blue = (d.images[:, 2] * mass[:, 0]).sum((1, 2)) / mass[:, 0].sum((1, 2))
    assert (red > blue).float().mean() > 0.95


def test_arrangement_objects_each_lie_in_one_patch_and_never_share_one():
    d = generate_arrangement(300, 32, seed=3)
    per_patch = F.avg_pool2d(d.masks.float(), 8).flatten(2) > 0  # (N, 2, 16): patches each object touches
    assert (per_patch.sum(-1) == 1).all()
    assert not (per_patch[:, 0] & per_patch[:, 1]).any()
    # the two kinds of patch look alike in both classes: the objects' offsets inside their patch do not tell the label
    offset_y = (d.centres[:, :, 1] * 4) % 1  # position inside the cell, in cell units
    for k in range(2):
        assert abs(offset_y[d.labels == 0, k].mean() - offset_y[d.labels == 1, k].mean()) < 0.05


def test_arrangement_bad_arguments_raise():
    with pytest.raises(ValueError, match="grid"):
        generate_arrangement(4, 30, grid=4)
    with pytest.raises(ValueError, match="split"):
        generate_arrangement(4, split="validation")
