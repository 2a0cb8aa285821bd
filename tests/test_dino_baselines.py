"""Lab 4.2's opponents and DINOv2 piece against written-out references: colour saliency, the patch oracle,
Sinkhorn-Knopp targets, the camouflage background and the supervised opponent's data."""

import itertools

import numpy as np
import pytest
import torch

from common import reference_models as ref
from common.datasets import ShapesDataset
from common.dino import DINOLoss, sinkhorn_knopp
from common.dino_eval import colour_saliency, linear_probe_accuracy, oracle_iou, saliency_iou


def brute_force_oracle(mask: np.ndarray, patch: int) -> float:
    """Every subset of whole patches, IoU with the pixel mask: the maximum."""
    gh, gw = mask.shape[0] // patch, mask.shape[1] // patch
    best = 0.0
    cells = list(itertools.product(range(gh), range(gw)))
    for r in range(1, len(cells) + 1):
        for subset in itertools.combinations(cells, r):
            pred = np.zeros_like(mask, dtype=bool)
            for i, j in subset:
                pred[i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = True
            best = max(best, (pred & mask).sum() / (pred | mask).sum())
    return best


def test_oracle_iou_is_the_best_subset_of_patches():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 9, 9)) < rng.uniform(0.1, 0.7, size=(6, 1, 1))  # 3x3 grids of 3-pixel patches
    got = oracle_iou(torch.as_tensor(masks), 3)
    want = [brute_force_oracle(m, 3) for m in masks]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_colour_saliency_is_the_mean_distance_from_the_median_colour():
    rng = np.random.default_rng(1)
    images = rng.random((2, 3, 8, 8)).astype(np.float32)
    want = np.zeros((2, 2, 2))
    for b in range(2):
        flat = images[b].reshape(3, -1)
        median = np.sort(flat, axis=1)[:, (flat.shape[1] - 1) // 2]  # torch's median: the lower middle value
        dist = np.sqrt(((images[b] - median[:, None, None]) ** 2).sum(0))
        want[b] = dist.reshape(2, 4, 2, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(colour_saliency(torch.as_tensor(images), 4).numpy(), want, rtol=1e-5)


def test_saliency_iou_finds_an_odd_coloured_square_and_cuts_with_the_mass_rule():
    images = torch.full((1, 3, 16, 16), 0.5)
    images[0, :, 4:8, 8:12] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # exactly one 4x4 patch
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 4:8, 8:12] = True
    assert saliency_iou(images, masks, 4)[0] == pytest.approx(1.0)
    assert oracle_iou(masks, 4)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="divisible"):
        saliency_iou(images[..., :15], masks[..., :15], 4)


def reference_sinkhorn(scores: np.ndarray, temp: float, iters: int) -> np.ndarray:
    """DINOv2's sinkhorn_knopp_teacher written out with NumPy in float64."""
    q = np.exp(scores / temp).T  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def test_sinkhorn_knopp_matches_dinov2s_reference_and_spreads_the_batch():
    torch.manual_seed(0)
    scores = torch.rand(32, 16) * 2 - 1  # cosine-like scores
    got = sinkhorn_knopp(scores, 0.1, 3).double().numpy()
    np.testing.assert_allclose(got, reference_sinkhorn(scores.double().numpy(), 0.1, 3), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)  # each image: a distribution
    many = sinkhorn_knopp(scores, 0.1, 50).numpy()
    np.testing.assert_allclose(many.mean(0), 1 / 16, rtol=1e-3)  # converged: prototypes used evenly
    # one dominant dimension (what EMA centering has to undo over time) is spread out in one batch
    skewed = scores.clone()
    skewed[:, 0] += 5
    assert sinkhorn_knopp(skewed, 0.1, 3)[:, 0].mean() < 0.2
    with pytest.raises(ValueError, match="teacher_temp"):
        sinkhorn_knopp(scores, 0.0)


def test_dino_loss_accepts_sinkhorn_centering_and_rejects_unknown_ones():
    loss = DINOLoss(16, centering="sinkhorn")
    teacher = torch.randn(8, 16)
    torch.testing.assert_close(loss.teacher_probs(teacher, 0.05), sinkhorn_knopp(teacher, 0.05))
    assert torch.isfinite(loss(torch.randn(16, 16), teacher, 0.05))
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(16, centering="batch")


def test_camouflage_keeps_the_objects_and_takes_away_the_colour_contrast():
    plain = ShapesDataset(200, 32, seed=3, split="val", background="plain", texture=True, return_mask=True)
    camo = ShapesDataset(
        200, 32, seed=3, split="val", background="camouflage", texture=True, return_mask=True
    )
    assert torch.equal(plain.labels, camo.labels) and torch.equal(plain.masks, camo.masks)  # same objects
    # outside the object the background is no longer one grey: it spans the colour range like the objects
    outside = camo.images.permute(1, 0, 2, 3)[:, ~camo.masks]
    assert outside.std(1).min() > 0.2
    assert (
        saliency_iou(camo.images, camo.masks, 8).mean()
        < saliency_iou(plain.images, plain.masks, 8).mean() - 0.15
    )
    big = ShapesDataset(200, 64, seed=3, split="val", background="camouflage", texture=True, return_mask=True)
    small = torch.nn.functional.avg_pool2d(big.masks[:, None].float(), 2)[:, 0]
    assert ((small >= 0.5) == camo.masks).float().mean() > 0.97  # the same objects at twice the size


def test_dino_data_evaluates_on_the_chosen_split_and_the_8x8_grid():
    data = ref.dino_data("tiny", eval_split="val")
    val = ShapesDataset(32, 32, seed=0, split="val", **ref.DINO_DATA)
    assert torch.equal(data.test.images, val.images)
    assert data.test_large.images.shape[-1] == ref.DINO_EVAL_SIZE
    assert torch.equal(data.test_large.labels, data.test.labels)
    m = ref.mask_baselines(data)
    assert 0 < m["saliency_iou"] <= m["oracle_iou"] <= 1


def test_supervised_opponent_trains_on_dinos_images_and_holds_out_a_split():
    train, val, normalize = ref.dino_supervised_data(0, n_train=64, n_eval=16)
    dino = ref.dino_data("tiny", n_train=64)
    assert torch.equal(train.images, dino.train.images)
    assert not any(torch.equal(v, t) for v in val.images for t in train.images)
    assert ref.new_dino_supervised()(torch.randn(2, 3, 32, 32)).shape == (2, len(train.classes))


def test_linear_probe_matches_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 10)) * 1.5
    y = rng.integers(0, 3, size=300)
    x = centres[y] + rng.normal(size=(300, 10))
    xt, yt = x[200:], y[200:]
    x, y = x[:200], y[:200]
    lam = 1e-2
    got = linear_probe_accuracy(
        torch.tensor(x), torch.tensor(y), torch.tensor(xt), torch.tensor(yt), weight_decay=lam
    )
    mean, std = x.mean(0), x.std(0, ddof=1)
    # the same objective: sklearn minimises C * sum(loss) + ||W||^2 / 2, ours mean(loss) + lam ||W||^2 / 2
    sk = LogisticRegression(C=1 / (lam * len(x)), max_iter=2000, tol=1e-8).fit((x - mean) / std, y)
    assert got == pytest.approx(sk.score((xt - mean) / std, yt), abs=0.011)
    assert got > 0.8
    with pytest.raises(ValueError, match="same length"):
        linear_probe_accuracy(torch.tensor(x), torch.tensor(y[:5]), torch.tensor(xt), torch.tensor(yt))
    with pytest.raises(ValueError, match="at least 2"):
        linear_probe_accuracy(torch.tensor(x[:1]), torch.tensor(y[:1]), torch.tensor(xt), torch.tensor(yt))
