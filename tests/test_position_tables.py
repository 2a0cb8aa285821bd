"""Position-table measures against brute force (the 8 symmetries applied to the grid, explicit loops)."""

import pytest
import torch

from common.position_tables import (
    ablate_position_table,
    dihedral_orbits,
    neighbour_similarity,
    orbit_similarity,
)
from common.vit import VisionTransformer


def brute_force_orbits(rows, cols):
    """Cells reachable from each other by flips and (square grids only) quarter turns of an index grid."""
    grid = torch.arange(rows * cols).reshape(rows, cols)
    images = [grid, grid.flip(0), grid.flip(1), grid.flip(0).flip(1)]
    if rows == cols:
        images += [g.T for g in images]
    same = torch.zeros(rows * cols, rows * cols, dtype=torch.bool)
    for g in images:  # g[r, c] is the cell that lands on (r, c)
        same[grid.flatten(), g.flatten()] = True
    return same


@pytest.mark.parametrize("rows, cols", [(4, 4), (5, 5), (3, 4), (6, 6)])
def test_orbits_are_the_cells_the_grid_symmetries_exchange(rows, cols):
    orbits = dihedral_orbits(rows, cols)
    assert torch.equal(orbits[:, None] == orbits[None], brute_force_orbits(rows, cols))


def test_four_by_four_orbits_are_centre_edges_corners():
    orbits = dihedral_orbits(4, 4).reshape(4, 4)
    assert orbits[1:3, 1:3].eq(0).all() and orbits[0, 0] == orbits[3, 3] == 2 and orbits[0, 1] == 1
    assert torch.bincount(orbits.flatten()).tolist() == [4, 8, 4]


def test_orbit_similarity_is_the_mean_over_distinct_pairs():
    torch.manual_seed(0)
    sim = torch.randn(9, 9)
    orbits = dihedral_orbits(3, 3)
    out = orbit_similarity(sim, orbits)
    for a in range(int(orbits.max()) + 1):
        for b in range(int(orbits.max()) + 1):
            values = [
                sim[i, j] for i in range(9) for j in range(9) if i != j and orbits[i] == a and orbits[j] == b
            ]
            expected = torch.stack(values).mean() if values else torch.tensor(0.0)
            assert torch.allclose(out[a, b], expected, atol=1e-6)
    with pytest.raises(ValueError, match="sim must be"):
        orbit_similarity(torch.zeros(4, 4), orbits)


def test_neighbour_similarity_by_hand():
    sim = torch.zeros(4, 4)  # a 2x2 grid: 0 1 / 2 3
    sim[0, 1] = sim[1, 0] = 1.0  # one neighbour pair at 1, the other neighbour pairs (0-2, 1-3) at 0
    sim[0, 3] = sim[3, 0] = sim[1, 2] = sim[2, 1] = -1.0  # diagonals: 2 steps apart
    near, far = neighbour_similarity(sim, 2, 2)
    assert near == pytest.approx(2 / 8) and far == pytest.approx(-1.0)


def test_ablations_zero_or_permute_the_patch_rows_only_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2)
    before = model.pos_embed.detach().clone()
    zeroed = ablate_position_table(model, "zero")
    assert torch.all(zeroed.pos_embed[0, 1:] == 0) and torch.equal(zeroed.pos_embed[0, 0], before[0, 0])
    permuted = ablate_position_table(model, "permute", seed=1)
    rows = permuted.pos_embed[0, 1:]
    assert torch.equal(permuted.pos_embed[0, 0], before[0, 0]) and not torch.equal(rows, before[0, 1:])
    # the same vectors, each moved: every row of the old table appears exactly once
    match = (rows[:, None] == before[0, 1:][None]).all(-1)
    assert match.sum(0).eq(1).all() and match.sum(1).eq(1).all()
    assert torch.equal(model.pos_embed, before)  # the original is untouched
    with pytest.raises(ValueError, match="zero"):
        ablate_position_table(model, "shuffle")
