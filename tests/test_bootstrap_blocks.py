"""Bootstrap CIs in blocks of resamples: the same values as the dense ``n_boot x subjects``
computation (drawn here directly with numpy), and memory bounded for large cohorts."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cardbench.benchmark import aggregate as agg
from cardbench.benchmark.stats import agreement, bootstrap_stat_ci


def _dense_ci(x, n_boot, seed):
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    return tuple(float(v) for v in np.quantile(x[idx].mean(axis=1), [0.025, 0.975]))


@pytest.fixture(params=["cached", "blocks"])
def mode(request, monkeypatch):
    if request.param == "blocks":  # no cache, blocks of 3 resample rows or fewer
        monkeypatch.setattr(agg, "CACHE_BYTES", 0)
        monkeypatch.setattr(agg, "BLOCK_VALUES", 3 * 37)
    agg._cached_indices.cache_clear()
    return request.param


@pytest.mark.parametrize("n,seed", [(2, 0), (37, 20210421), (500, 7)])
def test_ci_equals_dense_resampling(mode, n, seed):
    x = np.random.default_rng(seed + 1).gamma(2.0, 1.0, n)
    assert agg.bootstrap_ci(x, 2000, seed) == _dense_ci(x, 2000, seed)


def test_stat_ci_and_agreement_equal_dense(mode):
    rng = np.random.default_rng(3)
    r = rng.normal(120, 20, 37)
    p = r + rng.normal(2, 5, 37)
    idx = np.random.default_rng(11).integers(0, 37, size=(2000, 37))
    sd = (p - r)[idx].std(axis=1, ddof=1)
    want = tuple(float(v) for v in np.quantile(sd, [0.025, 0.975]))
    assert bootstrap_stat_ci(lambda d: d.std(axis=1, ddof=1), [p - r], 2000, 11) == want
    a = agreement(r, p, n_boot=2000, seed=11)
    assert (a["sd_diff_ci_low"], a["sd_diff_ci_high"]) == want
    d = (p - r)[idx]
    loa = np.quantile(d.mean(axis=1) + 1.96 * d.std(axis=1, ddof=1), [0.025, 0.975])
    assert a["loa_high_ci_low"] == pytest.approx(loa[0], rel=0, abs=1e-12)
    assert a["loa_high_ci_high"] == pytest.approx(loa[1], rel=0, abs=1e-12)


def test_large_cohort_memory_is_bounded():
    n, n_boot = 100_000, 200  # dense: 160 MB of int64 indices plus 160 MB of resampled values
    x = np.random.default_rng(0).random(n)
    agg._cached_indices.cache_clear()
    tracemalloc.start()
    lo, hi = agg.bootstrap_ci(x, n_boot, 5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 80e6, peak
    assert lo < x.mean() < hi
    # and the first rows equal the dense draw (checked on a slice of the stream)
    first = next(agg.bootstrap_blocks(n, n_boot, 5))
    dense_head = np.random.default_rng(5).integers(0, n, size=(first.shape[0], n))
    np.testing.assert_array_equal(first, dense_head)
