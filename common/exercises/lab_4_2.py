"""Lab 4.2's exercises (DINO): predict each ablation's collapse, write the centering and EMA updates, measure
DINO on untextured shapes.

Self-checks: :func:`check_collapse_predictions` (with :data:`COLLAPSE_WITHOUT`, the answer it needs to explain a
wrong prediction, and :data:`COLLAPSE_KINDS`), :func:`check_center_update`, :func:`check_ema_update`,
:func:`check_untextured_results`. The reference solutions of exercise 4 are concepts the lab itself uses,
:func:`common.dino.center_update` and :func:`common.dino.update_teacher`; exercise 5's worked example is in the
notebook's Solutions section, since it evaluates the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from common.exercises import Exercise

COLLAPSE_KINDS = ("one dimension", "uniform", "neither")
# What each ablation of lab 4.2, section 7, does to the teacher when it runs long enough (Caron et al., 2021, sec. 5.3).
COLLAPSE_WITHOUT = {"no centering": "one dimension", "no sharpening": "uniform", "no local crops": "neither"}
_WHY = {
    "no centering": "sharpening alone makes the largest score win more and more: every image ends on the same "
    "dimension (both entropies fall towards 0)",
    "no sharpening": "with tau_t = tau_s the teacher is no sharper than the student, and centering alone pushes every "
    "output towards flat (both entropies rise towards log K)",
    "no local crops": "centering and sharpening are both still there and balance each other; multi-crop adds "
    "local-to-global pairs (features), it is not what prevents collapse",
}


def check_collapse_predictions(predictions: Mapping[str, str]) -> None:
    """Exercises 1-3 (section 7): ``{ablation: "one dimension" | "uniform" | "neither"}``, the collapse each
    ablation leads to; the reference is :data:`COLLAPSE_WITHOUT`, and a wrong entry is explained."""
    missing = [name for name in COLLAPSE_WITHOUT if name not in predictions]
    assert not missing, f"missing predictions for {missing}: give one for each of {list(COLLAPSE_WITHOUT)}"
    for name, kind in predictions.items():
        assert kind in COLLAPSE_KINDS, f"{name!r}: {kind!r} is not one of {list(COLLAPSE_KINDS)}"
    wrong = [name for name in COLLAPSE_WITHOUT if predictions[name] != COLLAPSE_WITHOUT[name]]
    if wrong:
        raise AssertionError(
            "; ".join(f"{name}: not {predictions[name]!r}, because {_WHY[name]}" for name in wrong)
            + " (compare with the entropies the ablation cell printed)"
        )


def check_center_update(fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Exercise 4a: ``fn(center (1, K), teacher_out (B, K), momentum) -> new center (1, K)`` must equal
    :func:`common.dino.center_update`, written out here as the formula; the message names the usual slip."""
    gen = torch.Generator().manual_seed(0)
    center, teacher_out, m = torch.randn(1, 8, generator=gen), torch.randn(16, 8, generator=gen) + 2.0, 0.9
    got = fn(center.clone(), teacher_out.clone(), m)
    assert isinstance(got, Tensor), "return the new center as a tensor (do not only change it in place)"
    assert tuple(got.shape) == (1, 8), (
        f"the center has one value per output dimension, shape (1, K) = (1, 8), got {tuple(got.shape)}: "
        "average over the batch (dim 0) with keepdim=True"
    )
    mean = teacher_out.sum(0, keepdim=True) / teacher_out.shape[0]
    if torch.allclose(got, m * center + (1 - m) * mean, atol=1e-6):
        return
    if torch.allclose(got, (1 - m) * center + m * mean, atol=1e-6):
        raise AssertionError(
            "m and 1 - m are swapped: the center keeps m = 0.9 of itself and takes 1 - m of the batch"
        )
    if torch.allclose(got, m * center + (1 - m) * teacher_out.sum(0, keepdim=True), atol=1e-5):
        raise AssertionError("that is the batch sum; the center follows the batch *mean* (divide by B)")
    raise AssertionError("expected m * center + (1 - m) * teacher_out.mean(dim=0, keepdim=True)")


def check_ema_update(fn: Callable[[nn.Module, nn.Module, float], None]) -> None:
    """Exercise 4b: ``fn(student, teacher, m)`` must move every teacher parameter to
    :math:`m\\,\\theta_t + (1-m)\\,\\theta_s` in place (:func:`common.dino.update_teacher`), and leave the student alone."""
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    before_s = [p.detach().clone() for p in student.parameters()]
    before_t = [p.detach().clone() for p in teacher.parameters()]
    m = 0.8
    with torch.no_grad():
        fn(student, teacher, m)
    for p, p0 in zip(student.parameters(), before_s):
        assert torch.equal(p, p0), "the student changed: the EMA step writes the teacher only"
    names = [name for name, _ in teacher.named_parameters()]
    for name, t, t0, s in zip(names, teacher.parameters(), before_t, before_s):
        if torch.allclose(t, m * t0 + (1 - m) * s, atol=1e-6):
            continue
        if torch.equal(t, t0):
            raise AssertionError(
                f"teacher.{name} did not change: update every parameter in place (p.mul_(m).add_(...) or "
                "p.lerp_(...)); assigning to a loop variable changes nothing"
            )
        if torch.allclose(t, (1 - m) * t0 + m * s, atol=1e-6):
            raise AssertionError(
                "m and 1 - m are swapped: the teacher keeps m of itself and moves 1 - m towards the student"
            )
        raise AssertionError(f"teacher.{name}: expected m * teacher + (1 - m) * student")


def check_untextured_results(results: Mapping[str, Mapping[str, float]], *, num_classes: int = 6) -> None:
    """Exercise 5 (open): what can be checked of ``{"DINO" | "random init": {"knn", "iou"}, "raw pixels": {"knn"}}``
    measured on the untextured shapes: every entry there, accuracies and IoUs in [0, 1], and no k-NN accuracy
    far below chance (1 / ``num_classes``), which would mean labels and features were misaligned."""
    needs = {"DINO": ("knn", "iou"), "random init": ("knn", "iou"), "raw pixels": ("knn",)}
    for name, keys in needs.items():
        assert name in results, f"missing {name!r}: measure {list(needs)} on the same untextured test images"
        for key in keys:
            assert key in results[name], f"{name!r} lacks {key!r}"
            value = float(results[name][key])
            assert 0 <= value <= 1, f"{name!r} {key}: {value} is not a fraction in [0, 1]"
    floor = 0.5 / num_classes
    for name in needs:
        knn = float(results[name]["knn"])
        assert knn >= floor, (
            f"{name!r}: k-NN {knn:.3f} is far below chance ({1 / num_classes:.3f}): are the bank's and the queries' "
            "labels those of their own images, and both standardised alike?"
        )
    same = all(float(results["DINO"][k]) == float(results["random init"][k]) for k in ("knn", "iou"))
    assert not same, "DINO and the random ViT gave identical numbers: did you evaluate the trained backbone?"


### BEGIN HIDDEN TESTS
def _center_other_sizes(ns: dict) -> None:
    # other sizes and momenta, and inputs left as they were
    gen = torch.Generator().manual_seed(31)
    center, teacher_out = torch.randn(1, 5, generator=gen), torch.randn(3, 5, generator=gen) - 1.0
    kept = (center.clone(), teacher_out.clone())
    for m in (0.5, 0.99):
        got = ns["my_center_update"](center, teacher_out, m)
        assert torch.equal(center, kept[0]) and torch.equal(teacher_out, kept[1]), (
            "my_center_update changed its inputs in place: compute a new tensor and leave center and teacher_out as "
            "they are"
        )
        want = m * center + (1 - m) * teacher_out.sum(0, keepdim=True) / teacher_out.shape[0]
        assert (
            isinstance(got, Tensor) and tuple(got.shape) == (1, 5) and torch.allclose(got, want, atol=1e-6)
        ), (
            f"a batch of 3 outputs of 5 dimensions, m = {m}: expected m * center + (1 - m) * teacher_out.mean(0, "
            "keepdim=True); use the momentum given and the batch's own size"
        )


def _ema_outside_no_grad(ns: dict) -> None:
    # a deeper model, called outside torch.no_grad() (the parameters require gradients), DINO's m and m = 0
    for seed, m in ((32, 0.996), (33, 0.0)):
        torch.manual_seed(seed)
        student, teacher = (
            nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)) for _ in range(2)
        )
        before_t = [p.detach().clone() for p in teacher.parameters()]
        before_s = [p.detach().clone() for p in student.parameters()]
        try:
            ns["my_ema_"](student, teacher, m)
        except RuntimeError as err:
            raise AssertionError(
                f"calling my_ema_ outside torch.no_grad() raised {err}: do the update under torch.no_grad() (or on "
                "p.data); the in-place change of a parameter that requires gradients must not be recorded"
            ) from None
        for (name, t), t0, s in zip(teacher.named_parameters(), before_t, before_s):
            assert torch.allclose(t.detach(), m * t0 + (1 - m) * s, atol=1e-6), (
                f"m = {m}, a Linear-LayerNorm-Linear model: teacher.{name} is not m * teacher + (1 - m) * student; "
                "update every parameter (model.parameters() goes through all the layers)"
            )
            assert t.grad_fn is None, (
                f"teacher.{name} became part of the autograd graph: do the update under torch.no_grad()"
            )


GRADING = (
    Exercise(
        "lab4.2-ex1",
        "Exercises 1-3: collapse predictions",
        ("my_collapse_predictions",),
        points=1,
        cases=(("self-check", lambda ns: check_collapse_predictions(ns["my_collapse_predictions"]())),),
    ),
    Exercise(
        "lab4.2-ex4",
        "Exercise 4: centering update and EMA teacher update",
        ("my_center_update", "my_ema_"),
        points=2,
        cases=(
            (
                "self-check",
                lambda ns: (check_center_update(ns["my_center_update"]), check_ema_update(ns["my_ema_"])),
            ),
            ("centering: other sizes, inputs kept", _center_other_sizes),
            ("EMA: a deeper model, outside no_grad", _ema_outside_no_grad),
        ),
    ),
    Exercise(
        "lab4.2-ex5",
        "Exercise 5: untextured shapes",
        ("my_untextured_results",),
        points=3,
        cases=(("self-check", lambda ns: check_untextured_results(ns["my_untextured_results"]())),),
    ),
)
### END HIDDEN TESTS
