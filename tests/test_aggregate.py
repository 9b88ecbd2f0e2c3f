"""Aggregation: pooled vs per-subject means and the subject bootstrap, with hand-worked values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark.aggregate import aggregate, bootstrap_ci
from cardbench.benchmark.protocols import ANKENBRAND2021, CARDBENCH_V1, get_protocol


def _table(level):
    # subject A: three values of 1; subject B: one value of 0 and one excluded (NaN)
    return pd.DataFrame({
        "level": level, "subject": ["A", "A", "A", "B", "B"], "split": "test", "phase": "",
        "class": "LV", "dice": [1.0, 1.0, 1.0, 0.0, np.nan], "iou": [1.0, 1.0, 1.0, 0.0, np.nan],
    })


def test_subject_mean_first_vs_pooled():
    v1 = aggregate(_table("volume"), CARDBENCH_V1)
    r = v1[(v1["grouping"] == "all") & (v1["metric"] == "dice")].iloc[0]
    assert r["mean"] == pytest.approx(0.5)        # (1 + 0) / 2 subjects
    assert r["n_values"] == 4 and r["n_excluded"] == 1 and r["n_subjects"] == 2
    pooled = aggregate(_table("image"), ANKENBRAND2021)
    r = pooled[(pooled["grouping"] == "all") & (pooled["metric"] == "dice")].iloc[0]
    assert r["mean"] == pytest.approx(0.75)       # (1 + 1 + 1 + 0) / 4 values
    assert np.isnan(r["ci_low"])                  # the paper's protocol has no CI


def test_bootstrap_two_subjects_spans_both_values():
    # resampling two subjects {0, 1}: means 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4) -> 95 % interval [0, 1]
    assert bootstrap_ci(np.array([0.0, 1.0]), 2000, 1) == (0.0, 1.0)


def test_bootstrap_identical_values_has_zero_width_and_is_reproducible():
    assert bootstrap_ci(np.full(5, 0.8), 500, 3) == pytest.approx((0.8, 0.8))
    x = np.random.default_rng(0).random(12)
    from cardbench.benchmark.aggregate import clear_bootstrap_cache

    # reproducible across draws: the resample matrix is cached (lru_cache), so clear it between the two
    # calls; otherwise the second call would only read back the first call's matrix
    clear_bootstrap_cache()
    first = bootstrap_ci(x, 1000, 7)
    clear_bootstrap_cache()
    assert bootstrap_ci(x, 1000, 7) == first
    # and it is the percentile bootstrap as numpy computes it from the same seeded generator
    idx = np.random.default_rng(7).integers(0, x.size, size=(1000, x.size))
    assert first == tuple(np.quantile(x[idx].mean(axis=1), [0.025, 0.975]))
    assert bootstrap_ci(x, 1000, 8) != first  # another seed, another draw
    lo, hi = bootstrap_ci(x, 1000, 7)
    assert lo < x.mean() < hi


def test_bootstrap_needs_two_subjects():
    assert np.isnan(bootstrap_ci(np.array([0.7]), 1000, 0)[0])


def test_unknown_protocol_lists_known():
    with pytest.raises(ValueError, match="cardbench-v1"):
        get_protocol("nope")
