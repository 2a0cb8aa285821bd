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


def test_2d_encoding_halves_encode_row_and_column():
    pe = sincos_2d_encoding(3, 4, 16).reshape(3, 4, 16)
    row_part, col_part = pe[..., :8], pe[..., 8:]
    assert torch.allclose(row_part[:, 0], row_part[:, 3])  # same row -> same first half
    assert torch.allclose(col_part[0], col_part[2])  # same column -> same second half
    torch.testing.assert_close(row_part[2, 0], sinusoidal_encoding(3, 8)[2])


def test_modules_add_to_input_and_learned_table_refuses_longer_sequences():
    x = torch.zeros(2, 5, 8)
    torch.testing.assert_close(SinusoidalPositionalEncoding(8)(x)[0], sinusoidal_encoding(5, 8))
    learned = LearnedPositionalEmbedding(8, max_len=5)
    torch.testing.assert_close(learned(x)[1], learned.table.weight)
    with pytest.raises(ValueError, match="cannot extrapolate"):
        learned(torch.zeros(1, 6, 8))
