import numpy as np
import pytest
from scipy import stats

from common.statistics import paired_difference


def test_matches_scipy_paired_t_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5), rng.normal(size=5) + 0.3
    r = paired_difference(a, b)
    assert r.n == 5 and r.mean == pytest.approx(np.mean(a - b))
    assert r.std_error == pytest.approx(stats.sem(a - b))
    assert r.t == pytest.approx(stats.ttest_rel(a, b).statistic)


def test_pairing_removes_shared_seed_noise():
    # Large seed-to-seed spread shared by both, a small constant gap: unpaired stds overlap, the pair is real.
    shared = np.array([0.1, 0.5, 0.9])
    r = paired_difference(shared + 0.01, shared)
    assert r.real and r.mean == pytest.approx(0.01, abs=1e-12) and r.t > 1e6
    assert "real" in str(r) and "3 paired seeds" in str(r)
    assert not paired_difference([1.0, 2.0, 3.0], [1.5, 1.5, 3.0]).real
    same = paired_difference(
        [1.0, 3.0], [0.0, 2.0]
    )  # both differences exactly 1.0: s.e. 0, infinitely many s.e.
    assert same.std_error == 0.0 and same.t == float("inf") and same.real


def test_bad_input_says_what_to_change():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1], [2])
