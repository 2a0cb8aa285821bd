"""Lab 4.1's exercises (the Vision Transformer): patches by hand, counting tokens, three changes to the recipe.

Self-checks: :func:`check_patches`, :func:`check_tokens_and_attention_entries`, :func:`check_training_variants`
(with :data:`TRAINING_VARIANTS`, the runs it expects). The reference solutions are concepts the lab itself uses,
:func:`common.vit.image_to_patches` and :func:`common.vit.sequence_length`; exercise 3's worked example
(``train_variant``) is in the notebook's Solutions section, since it trains models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from common.exercises import Exercise


def check_patches(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Exercise 1: ``fn(images, p)`` must equal torch's ``F.unfold`` cut, (B, N, C*p*p), on a
    non-square batch; the message names the usual slip (patch order, or the order inside a patch)."""
    gen = torch.Generator().manual_seed(0)
    images, p = torch.randn(2, 3, 16, 24, generator=gen), 8
    got = fn(images.clone(), p)
    want = F.unfold(images, p, stride=p).transpose(1, 2)  # torch's own cut: (B, N, C*p*p), channel-major
    assert isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape), (
        f"expected shape (B, N, C*p*p) = {tuple(want.shape)} for images (2, 3, 16, 24) and p = 8, got "
        f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
    )
    if torch.equal(got, want):
        return
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)
    if torch.equal(got, grid.permute(0, 2, 4, 3, 5, 1).reshape(want.shape)):
        raise AssertionError(
            "each patch is flattened as (p, p, C), pixel by pixel; flatten it as (C, p, p), channel first, "
            "as a convolution's weight is laid out"
        )
    if torch.equal(got, grid.permute(0, 4, 2, 1, 3, 5).reshape(want.shape)):
        raise AssertionError(
            "the patches come column by column; the order is row-major: left to right, then down"
        )
    if torch.equal(got.sort(-1).values, want.sort(-1).values):
        raise AssertionError(
            "each token holds the right patch's values in the wrong order: flatten each patch as (C, p, p)"
        )
    raise AssertionError(
        "the tokens are not the patches: reshape (B, C, H, W) to (B, C, H/p, p, W/p, p), move the two grid axes "
        "first (B, H/p, W/p, C, p, p), then flatten"
    )


def check_tokens_and_attention_entries(fn: Callable[[], tuple[int, int]]) -> None:
    """Exercise 2: ``fn()`` returns (tokens, attention entries per head) for ViT-L/14 at 336 x 336."""
    got = fn()
    assert isinstance(got, tuple) and len(got) == 2, "return a pair: (number of tokens, entries per head)"
    tokens, entries = (int(v) for v in got)
    patches = (336 // 14) ** 2
    if tokens == patches:
        raise AssertionError(f"{tokens} is the number of patches; the CLS token enters the encoder too")
    if tokens == (336 // 16) ** 2 + 1:
        raise AssertionError("that is a 16-pixel patch; ViT-L/14 cuts 14 x 14 patches")
    assert tokens == patches + 1, f"tokens: expected (336/14)^2 patches + 1 CLS token, got {tokens}"
    if entries == tokens:
        raise AssertionError("an attention matrix holds one score per (query, key) pair: tokens x tokens")
    assert entries == tokens * tokens, f"entries: expected {tokens} x {tokens}, got {entries}"


TRAINING_VARIANTS = ("baseline", "sincos", "patch 4", "cluttered")


def check_training_variants(results: Mapping[str, Mapping[str, float]]) -> None:
    """Exercise 3 (open): what can be checked of ``{variant: {"accuracy", "seconds_per_epoch"}}``.

    The four runs of :data:`TRAINING_VARIANTS` must be there with an accuracy in [0, 1] and a positive time;
    4x4 patches give 4x the tokens of 8x8 ones, so that run must cost clearly more per epoch (at least 1.5x);
    and four separate runs do not give four identical results."""
    missing = [name for name in TRAINING_VARIANTS if name not in results]
    assert not missing, f"missing runs {missing}: give one entry for each of {list(TRAINING_VARIANTS)}"
    for name in TRAINING_VARIANTS:
        run = results[name]
        absent = {"accuracy", "seconds_per_epoch"} - set(run)
        assert not absent, f"{name!r} lacks {sorted(absent)}: give its test accuracy and seconds per epoch"
        accuracy, seconds = float(run["accuracy"]), float(run["seconds_per_epoch"])
        assert 0 <= accuracy <= 1, f"{name!r}: accuracy {accuracy} is not a fraction in [0, 1] (73 % is 0.73)"
        assert seconds > 0, f"{name!r}: seconds_per_epoch must be positive, got {seconds}"
    pairs = {
        (float(results[n]["accuracy"]), float(results[n]["seconds_per_epoch"])) for n in TRAINING_VARIANTS
    }
    assert len(pairs) > 1, "all four runs gave the same numbers: did each run train its own model?"
    ratio = results["patch 4"]["seconds_per_epoch"] / results["baseline"]["seconds_per_epoch"]
    assert ratio >= 1.5, (
        f"the 4x4-patch run took {ratio:.1f}x the baseline's time per epoch; with 4x the tokens it should cost "
        "about 3-4x: was the patch size really changed (VisionTransformer(patch_size=4)), and were both timed alike?"
    )


### BEGIN HIDDEN TESTS
def _patches_other_shapes(ns: dict) -> None:
    # one channel and four channels, other patch sizes, an odd grid: nothing of the self-check's (2, 3, 16, 24), p = 8
    gen = torch.Generator().manual_seed(21)
    for shape, p in (((3, 1, 12, 20), 4), ((1, 4, 6, 9), 3), ((2, 3, 8, 8), 8)):
        images = torch.randn(*shape, generator=gen)
        got = ns["my_patches"](images.clone(), p)
        want = F.unfold(images, p, stride=p).transpose(1, 2)
        assert isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape), (
            f"images {shape}, p = {p}: expected shape (B, N, C*p*p) = {tuple(want.shape)}, got "
            f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}: read B, C, H, W from the images "
            "and use p, nothing fixed"
        )
        assert torch.equal(got, want), (
            f"images {shape}, p = {p}: the tokens differ from F.unfold's; read B, C, H, W from the images"
        )


def _patches_channels_last(ns: dict) -> None:
    # a channels-last batch (a permuted view, as images often come from a (B, H, W, C) array): not contiguous
    images = torch.randn(2, 16, 24, 3, generator=torch.Generator().manual_seed(22)).permute(0, 3, 1, 2)
    hint = (
        "on a channels-last batch (images.permute(0, 3, 1, 2) of a (B, H, W, C) tensor) the tokens differ from "
        "F.unfold's: use reshape rather than view, and never merge the batch axis with another"
    )
    try:
        got = ns["my_patches"](images, 8)
    except RuntimeError as err:
        raise AssertionError(f"{hint} (it raised: {err})") from None
    want = F.unfold(images, 8, stride=8).transpose(1, 2)
    assert isinstance(got, Tensor) and torch.equal(got, want), hint


GRADING = (
    Exercise(
        "lab4.1-ex1",
        "Exercise 1: my_patches",
        ("my_patches",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_patches(ns["my_patches"])),
            ("other shapes", _patches_other_shapes),
            ("a channels-last batch", _patches_channels_last),
        ),
    ),
    Exercise(
        "lab4.1-ex2",
        "Exercise 2: ViT-L/14 token count",
        ("vit_l14_tokens_and_attention_entries",),
        points=1,
        cases=(
            (
                "self-check",
                lambda ns: check_tokens_and_attention_entries(ns["vit_l14_tokens_and_attention_entries"]),
            ),
        ),
    ),
    Exercise(
        "lab4.1-ex3",
        "Exercise 3: training variants",
        ("my_training_variants",),
        points=3,
        cases=(("self-check", lambda ns: check_training_variants(ns["my_training_variants"]())),),
    ),
)
### END HIDDEN TESTS
