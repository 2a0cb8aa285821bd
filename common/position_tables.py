"""Reading and ablating a ViT's position table (lab 4.1, section 6).

A learned table need not encode the 2-D grid as "neighbours look alike". Trained with the 8 flips and turns of
the square as augmentation, the only position code the data support is one the 8 symmetries leave unchanged:
which *orbit* a patch lies in (on a 4x4 grid: the 4 centre cells, the 8 edge cells, the 4 corners), i.e. how
far from the centre it is. These functions measure both, and remove the table to see whether the model uses it.

- ``dihedral_orbits(rows, cols) -> (rows*cols,) int``: the orbit index of every grid cell under the symmetries
  of the grid (the 8 of the square when rows == cols; the 4 flips of a rectangle otherwise), numbered by
  increasing distance from the centre.
- ``orbit_similarity(sim, orbits) -> (k, k)``: mean of ``sim[i, j]`` over pairs i != j from orbits a and b.
- ``neighbour_similarity(sim, rows, cols) -> (near, far)``: mean similarity of grid neighbours (Manhattan
  distance 1) and of cells at least ``rows`` steps apart: the measure that sees a grid code, not a radial one.
- ``ablate_position_table(model, mode, *, seed=0) -> model``: a copy of a ViT whose patch rows of ``pos_embed``
  are zeroed (``"zero"``) or randomly permuted among the patches (``"permute"``); the CLS slot is kept.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

ABLATIONS = ("zero", "permute")


def dihedral_orbits(rows: int, cols: int) -> Tensor:
    """Orbit index per cell (row-major): two cells share an orbit when a flip or turn of the grid maps one to the
    other. The orbit of (r, c) is fixed by its distances from the centre lines, |2r - (rows-1)| and
    |2c - (cols-1)| (unordered for a square grid, where a quarter turn swaps them)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"need a grid of at least 1x1 cells, got {rows}x{cols}.")
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    dr, dc = (2 * r - (rows - 1)).abs().flatten(), (2 * c - (cols - 1)).abs().flatten()
    if rows == cols:
        dr, dc = torch.minimum(dr, dc), torch.maximum(dr, dc)
    keys = [
        (int(a) ** 2 + int(b) ** 2, int(a), int(b)) for a, b in zip(dr, dc)
    ]  # sorted by distance from centre
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    return torch.tensor([index[k] for k in keys])


def orbit_similarity(sim: Tensor, orbits: Tensor) -> Tensor:
    """(k, k) mean of ``sim`` over pairs of distinct cells, the first in orbit a, the second in orbit b."""
    n = len(orbits)
    if sim.shape != (n, n):
        raise ValueError(f"sim must be ({n}, {n}) for {n} cells, got {tuple(sim.shape)}.")
    k = int(orbits.max()) + 1
    pair = torch.nn.functional.one_hot(orbits, k).to(sim.dtype)  # (n, k)
    off = sim * (1 - torch.eye(n, dtype=sim.dtype))
    counts = pair.T @ (1 - torch.eye(n, dtype=sim.dtype)) @ pair
    return (pair.T @ off @ pair) / counts.clamp_min(1)


def neighbour_similarity(sim: Tensor, rows: int, cols: int) -> tuple[float, float]:
    """Mean similarity of grid neighbours (Manhattan distance 1) and of cells >= ``rows`` steps apart."""
    if sim.shape != (rows * cols, rows * cols):
        raise ValueError(
            f"sim must be ({rows * cols}, {rows * cols}) for a {rows}x{cols} grid, got {tuple(sim.shape)}."
        )
    r, c = torch.arange(rows * cols) // cols, torch.arange(rows * cols) % cols
    dist = (r[:, None] - r[None]).abs() + (c[:, None] - c[None]).abs()
    return sim[dist == 1].mean().item(), sim[dist >= rows].mean().item()


def ablate_position_table(model: nn.Module, mode: str, *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` (a ViT with ``pos_embed`` (1, prefix + N, D) and ``num_prefix_tokens``) whose N
    patch rows are zeroed or permuted (a random permutation, never the identity for N > 1); the original is
    untouched. Zeroing removes where each patch is; permuting keeps the table's vectors but puts them at the
    wrong places."""
    if mode not in ABLATIONS:
        raise ValueError(f"unknown ablation {mode!r}; use one of {ABLATIONS}.")
    ablated = copy.deepcopy(model)
    prefix = getattr(ablated, "num_prefix_tokens", 1)
    with torch.no_grad():
        table = ablated.pos_embed[0, prefix:]
        if mode == "zero":
            table.zero_()
        elif len(table) > 1:
            gen = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(table), generator=gen)
            while torch.equal(order, torch.arange(len(table))):
                order = torch.randperm(len(table), generator=gen)
            table.copy_(table[order].clone())
    return ablated
