"""Lab 6.3's exercises (positional encoding): the sinusoidal table, a shift by rotation, an order task of one's own,
relative offsets.

Self-checks: :func:`check_sinusoidal`, :func:`check_shift_pair`, :func:`check_order_label`,
:func:`check_relative_index`. The references of exercises 1 and 4 are concepts the lab and the checks use:
:func:`common.positional.sinusoidal_encoding` and :func:`common.positional.relative_position_index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from common.exercises import Exercise
from common.positional import relative_position_index, sinusoidal_encoding


def check_sinusoidal(fn: Callable[[int, int], Tensor]) -> None:
    """Exercise 1: ``fn(num_positions, dim)`` must equal :func:`common.positional.sinusoidal_encoding`, whose entries
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
    """Exercise 2: ``fn(sin_p, cos_p, k, omega)`` must return (sin((p+k)ω), cos((p+k)ω)) for every p."""
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
    """Exercise 3: ``fn`` labels (B, N) token sequences (N = 8 and 16, tokens 0-11) with 0/1, one label
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
    """Exercise 4: ``fn(n, max_distance=m)`` must return the (n, n) offsets j - i (key minus query)
    clipped to ±m, as :func:`common.positional.relative_position_index`; the rows of the bias table it indexes, 2m + 1, do not
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


### BEGIN SOLUTION
def reference_shift_pair(sin_p: float, cos_p: float, k: float, omega: float) -> tuple[float, float]:
    """One (sin, cos) channel pair of frequency ``omega`` moved from position p to p + k without knowing p:
    the 2 x 2 block of :func:`common.positional.sinusoidal_rotation`, i.e. (sin((p+k)ω), cos((p+k)ω))."""
    ck, sk = math.cos(k * omega), math.sin(k * omega)
    return ck * sin_p + sk * cos_p, -sk * sin_p + ck * cos_p


def reference_first_smaller_than_last(tokens: Tensor) -> Tensor:
    """A label for an order task: 1 where a sequence's first token is smaller than its last one, else 0.
    ``tokens`` is (B, N); returns (B,) int64. Shuffling a sequence can change it: a model needs positions."""
    return (tokens[:, 0] < tokens[:, -1]).long()


### END SOLUTION


### BEGIN HIDDEN TESTS
def _described(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _formula_table(num_positions: int, dim: int) -> Tensor:
    # the paper's formula entry by entry with Python's math
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    for pos in range(num_positions):
        for i in range(dim // 2):
            table[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / dim))
            table[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / dim))
    return table


def _sinusoidal_other_sizes(ns: dict) -> None:
    # one position, one pair; an odd number of pairs (dim 6, 34); 300 positions
    for num_positions, dim in ((1, 2), (7, 6), (300, 34)):
        got = ns["my_sinusoidal"](num_positions, dim)
        assert isinstance(got, Tensor) and tuple(got.shape) == (num_positions, dim), (
            f"({num_positions}, {dim}): return a (num_positions, dim) tensor, got {_described(got)}"
        )
        assert torch.allclose(got.detach().double(), _formula_table(num_positions, dim), atol=1e-4), (
            f"({num_positions}, {dim}): differs from sin(pos / 10000^(2i/d)), cos(...); take the sizes from the "
            "arguments (the number of pairs is dim // 2, which may be odd)"
        )


def _shift_pair_backwards_and_other_frequencies(ns: dict) -> None:
    # negative and zero offsets, fast and slow frequencies
    for omega in (1.0, 0.01):
        for p in (2, 100):
            for k in (-3, -40, 0):
                s, c = (
                    float(v) for v in ns["my_shift_pair"](math.sin(p * omega), math.cos(p * omega), k, omega)
                )
                want = math.sin((p + k) * omega), math.cos((p + k) * omega)
                assert abs(s - want[0]) < 1e-6 and abs(c - want[1]) < 1e-6, (
                    f"p={p}, k={k}, ω={omega}: expected ({want[0]:.4f}, {want[1]:.4f}), got ({s:.4f}, {c:.4f}); "
                    "the rotation by kω must work for any k, negative and 0 included"
                )


def _labels_are_class_targets(ns: dict) -> None:
    # section 3's loop trains on TensorDataset(x, my_label(x)) with a cross-entropy loss: int64 class indices
    tokens = torch.randint(0, 12, (64, 8), generator=torch.Generator().manual_seed(31))
    labels = ns["my_label"](tokens)
    try:
        F.cross_entropy(torch.zeros(len(tokens), 2), labels)
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        raise AssertionError(
            f"the labels cannot be class targets of F.cross_entropy ({type(err).__name__}): return int64 labels, "
            "e.g. (...).long()"
        ) from None


def _relative_index_edges_and_dtype(ns: dict) -> None:
    # offsets index the rows of RelativePositionBias's table: integers; max_distance = 0 clips everything
    for n, m in ((1, 0), (4, 0), (4, 10), (9, 3)):
        got = ns["my_relative_index"](n, max_distance=m)
        want = torch.tensor([[max(-m, min(m, j - i)) for j in range(n)] for i in range(n)])
        assert isinstance(got, Tensor) and not got.is_floating_point(), (
            "return integer offsets (torch.arange gives int64): a float tensor cannot index the bias table's rows"
        )
        assert tuple(got.shape) == (n, n) and torch.equal(got.long(), want), (
            f"n={n}, max_distance={m}: expected {want.tolist()}, got {got.tolist()}"
            + (
                "; max_distance = 0 clips every offset to 0: do not treat 0 as 'no clipping'"
                if m == 0
                else ""
            )
        )


GRADING = (
    Exercise(
        "lab6.3-ex1",
        "Exercise 1: sinusoidal table",
        ("my_sinusoidal",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_sinusoidal(ns["my_sinusoidal"])),
            ("other sizes", _sinusoidal_other_sizes),
        ),
    ),
    Exercise(
        "lab6.3-ex2",
        "Exercise 2: shift by rotation",
        ("my_shift_pair",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_shift_pair(ns["my_shift_pair"])),
            ("negative offsets, other frequencies", _shift_pair_backwards_and_other_frequencies),
        ),
    ),
    Exercise(
        "lab6.3-ex3",
        "Exercise 3: your own order task",
        ("my_label", "MY_LABEL_NEEDS_POSITIONS"),
        points=2,
        cases=(
            ("self-check", lambda ns: check_order_label(ns["my_label"], ns["MY_LABEL_NEEDS_POSITIONS"])),
            ("labels usable as class targets", _labels_are_class_targets),
        ),
    ),
    Exercise(
        "lab6.3-ex4",
        "Exercise 4: relative offsets",
        ("my_relative_index",),
        points=2,
        cases=(
            ("self-check", lambda ns: check_relative_index(ns["my_relative_index"])),
            ("edge sizes, integer offsets", _relative_index_edges_and_dtype),
        ),
    ),
)
### END HIDDEN TESTS
