"""Lab 4.4's exercises (CLIP): the InfoNCE loss, a prompt ensemble, the loss floor of a fixed temperature.

Self-checks: :func:`check_info_nce`, :func:`check_prompt_ensemble`, :func:`check_loss_floor`. The reference
solutions are concepts the lab itself uses: :func:`common.clip.clip_loss`, :func:`common.clip.ensemble_prompts`,
:func:`common.clip.clip_loss_floor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from common.clip import clip_loss, clip_loss_floor, ensemble_prompts
from common.exercises import Exercise


def check_info_nce(fn: Callable[[Tensor], Tensor]) -> None:
    """Exercise 1: ``fn(logits_per_image)`` must equal :func:`common.clip.clip_loss`; the message names the usual slip."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 6, generator=gen) * 3 + torch.eye(6) * 2
    logits[0, 3] += 4.0  # make the two directions differ clearly
    got = fn(logits.clone())
    assert isinstance(got, Tensor) and got.ndim == 0, (
        "return one scalar tensor (the mean loss over the batch)"
    )
    want = clip_loss(logits)
    if torch.allclose(got, want, atol=1e-5):
        return
    target = torch.arange(6)
    rows, cols = F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
    if torch.allclose(got, rows, atol=1e-5) or torch.allclose(got, cols, atol=1e-5):
        raise AssertionError(
            "you computed one direction only; CLIP's loss is symmetric: average the image->text cross-entropy "
            "(rows) and the text->image one (columns)"
        )
    if torch.allclose(got, rows + cols, atol=1e-5):
        raise AssertionError("you added the two directions; CLIP averages them (divide by 2)")
    if torch.allclose(got, want * 6, atol=1e-4):
        raise AssertionError("you summed over the batch; take the mean over the B pairs")
    raise AssertionError(
        f"expected {want.item():.4f}, got {got.item():.4f}: the targets are the diagonal (image i goes with "
        "caption i), cross-entropy over each row and over each column"
    )


def check_prompt_ensemble(fn: Callable[[Tensor], Tensor]) -> None:
    """Exercise 2: ``fn((C, T, D) prompt embeddings) -> (C, D)`` must equal :func:`common.clip.ensemble_prompts`."""
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(4, 5, 8, generator=gen) * torch.rand(4, 5, 1, generator=gen).mul(3).add(0.2)
    got = fn(emb.clone())
    assert isinstance(got, Tensor) and tuple(got.shape) == (4, 8), (
        f"return one (classes, dim) = (4, 8) embedding per class, got "
        f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
    )
    want = ensemble_prompts(emb)
    if torch.allclose(got, want, atol=1e-5):
        return
    if not torch.allclose(got.norm(dim=-1), torch.ones(4), atol=1e-4):
        raise AssertionError(
            "the class embeddings are not unit vectors: normalise the average again, since the zero-shot "
            "logits are cosine similarities"
        )
    if torch.allclose(got, F.normalize(emb.mean(1), dim=-1), atol=1e-5):
        raise AssertionError(
            "normalise each prompt's embedding before averaging, otherwise prompts with longer vectors count more"
        )
    raise AssertionError(
        "expected: normalise each prompt's embedding, average over the prompts, normalise again"
    )


def check_loss_floor(
    fn: Callable[[int, float], float], measured: Sequence[tuple[int, float, float]] = ()
) -> None:
    """Exercise 3: ``fn(batch_size, scale)`` must equal :func:`common.clip.clip_loss_floor`; every ``measured`` run
    ``(batch_size, scale, final loss)`` must lie on or above the student's floor."""
    for batch, scale in ((64, 1.0), (64, 14.3), (8, 2.0), (256, 1.0)):
        got, want = float(fn(batch, scale)), clip_loss_floor(batch, scale)
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6):
            continue
        if math.isclose(got, math.log1p((batch - 1) * math.exp(-2 * scale)), rel_tol=1e-4):
            raise AssertionError(
                "that floor puts every wrong pair at cosine -1, which B > 2 unit vectors cannot all reach: at "
                "best they sit at the corners of a regular simplex, at cosine -1/(B-1) from each other"
            )
        if math.isclose(got, math.log(batch), rel_tol=1e-4):
            raise AssertionError("log(B) is the loss of a model that has learnt nothing (all logits equal)")
        raise AssertionError(f"floor({batch}, {scale}): expected {want:.4f}, got {got:.4f}")
    for batch, scale, loss in measured:
        floor = float(fn(batch, scale))
        assert loss >= floor - 1e-3, (
            f"a measured loss {loss:.3f} (scale {scale:.1f}) lies below your floor {floor:.3f}"
        )


### BEGIN HIDDEN TESTS
def _symmetric_info_nce(logits: Tensor) -> Tensor:
    # written out with log-softmax: the diagonal's log-probability over each row and over each column, averaged
    rows = logits.log_softmax(dim=1).diagonal().mean()
    cols = logits.log_softmax(dim=0).diagonal().mean()
    return -(rows + cols) / 2


def _info_nce_other_batches(ns: dict) -> None:
    gen = torch.Generator().manual_seed(51)
    for batch in (2, 13):
        logits = torch.randn(batch, batch, generator=gen, dtype=torch.float64) * 4
        got = ns["my_info_nce"](logits.clone())
        assert isinstance(got, Tensor) and got.ndim == 0, f"B = {batch}: return one scalar tensor"
        assert torch.allclose(got.double(), _symmetric_info_nce(logits), atol=1e-6), (
            f"a batch of {batch} pairs: expected the symmetric InfoNCE; take the targets' length from the logits "
            "(torch.arange(len(logits))), nothing fixed"
        )


def _info_nce_gradients(ns: dict) -> None:
    logits = (torch.randn(7, 7, generator=torch.Generator().manual_seed(52)) * 3).requires_grad_()
    got = ns["my_info_nce"](logits)
    assert isinstance(got, Tensor) and got.requires_grad, (
        "the loss does not depend on the logits for autograd: keep it a torch computation (no .item(), NumPy or "
        "torch.tensor(...) of a number), or training cannot follow its gradient"
    )
    (grad,) = torch.autograd.grad(got, logits)
    (want,) = torch.autograd.grad(_symmetric_info_nce(logits), logits)
    assert torch.allclose(grad, want, atol=1e-5), "the loss's gradient differs from the symmetric InfoNCE's"


def _ensemble_one_class_or_prompt(ns: dict) -> None:
    # one class, one prompt per class: a squeeze() or a fixed axis breaks here; written out with norms
    gen = torch.Generator().manual_seed(53)
    for shape in ((1, 4, 16), (3, 1, 16)):
        emb = torch.randn(*shape, generator=gen) * 2
        unit = emb / emb.norm(dim=-1, keepdim=True)
        mean = unit.mean(dim=1)
        want = mean / mean.norm(dim=-1, keepdim=True)
        got = ns["my_prompt_ensemble"](emb.clone())
        assert isinstance(got, Tensor) and tuple(got.shape) == (shape[0], shape[2]), (
            f"{shape} embeddings: expected one ({shape[0]}, {shape[2]}) row per class, got "
            f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}: average over axis 1 and keep "
            "the class axis even when there is one class (no squeeze)"
        )
        assert torch.allclose(got, want, atol=1e-5), (
            f"{shape} embeddings: normalise, average over the prompts, normalise"
        )


def _ensemble_inputs_kept(ns: dict) -> None:
    emb = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(54)) * 3
    kept = emb.clone()
    ns["my_prompt_ensemble"](emb)
    assert torch.equal(emb, kept), (
        "my_prompt_ensemble changed the text embeddings in place (e.g. with /= or normalize_): compute new tensors "
        "and leave its input as it is, since the same embeddings are used again"
    )


def _loss_floor_of_a_simplex(ns: dict) -> None:
    # the floor measured: the B embeddings at the corners of a regular simplex (e_i - 1/B, normalised), logits
    # s times their cosines, the symmetric InfoNCE written out; B = 2 and s = 0 included
    for batch in (2, 5):
        corners = torch.eye(batch, dtype=torch.float64) - 1 / batch
        corners = corners / corners.norm(dim=-1, keepdim=True)
        for scale in (0.0, 3.0, 20.0):
            want = float(_symmetric_info_nce(scale * corners @ corners.T))
            got = float(ns["my_loss_floor"](batch, scale))
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (
                f"B = {batch}, s = {scale}: a regular simplex gives a loss of {want:.6f}, your floor is {got:.6f}"
                + (" (at s = 0 every logit is equal: the loss is log B)" if scale == 0 else "")
            )


GRADING = (
    Exercise(
        "lab4.4-ex1",
        "Exercise 1: InfoNCE",
        ("my_info_nce",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_info_nce(ns["my_info_nce"])),
            ("other batch sizes", _info_nce_other_batches),
            ("gradients", _info_nce_gradients),
        ),
    ),
    Exercise(
        "lab4.4-ex2",
        "Exercise 2: prompt ensemble",
        ("my_prompt_ensemble",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_prompt_ensemble(ns["my_prompt_ensemble"])),
            ("one class, one prompt", _ensemble_one_class_or_prompt),
            ("inputs kept", _ensemble_inputs_kept),
        ),
    ),
    Exercise(
        "lab4.4-ex3",
        "Exercise 3: loss floor",
        ("my_loss_floor", "measured"),
        points=2,
        cases=(
            ("self-check", lambda ns: check_loss_floor(ns["my_loss_floor"], ns["measured"])),
            ("a regular simplex", _loss_floor_of_a_simplex),
        ),
    ),
)
### END HIDDEN TESTS
