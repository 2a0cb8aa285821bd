import math

import pytest
import torch

from common.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sincos_2d_encoding,
    sinusoidal_encoding,
)


def test_sinusoidal_matches_the_paper_formula_entry_by_entry():
    pe = sinusoidal_encoding(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(10, 7)


def test_2d_encoding_follows_the_formula_with_row_then_column_halves():
    # Written out: patch (r, c) of a row-major grid gets [PE_1d(r), PE_1d(c)], each half the paper's
    # interleaved sin/cos at dim D/2: PE_1d(p)[2i] = sin(p / 10000^(2i/(D/2))), [2i+1] = cos(same).
    h, w, dim = 3, 4, 16
    half = dim // 2
    pe = sincos_2d_encoding(h, w, dim)
    assert pe.shape == (h * w, dim)
    for r in range(h):
        for c in range(w):
            for i in range(half // 2):
                freq = 10000 ** (-2 * i / half)
                row = pe[r * w + c]
                assert row[2 * i].item() == pytest.approx(math.sin(r * freq), abs=1e-6)
                assert row[2 * i + 1].item() == pytest.approx(math.cos(r * freq), abs=1e-6)
                assert row[half + 2 * i].item() == pytest.approx(math.sin(c * freq), abs=1e-6)
                assert row[half + 2 * i + 1].item() == pytest.approx(math.cos(c * freq), abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_encoding(2, 2, 6)


def test_modules_add_to_input_and_learned_table_refuses_longer_sequences():
    # x + PE: the table (checked against the paper's formula above) is added to every sequence of the batch
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(SinusoidalPositionalEncoding(8)(x), x + sinusoidal_encoding(5, 8))
    learned = LearnedPositionalEmbedding(8, max_len=5)
    torch.testing.assert_close(learned(x[:, :3]), x[:, :3] + learned.table.weight[:3])
    with pytest.raises(ValueError, match="cannot extrapolate"):
        learned(torch.zeros(1, 6, 8))
