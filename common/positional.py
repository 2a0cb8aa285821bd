"""Positional encodings: sinusoidal (1-D and 2-D), learned, linear and relative.

Public API
----------
- :func:`sinusoidal_encoding`, :func:`sincos_2d_encoding`, :class:`SinusoidalPositionalEncoding`,
  :class:`LearnedPositionalEmbedding`, :func:`linear_encoding`, :func:`sinusoidal_rotation`,
  :func:`relative_position_index`, :class:`RelativePositionBias`.
- Small functions that are also reference solutions of lab 6.3's exercises: :func:`shift_pair`,
  :func:`first_smaller_than_last` (with :func:`sinusoidal_encoding` and :func:`relative_position_index`).
- The exercises' self-checks (each raises AssertionError with a hint): :func:`check_sinusoidal`,
  :func:`check_shift_pair`, :func:`check_order_label`, :func:`check_relative_index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


def sinusoidal_encoding(num_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al. (2017): PE[pos, 2i] = sin(pos / base^(2i/dim)), PE[pos, 2i+1] = cos(same).

    Returns a (num_positions, dim) tensor; ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}.")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # one frequency per pair
    pe = torch.zeros(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.float()


def sincos_2d_encoding(grid_h: int, grid_w: int, dim: int, base: float = 10000.0) -> Tensor:
    """2-D sin-cos encoding for a patch grid, the idea of MAE's fixed table: half the channels encode the row,
    half the column, each with :func:`sinusoidal_encoding` (sin/cos interleaved; MAE puts the column half
    first and blocks its sines before its cosines: the same set of channels in another order).
    Returns (grid_h * grid_w, dim) in row-major patch order; ``dim % 4 == 0``."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos encoding needs dim divisible by 4, got {dim}.")
    rows = sinusoidal_encoding(grid_h, dim // 2, base)  # (H, dim/2)
    cols = sinusoidal_encoding(grid_w, dim // 2, base)  # (W, dim/2)
    return torch.cat(
        [rows[:, None, :].expand(grid_h, grid_w, -1), cols[None, :, :].expand(grid_h, grid_w, -1)], dim=-1
    ).reshape(grid_h * grid_w, dim)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a (B, N, dim) input; no parameters, any length up to max_len."""

    def __init__(self, dim: int, max_len: int = 4096, *, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds max_len={self.pe.shape[0]}; raise max_len."
            )
        return self.dropout(x + self.pe[: x.shape[1]])


class LearnedPositionalEmbedding(nn.Module):
    """A trainable table of ``max_len`` position vectors (BERT/GPT-style); cannot go past max_len."""

    def __init__(self, dim: int, max_len: int, *, dropout: float = 0.0):
        super().__init__()
        self.table = nn.Embedding(max_len, dim)
        nn.init.normal_(self.table.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n > self.table.num_embeddings:
            raise ValueError(
                f"sequence length {n} exceeds the learned table (max_len={self.table.num_embeddings}); "
                "a learned table cannot extrapolate: use a sinusoidal encoding or a larger max_len."
            )
        return self.dropout(x + self.table.weight[:n])


def linear_encoding(
    num_positions: int, dim: int, max_len: int | None = None, *, single_channel: bool = False
) -> Tensor:
    """The naive encoding PE(pos) = pos / max_len, the same value in every channel: (num_positions, dim).

    One number per position: it orders positions but carries no multi-scale pattern, and its scale
    depends on ``max_len`` (default ``num_positions``). Added to every channel it is a per-token constant,
    which the next LayerNorm subtracts exactly; ``single_channel=True`` puts it in channel 0 only (zeros
    elsewhere), where LayerNorm cannot remove it.
    """
    max_len = num_positions if max_len is None else max_len
    if max_len < 1 or dim < 1:
        raise ValueError(f"need max_len >= 1 and dim >= 1, got max_len={max_len}, dim={dim}.")
    if single_channel:
        table = torch.zeros(num_positions, dim)
        table[:, 0] = torch.arange(num_positions, dtype=torch.float32) / max_len
        return table
    return (
        (torch.arange(num_positions, dtype=torch.float32) / max_len)[:, None]
        .expand(num_positions, dim)
        .clone()
    )


def sinusoidal_rotation(offset: float, dim: int, base: float = 10000.0) -> Tensor:
    """The (dim, dim) matrix R_k with PE(pos + k) = R_k @ PE(pos) for every pos (k = ``offset``).

    Each (sin, cos) pair of frequency w is rotated by the angle k·w:
        sin((p+k)w) =  cos(kw) sin(pw) + sin(kw) cos(pw)
        cos((p+k)w) = -sin(kw) sin(pw) + cos(kw) cos(pw)
    so R_k is block-diagonal, orthogonal, and depends on k only: relative offsets are linear maps.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}.")
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    cos, sin = torch.cos(offset * freq), torch.sin(offset * freq)
    rot = torch.zeros(dim, dim, dtype=torch.float64)
    even, odd = torch.arange(0, dim, 2), torch.arange(1, dim, 2)
    rot[even, even], rot[even, odd] = cos, sin
    rot[odd, even], rot[odd, odd] = -sin, cos
    return rot.float()


def relative_position_index(
    num_queries: int, num_keys: int | None = None, max_distance: int | None = None
) -> Tensor:
    """(num_queries, num_keys) integer offsets j - i from query i to key j, clipped to ±max_distance
    (Shaw et al., 2018): positions farther apart than ``max_distance`` share one bucket."""
    num_keys = num_queries if num_keys is None else num_keys
    offsets = torch.arange(num_keys)[None, :] - torch.arange(num_queries)[:, None]
    if max_distance is not None:
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}.")
        offsets = offsets.clamp(-max_distance, max_distance)
    return offsets


class RelativePositionBias(nn.Module):
    """A learned scalar bias per head and relative offset, added to the attention scores (T5-style,
    with Shaw et al.'s clipping instead of T5's log buckets).

    ``forward(n)`` returns a (num_heads, n, n) float tensor to pass as the ``mask`` of
    ``common.attention.MultiHeadAttention`` (float masks are added to the scores). The bias depends on
    j - i only, so the same table serves any sequence length: it extrapolates by construction.
    """

    def __init__(self, num_heads: int, max_distance: int):
        super().__init__()
        if num_heads < 1 or max_distance < 0:
            raise ValueError(
                f"need num_heads >= 1 and max_distance >= 0, got {num_heads} and {max_distance}."
            )
        self.max_distance = max_distance
        self.table = nn.Parameter(torch.zeros(2 * max_distance + 1, num_heads))  # starts position-blind

    def forward(self, n: int) -> Tensor:
        index = relative_position_index(n, max_distance=self.max_distance) + self.max_distance
        return self.table[index].permute(2, 0, 1)  # (n, n, heads) -> (heads, n, n)


# ------------------------------------------------------------------------------ small reference functions
def shift_pair(sin_p: float, cos_p: float, k: float, omega: float) -> tuple[float, float]:
    """One (sin, cos) channel pair of frequency ``omega`` moved from position p to p + k without knowing p:
    the 2 x 2 block of :func:`sinusoidal_rotation`, i.e. (sin((p+k)ω), cos((p+k)ω))."""
    ck, sk = math.cos(k * omega), math.sin(k * omega)
    return ck * sin_p + sk * cos_p, -sk * sin_p + ck * cos_p


def first_smaller_than_last(tokens: Tensor) -> Tensor:
    """A label for an order task: 1 where a sequence's first token is smaller than its last one, else 0.
    ``tokens`` is (B, N); returns (B,) int64. Shuffling a sequence can change it: a model needs positions."""
    return (tokens[:, 0] < tokens[:, -1]).long()


# ------------------------------------------------------------------------------------------ exercise checks
def check_sinusoidal(fn: Callable[[int, int], Tensor]) -> None:
    """Lab 6.3, exercise 1: ``fn(num_positions, dim)`` must equal :func:`sinusoidal_encoding`, whose entries
    ``tests/test_positional.py`` compares with the paper's formula; the message names the usual slip."""
    for num_positions, dim in ((20, 8), (50, 16)):
        got = fn(num_positions, dim)
        assert isinstance(got, Tensor), f"return a torch.Tensor, got {type(got).__name__}"
        got = got.detach().double()
        if tuple(got.shape) == (dim, num_positions) and num_positions != dim:
            raise AssertionError(
                f"shape {tuple(got.shape)}: return (num_positions, dim) = {(num_positions, dim)}, "
                "one row per position"
            )
        assert tuple(got.shape) == (num_positions, dim), (
            f"shape should be (num_positions, dim) = {(num_positions, dim)}, got {tuple(got.shape)}"
        )
        want = sinusoidal_encoding(num_positions, dim).double()
        if torch.allclose(got, want, atol=1e-5):
            continue
        slips = {
            "sin and cos are swapped: sin goes to the even channels 2i, cos to the odd channels 2i+1": want[
                :, [c ^ 1 for c in range(dim)]
            ],
            "the channels are blocked (all sines, then all cosines); the formula interleaves them: "
            "PE[:, 0::2] = sin, PE[:, 1::2] = cos": torch.cat([want[:, 0::2], want[:, 1::2]], dim=1),
        }
        pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
        for name, exponent in (
            ("i/d", torch.arange(dim // 2) / dim),
            ("2i/(d/2)", torch.arange(dim // 2) * 4 / dim),
        ):
            wrong = torch.zeros(num_positions, dim, dtype=torch.float64)
            freq = 10000.0 ** -exponent.double()
            wrong[:, 0::2], wrong[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
            slips[
                f"the exponent is {name}; the pair i (channels 2i and 2i+1) has frequency 1/10000^(2i/d)"
            ] = wrong
        for message, wrong in slips.items():
            if torch.allclose(got, wrong, atol=1e-5):
                raise AssertionError(message)
        bad = (got - want).abs().argmax().item()
        p, c = divmod(bad, dim)
        raise AssertionError(
            f"PE({p}, {c}) should be {'sin' if c % 2 == 0 else 'cos'}({p} / 10000^({c - c % 2}/{dim})) = "
            f"{want[p, c].item():.5f}, got {got[p, c].item():.5f}"
        )


def check_shift_pair(fn: Callable[[float, float, float, float], tuple[float, float]]) -> None:
    """Lab 6.3, exercise 2: ``fn(sin_p, cos_p, k, omega)`` must return (sin((p+k)ω), cos((p+k)ω)) for every p."""
    omega = 10000 ** (-4 / 16)
    for p in (0, 5, 33):
        for k in (1, 4, 50):
            got = fn(math.sin(p * omega), math.cos(p * omega), k, omega)
            assert isinstance(got, tuple) and len(got) == 2, "return a pair (sin((p+k)ω), cos((p+k)ω))"
            s, c = (float(v) for v in got)
            want = (math.sin((p + k) * omega), math.cos((p + k) * omega))
            if abs(s - want[0]) < 1e-6 and abs(c - want[1]) < 1e-6:
                continue
            if abs(s - math.sin((p - k) * omega)) < 1e-6 and abs(c - math.cos((p - k) * omega)) < 1e-6:
                raise AssertionError(
                    "you rotated the wrong way (to position p - k): flip the signs of the sin(kω) terms"
                )
            if abs(s - want[1]) < 1e-6 and abs(c - want[0]) < 1e-6:
                raise AssertionError("the pair is swapped: return (sin, cos) in that order")
            raise AssertionError(
                f"p={p}, k={k}: expected ({want[0]:.4f}, {want[1]:.4f}), got ({s:.4f}, {c:.4f}); use "
                "sin(a+b) = sin a cos b + cos a sin b and cos(a+b) = cos a cos b - sin a sin b with a = pω, b = kω"
            )


def check_order_label(fn: Callable[[Tensor], Tensor], needs_positions: bool) -> None:
    """Lab 6.3, exercise 3: ``fn`` labels (B, N) token sequences (N = 8 and 16, tokens 0-11) with 0/1, one label
    per sequence, both classes at least 5 % of the time; ``needs_positions`` is the student's answer to "does a
    model without positions need them for this label?", checked by shuffling each sequence: a label that a
    shuffle can change is not a function of the multiset of tokens, which is all a model without positions sees."""
    gen = torch.Generator().manual_seed(0)
    for length in (8, 16):
        tokens = torch.randint(0, 12, (2000, length), generator=gen)
        got = fn(tokens.clone())
        assert isinstance(got, Tensor) and tuple(got.shape) == (len(tokens),), (
            f"return one label per sequence: shape ({len(tokens)},), got "
            f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
        )
        assert set(got.long().unique().tolist()) <= {0, 1}, "labels are 0 or 1"
        assert torch.equal(fn(tokens[:50].clone()).long(), got[:50].long()), (
            "a sequence's label must depend on that sequence only (the first 50 got other labels on their own)"
        )
        share = got.float().mean().item()
        assert 0.05 <= share <= 0.95, (
            f"at length {length} {share:.1%} of random sequences get label 1: make both classes common (5-95 %), "
            "or a model can score well by always answering the same"
        )
        order = torch.rand(tokens.shape, generator=gen).argsort(dim=1)
        changed = (fn(tokens.gather(1, order)).long() != got.long()).float().mean().item()
        if needs_positions and changed == 0:
            raise AssertionError(
                "shuffling the tokens of a sequence never changed your label: it depends only on which tokens "
                "occur, so a model without positions can compute it (needs_positions should be False)"
            )
        if not needs_positions and changed > 0:
            raise AssertionError(
                f"shuffling the tokens changed {changed:.1%} of your labels at length {length}: the label depends "
                "on order, which a model without positions cannot see (needs_positions should be True)"
            )


def check_relative_index(fn: Callable[..., Tensor]) -> None:
    """Lab 6.3, exercise 4: ``fn(n, max_distance=m)`` must return the (n, n) offsets j - i (key minus query)
    clipped to ±m, as :func:`relative_position_index`; the rows of the bias table it indexes, 2m + 1, do not
    depend on n."""
    for n, m in ((5, 2), (32, 7)):
        got = fn(n, max_distance=m)
        assert isinstance(got, Tensor) and tuple(got.shape) == (n, n), (
            f"return an (n, n) = {(n, n)} tensor of offsets, got "
            f"{tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__}"
        )
        want = relative_position_index(n, max_distance=m)
        if torch.equal(got.long(), want):
            continue
        if torch.equal(got.long(), -want):
            raise AssertionError(
                "the sign is flipped: the offset from query i to key j is j - i (key minus query)"
            )
        if torch.equal(got.long(), relative_position_index(n)):
            raise AssertionError(
                f"the offsets are not clipped: at n={n} they reach ±{n - 1}, but the table has rows for "
                f"-{m}..{m} only; clamp to ±max_distance (that is why a longer sequence needs no new rows)"
            )
        raise AssertionError(f"n={n}, max_distance={m}: expected\n{want}\ngot\n{got}")
