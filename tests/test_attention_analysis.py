import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from common.attention import MultiHeadAttention
from common.attention_analysis import (
    attention_entropy,
    attention_rollout,
    head_distance_matrix,
    head_diversity,
    max_head_diversity,
    mean_attention_distance,
    patch_attention_distance,
)


def random_weights(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).mul(2).softmax(-1)


def test_entropy_matches_scipy_and_its_extremes():
    w = random_weights(2, 3, 5, 7)
    ours = attention_entropy(w)
    ref = scipy_entropy(w.numpy(), axis=-1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)
    one_hot = torch.eye(4)
    assert torch.allclose(attention_entropy(one_hot), torch.zeros(4))
    uniform = torch.full((3, 8), 1 / 8)
    assert torch.allclose(attention_entropy(uniform), torch.full((3,), math.log(8)))
    assert torch.allclose(attention_entropy(uniform, normalize=True), torch.ones(3))


def test_mean_distance_by_hand():
    n = 5
    previous = torch.zeros(n, n)
    previous[0, 0] = 1.0
    previous[torch.arange(1, n), torch.arange(n - 1)] = 1.0  # every query looks one step back
    assert mean_attention_distance(previous).item() == pytest.approx((n - 1) / n)
    uniform = torch.full((n, n), 1 / n)
    expected = sum(abs(i - j) for i in range(n) for j in range(n)) / n**2
    assert mean_attention_distance(uniform).item() == pytest.approx(expected)
    assert mean_attention_distance(torch.eye(n)).item() == 0.0


def test_head_distances_match_scipy_jensen_shannon():
    w = random_weights(2, 3, 4, 6, seed=1)  # batch 2, heads 3, 4 queries, 6 keys
    ours = head_distance_matrix(w)
    ref = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            ref[a, b] = np.mean(
                [
                    jensenshannon(w[i, a, q].numpy(), w[i, b, q].numpy(), base=2)
                    for i in range(2)
                    for q in range(4)
                ]
            )
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    assert head_diversity(w) == pytest.approx(ref[~np.eye(3, dtype=bool)].mean(), abs=1e-5)


def test_diversity_is_zero_for_identical_heads_and_one_for_disjoint_heads():
    same = random_weights(1, 5, 5).expand(4, 5, 5)
    assert head_diversity(same) == pytest.approx(0.0, abs=1e-6)
    disjoint = torch.stack([torch.eye(4), torch.eye(4).roll(1, dims=1)])
    assert head_diversity(disjoint) == pytest.approx(1.0)


def test_works_on_multihead_attention_output():
    torch.manual_seed(0)
    _, w = MultiHeadAttention(16, 4)(torch.randn(3, 7, 16), return_attention=True)
    assert attention_entropy(w).shape == (3, 4, 7)
    assert mean_attention_distance(w).shape == (3, 4)
    assert head_distance_matrix(w).shape == (4, 4)
    assert 0.0 <= head_diversity(w) <= 1.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="rows summing to 1"):
        attention_entropy(torch.randn(3, 3))
    with pytest.raises(ValueError, match="n_queries == n_keys"):
        mean_attention_distance(random_weights(3, 4))
    with pytest.raises(ValueError, match="at least 2 heads"):
        head_diversity(random_weights(1, 3, 3))
    with pytest.raises(ValueError, match="at least 3 dims"):
        head_distance_matrix(random_weights(3, 3))


def test_attention_rollout_is_the_product_of_residual_mixed_mean_attentions_last_layer_first():
    # Abnar & Zuidema (2020), section 3: A'_l = 0.5 I + 0.5 mean_heads(A_l) (rows already sum to 1), and
    # rollout = A'_L ... A'_2 A'_1: the later layer multiplies from the left. Two different layers test the order.
    g = torch.Generator().manual_seed(0)
    a1, a2 = (torch.softmax(3 * torch.randn(2, 3, 5, 5, generator=g), dim=-1) for _ in range(2))
    m1, m2 = (0.5 * torch.eye(5) + 0.5 * a.mean(1) for a in (a1, a2))
    torch.testing.assert_close(attention_rollout([a1]), m1)
    two = attention_rollout([a1, a2])
    torch.testing.assert_close(two, torch.einsum("bij,bjk->bik", m2, m1))
    assert not torch.allclose(two, m1 @ m2, atol=1e-4)  # the other order is a different matrix
    torch.testing.assert_close(two.sum(-1), torch.ones(2, 5))
    # residual_weight w: w I + (1 - w) mean_heads(A); w = 0 is the plain head-averaged attention
    torch.testing.assert_close(attention_rollout([a1], residual_weight=0.0), a1.mean(1))


def test_attention_rollout_needs_a_layer():
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])


def _one_relation_per_head(groups: list[int], length: int = 6) -> torch.Tensor:
    """(1, heads, L, L) weights: a head of relation r attends, one-hot, to key (i + r) mod L."""
    i = torch.arange(length)
    heads = [
        F.one_hot((i + r) % length, length).float() for r, size in enumerate(groups) for _ in range(size)
    ]
    return torch.stack(heads)[None]


@pytest.mark.parametrize("heads, relations", [(2, 3), (3, 3), (4, 3), (5, 3), (6, 2), (7, 3), (8, 3)])
def test_max_head_diversity_is_the_best_assignment_measured_by_head_diversity(heads, relations):
    # every way of giving the heads relations (group sizes summing to heads), measured with head_diversity
    def splits(total, parts):
        if parts == 1:
            yield [total]
            return
        for first in range(total + 1):
            for rest in splits(total - first, parts - 1):
                yield [first, *rest]

    best = max(head_diversity(_one_relation_per_head(sizes)) for sizes in splits(heads, relations))
    assert max_head_diversity(heads, relations) == pytest.approx(best, abs=1e-6)


def test_max_head_diversity_hand_values_and_errors():
    assert max_head_diversity(4, 3) == pytest.approx(
        5 / 6
    )  # groups 2, 1, 1: 1 of the 6 pairs shares a relation
    assert max_head_diversity(8, 3) == pytest.approx(
        21 / 28
    )  # groups 3, 3, 2: 3 + 3 + 1 of the 28 pairs share
    with pytest.raises(ValueError, match="num_heads >= 2"):
        max_head_diversity(1, 3)


def test_patch_attention_distance_against_a_loop_and_two_limits():
    # Reference: an explicit loop over images, heads, query and key patches with Euclidean pixel distances.
    grid, patch = (2, 3), 8
    maps = [random_weights(2, 3, 7, 7, seed=s) for s in (1, 2)]  # CLS + 6 patches
    out = patch_attention_distance(maps, grid, patch)
    assert out.shape == (2, 3)
    cells = [(i // 3, i % 3) for i in range(6)]
    for layer, w in enumerate(maps):
        for h in range(3):
            total = 0.0
            for b in range(2):
                for q in range(6):
                    row = w[b, h, 1 + q, 1:] / w[b, h, 1 + q, 1:].sum()
                    total += sum(float(row[k]) * patch * math.dist(cells[q], cells[k]) for k in range(6))
            assert out[layer, h].item() == pytest.approx(total / 12, rel=1e-5)
    uniform = torch.full((1, 1, 7, 7), 1 / 7)
    pairwise = np.mean([patch * math.dist(a, b) for a in cells for b in cells])
    assert patch_attention_distance([uniform], grid, patch).item() == pytest.approx(pairwise, rel=1e-6)
    own = torch.eye(7)[None, None]
    assert patch_attention_distance([own], grid, patch).item() == 0.0
    with pytest.raises(ValueError, match="grid"):
        patch_attention_distance(maps, (3, 3), patch)
