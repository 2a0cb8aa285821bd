"""DINO's pieces against the published formulas (Caron et al., 2021) and independent references."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score
from sklearn.neighbors import KNeighborsClassifier

from common.dino import (
    DINOHead,
    DINOLoss,
    MultiCropAugmentation,
    MultiCropWrapper,
    center_update,
    teacher_temperature_schedule,
    update_teacher,
)
from common.dino_eval import attention_iou, attention_masks, knn_accuracy, knn_predict, mask_iou
from common.dino_train import DINO, DINOConfig, DINOTrainer
from common.training import param_groups
from common.vit import VisionTransformer


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def reference_dino_loss(student, teacher, center, tau_s, tau_t, n_global):
    """The paper's loss written out with NumPy: mean over view pairs (i global, j any, j != i)."""
    batch = teacher.shape[0] // n_global
    s = np.split(student, student.shape[0] // batch)
    t = np.split(teacher, n_global)
    terms = []
    for i, ti in enumerate(t):
        p_t = np_softmax((ti - center) / tau_t)
        for j, sj in enumerate(s):
            if i != j:
                log_p_s = np.log(np_softmax(sj / tau_s))
                terms.append(np.mean(np.sum(-p_t * log_p_s, axis=-1)))
    return np.mean(terms), len(terms)


# ------------------------------------------------------------------------------------------------ loss
def test_loss_matches_the_formula_on_hand_made_inputs():
    torch.manual_seed(0)
    batch, k, n_crops = 3, 5, 4
    student, teacher = torch.randn(n_crops * batch, k), torch.randn(2 * batch, k)
    loss_fn = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, k))
    center = loss_fn.center.numpy().copy()
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    expected, n_terms = reference_dino_loss(
        student.double().numpy(), teacher.double().numpy(), center, 0.1, 0.04, 2
    )
    assert n_terms == 2 * (n_crops - 1)  # each global teacher view against every other student view
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_of_one_hot_teacher_is_the_student_cross_entropy():
    # teacher logits +/- 100 at tau_t -> a one-hot target; student uniform -> CE = log K for every pair
    k = 4
    teacher = torch.full((2, k), -100.0)
    teacher[:, 1] = 100.0
    loss = DINOLoss(k, centering=False)(torch.zeros(3, k), teacher, teacher_temp=0.04)
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_no_loss_between_identical_views():
    # With 2 views only, student view 0 is compared with teacher view 1 alone: d loss / d s_0 is
    # (softmax(s_0 / tau_s) - P_t1) / (tau_s * B * n_terms), whatever teacher view 0 says.
    torch.manual_seed(1)
    batch, k, tau_s = 2, 6, 0.1
    student = torch.randn(2 * batch, k, requires_grad=True)
    teacher = torch.randn(2 * batch, k)
    DINOLoss(k, student_temp=tau_s, centering=False)(student, teacher, teacher_temp=0.05).backward()
    p_t1 = torch.softmax(teacher[batch:] / 0.05, -1)
    expected = (torch.softmax(student[:batch].detach() / tau_s, -1) - p_t1) / (tau_s * batch * 2)
    torch.testing.assert_close(student.grad[:batch], expected)


def test_center_is_an_ema_of_the_teacher_batch_mean():
    torch.manual_seed(2)
    k, m = 7, 0.9
    loss_fn = DINOLoss(k, center_momentum=m)
    c = torch.zeros(1, k)
    for _ in range(3):
        teacher = torch.randn(8, k)
        loss_fn(torch.randn(12, k), teacher, teacher_temp=0.04)
        c = m * c + (1 - m) * teacher.mean(0, keepdim=True)  # c <- m c + (1 - m) mean_b g_t(x_b)
        torch.testing.assert_close(loss_fn.center, c)


def test_centering_off_and_diagnostics():
    torch.manual_seed(6)
    k = 5
    teacher = torch.randn(4, k)
    loss_fn = DINOLoss(k, centering=False)
    loss_fn.center.fill_(3.0)
    torch.testing.assert_close(loss_fn.teacher_probs(teacher, 0.1), torch.softmax(teacher / 0.1, -1))
    student = torch.randn(6, k)
    loss = loss_fn(student, teacher, teacher_temp=0.1)
    stats = loss_fn.last_stats
    p_t = torch.distributions.Categorical(logits=teacher / 0.1)
    assert stats["teacher_entropy"] == pytest.approx(p_t.entropy().mean().item(), rel=1e-4)
    # cross-entropy = H(P_t) + KL(P_t || P_s), averaged over the same pairs
    assert loss.item() == pytest.approx(stats["teacher_entropy"] + stats["kl"], rel=1e-4)


def test_center_update_equals_the_loss_modules_in_place_update():
    torch.manual_seed(4)
    loss_fn, center = DINOLoss(5, center_momentum=0.8), torch.zeros(1, 5)
    for _ in range(3):
        teacher = torch.randn(6, 5)
        loss_fn.update_center(teacher)
        center = center_update(center, teacher, 0.8)
        torch.testing.assert_close(center, loss_fn.center)
    hand = center_update(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 4.0], [4.0, 0.0]]), 0.5)
    torch.testing.assert_close(hand, torch.tensor([[2.0, 1.0]]))  # 0.5 * (1, 0) + 0.5 * (3, 2)


@pytest.mark.parametrize("kwargs", [dict(student_temp=0), dict(center_momentum=1.0)])
def test_loss_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        DINOLoss(4, **kwargs)


def test_loss_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="n_global"):
        DINOLoss(4)(torch.randn(6, 4), torch.randn(3, 4), teacher_temp=0.04)


# ------------------------------------------------------------------------------------------ EMA, schedules
def test_ema_update_is_the_published_formula():
    torch.manual_seed(3)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in teacher.parameters()]
    update_teacher(student, teacher, momentum=0.7)
    for t0, s, t in zip(before, student.parameters(), teacher.parameters()):
        torch.testing.assert_close(t, 0.7 * t0 + 0.3 * s.detach())
    update_teacher(student, teacher, momentum=0.0)  # m = 0 copies the student
    for s, t in zip(student.parameters(), teacher.parameters()):
        torch.testing.assert_close(t, s.detach())
    with pytest.raises(ValueError):
        update_teacher(student, teacher, momentum=1.5)


def test_teacher_temperature_warms_up_linearly_then_stays():
    temps = teacher_temperature_schedule(0.04, 0.07, warmup_steps=31, total_steps=100)
    assert (
        temps[0] == pytest.approx(0.04)
        and temps[30] == pytest.approx(0.07)
        and temps[-1] == pytest.approx(0.07)
    )
    assert temps[15] == pytest.approx(0.055)


# ---------------------------------------------------------------------------------------------- crops
def test_multi_crop_counts_sizes_and_range():
    aug = MultiCropAugmentation(global_size=32, local_size=16, n_local=5)
    crops = aug(torch.rand(3, 40, 40))
    assert aug.n_crops == len(crops) == 7
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 5
    assert all(c.min() >= 0 and c.max() <= 1 for c in crops)
    with pytest.raises(ValueError):
        MultiCropAugmentation(global_size=16, local_size=32)
    with pytest.raises(ValueError):
        MultiCropAugmentation(local_scale=(0.5, 0.2))
    with pytest.raises(ValueError):
        aug(torch.rand(1, 3, 32, 32))


# --------------------------------------------------------------------------------------- head, wrapper
def test_head_normalises_the_bottleneck_and_the_last_layer():
    # Reference (DINO's head): out = normalize(MLP(x)) @ (g v / ||v||)^T with the gain g = 1, written out
    # from the raw direction v and torch's layers: every output is a cosine similarity.
    torch.manual_seed(0)
    head = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8)
    fc1, fc2, fc3 = (m for m in head.mlp if isinstance(m, torch.nn.Linear))
    x = torch.randn(5, 16)
    z = fc3(torch.nn.functional.gelu(fc2(torch.nn.functional.gelu(fc1(x)))))  # n_layers = 3, GELU between
    z = z / z.norm(dim=-1, keepdim=True)
    v = head.last_layer.parametrizations.weight.original1
    out = head(x)
    assert out.shape == (5, 40)
    torch.testing.assert_close(out, z @ (v / v.norm(dim=1, keepdim=True)).T)
    assert out.abs().max() <= 1 + 1e-5  # cosine similarities
    gain = head.last_layer.parametrizations.weight.original0
    assert torch.all(gain == 1.0) and not gain.requires_grad  # norm_last_layer: g fixed at 1
    assert DINOHead(16, 40, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_multi_crop_wrapper_equals_one_crop_at_a_time():
    torch.manual_seed(4)
    vit = VisionTransformer(16, 4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2)
    wrapper = MultiCropWrapper(vit, DINOHead(16, 10, hidden_dim=16, bottleneck_dim=8)).eval()
    crops = [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 8, 8)]
    expected = torch.cat([wrapper.head(vit(c)) for c in crops])
    torch.testing.assert_close(wrapper(crops), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- evaluation
def test_weighted_knn_matches_scikit_learn():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    labels = rng.integers(0, 3, size=60)
    temp = 0.07
    ref = KNeighborsClassifier(
        n_neighbors=10, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / temp)
    ).fit(train, labels)
    ours = knn_predict(torch.tensor(train), torch.tensor(labels), torch.tensor(test), k=10, temperature=temp)
    np.testing.assert_array_equal(ours.numpy(), ref.predict(test))
    acc = knn_accuracy(
        torch.tensor(train),
        torch.tensor(labels),
        torch.tensor(test),
        torch.tensor(ref.predict(test)),
        k=10,
        temperature=temp,
    )
    assert acc == 1.0
    with pytest.raises(ValueError):
        knn_predict(torch.tensor(train), torch.tensor(labels), torch.tensor(test), k=61)


def test_attention_masks_keep_the_given_mass():
    attn = torch.tensor([[[0.1, 0.5, 0.1, 0.3]]])
    assert attention_masks(attn, mass=0.6).tolist() == [[[False, True, False, True]]]  # 0.5 + 0.3 >= 0.6
    assert attention_masks(attn, mass=0.5).tolist() == [[[False, True, False, False]]]
    assert attention_masks(attn, mass=1.0).all()
    with pytest.raises(ValueError):
        attention_masks(attn, mass=0.0)


def test_mask_iou_matches_jaccard_score():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 6, 6)) > 0.5, rng.random((3, 6, 6)) > 0.4
    ours = mask_iou(torch.tensor(a), torch.tensor(b)).numpy()
    ref = [jaccard_score(b[i].ravel(), a[i].ravel()) for i in range(3)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_attention_iou_shapes():
    vit = VisionTransformer(16, 4, in_chans=3, num_classes=0, embed_dim=16, depth=2, num_heads=2)
    iou = attention_iou(vit, torch.rand(3, 3, 16, 16), torch.rand(3, 16, 16) > 0.5)
    assert iou.shape == (3, 2) and np.all((iou >= 0) & (iou <= 1))
    with pytest.raises(ValueError):
        attention_iou(vit, torch.rand(3, 3, 16, 16), torch.rand(3, 8, 8) > 0.5)


# --------------------------------------------------------------------------------- training, checkpoints
def tiny_dino(**overrides):
    config = DINOConfig(
        **{"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 8, "epochs": 2, "warmup_epochs": 1, **overrides}
    )
    return DINO(
        VisionTransformer(16, 4, in_chans=3, num_classes=0, embed_dim=16, depth=1, num_heads=2),
        16,
        config=config,
    )


def test_train_step_updates_student_and_teacher_by_ema_only():
    torch.manual_seed(5)
    dino = tiny_dino(freeze_last_layer_epochs=1)
    trainer = DINOTrainer(dino, steps_per_epoch=2, batch_size=4)
    last_before = dino.student.head.last_layer.parametrizations.weight.original1.detach().clone()
    teacher_before = [p.detach().clone() for p in dino.teacher.parameters()]
    crops = [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16), torch.rand(4, 3, 8, 8)]
    stats = trainer.train_step(crops)
    assert math.isfinite(stats["loss"]) and set(stats) >= {"teacher_entropy", "kl", "lr", "momentum"}
    assert all(p.grad is None for p in dino.teacher.parameters())
    # the last layer stays fixed during the first epoch (DINO's freeze_last_layer)
    torch.testing.assert_close(dino.student.head.last_layer.parametrizations.weight.original1, last_before)
    m = stats["momentum"]
    for t0, s, t in zip(teacher_before, dino.student.parameters(), dino.teacher.parameters()):
        torch.testing.assert_close(t, m * t0 + (1 - m) * s.detach())


def test_param_groups_decay_only_matrices():
    student = tiny_dino().student
    decay, no_decay = param_groups(student, 0.04)
    assert decay["params"] and all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.04
    assert all(p.ndim <= 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    trainable = [p for p in student.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)


def test_config_validation():
    with pytest.raises(ValueError):
        DINOConfig(epochs=2, warmup_epochs=2)


# ---------------------------------------------------------------------------------------------- collapse
def _teacher_entropy(**overrides):
    """Per-step teacher entropy of a seconds-long DINO run on the textured shapes, and log K."""
    from common import reference_models as ref
    from common.dino_train import train_dino
    from common.runtime import seed_everything

    seed_everything(0)
    data = ref.dino_data("tiny", n_train=256, batch_size=32)
    dino = ref.new_dino("tiny", epochs=3, **overrides)
    history = train_dino(DINOTrainer(dino, len(data.crops), batch_size=32), data.crops)
    return np.array(history.steps["teacher_entropy"]), np.log(dino.config.out_dim)


def test_the_course_recipe_keeps_the_teacher_far_from_uniform():
    entropy, log_k = _teacher_entropy()
    assert entropy.max() < 0.75 * log_k, f"teacher entropy reached {entropy.max():.2f} of log K = {log_k:.2f}"


def test_without_sharpening_the_same_run_goes_uniform():
    # the check above can fail: with tau_t = tau_s the teacher's entropy climbs to log K (uniform collapse)
    entropy, log_k = _teacher_entropy(teacher_temp=0.1, warmup_teacher_temp=0.1)
    assert entropy[-5:].mean() > 0.95 * log_k


def test_continue_dino_resumes_the_checkpoint_with_the_continuation_recipe():
    from common import reference_models as ref
    from common.runtime import seed_everything

    seed_everything(0)
    data = ref.dino_data("tiny", n_train=128, batch_size=32)
    state = ref.dino_checkpoint_state(ref.new_dino("tiny", epochs=2), "tiny", data)
    run, history = ref.continue_dino(state, data.crops, 5, seed=3, centering=False)
    assert len(history.steps["loss"]) == 5  # steps, not epochs: 5 > the 4 batches of one epoch
    assert history.steps["momentum"][0] == pytest.approx(0.9)  # no warm-up: the schedule starts at 0.9
    assert (run.config.lr, run.config.warmup_epochs, run.config.freeze_last_layer_epochs) == (2e-4, 0, 0)
    assert run.config.centering is False and run.config.epochs == 2  # the setting passed through; ceil(5 / 4)
    # seeded: the same call gives the same losses
    _, again = ref.continue_dino(state, data.crops, 5, seed=3, centering=False)
    assert history.steps["loss"] == again.steps["loss"]
