"""Agreement statistics and paired comparison; expected values worked out by hand or taken from scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cardbench.benchmark.aggregate import bootstrap_ci
from cardbench.benchmark.stats import (
    agreement, agreement_table, bland_altman, bootstrap_stat_ci, compare_results, paired_wilcoxon,
)


def test_bland_altman_hand_worked():
    """ref 10, 20, 30, 40; pred 12, 19, 33, 40.

    d = 2, -1, 3, 0 -> bias 1; deviations 1, -2, 2, -1 -> SD = sqrt(10 / 3) = 1.8257;
    LoA 1 -/+ 1.96 x 1.8257; MAE (2 + 1 + 3 + 0) / 4 = 1.5.
    r: ref deviations -15, -5, 5, 15; pred deviations -14, -7, 7, 14;
    r = 490 / sqrt(500 x 490) = sqrt(0.98).
    """
    ba = bland_altman([10, 20, 30, 40], [12, 19, 33, 40])
    sd = math.sqrt(10 / 3)
    assert ba["n"] == 4
    assert ba["bias"] == pytest.approx(1.0)
    assert ba["sd_diff"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(1 - 1.96 * sd)
    assert ba["loa_high"] == pytest.approx(1 + 1.96 * sd)
    assert ba["mae"] == pytest.approx(1.5)
    assert ba["pearson_r"] == pytest.approx(math.sqrt(0.98))
    assert ba["ref_mean"] == 25 and ba["pred_mean"] == 26
    with pytest.raises(ValueError, match="finite"):
        bland_altman([1, np.nan], [1, 2])


def test_agreement_drops_nan_pairs_and_counts_them():
    a = agreement([10, 20, 30, 40, np.nan], [12, 19, 33, 40, 5], n_boot=500, seed=1)
    assert a["n_subjects"] == 4 and a["n_excluded"] == 1
    assert a["bias"] == pytest.approx(1.0)
    for s in ("bias", "sd_diff", "loa_low", "loa_high", "mae", "pearson_r"):
        assert a[f"{s}_ci_low"] <= a[f"{s}_ci_high"]
    # the bias CI is the bootstrap CI of the mean difference, exactly as aggregate.bootstrap_ci computes it
    assert (a["bias_ci_low"], a["bias_ci_high"]) == bootstrap_ci(np.array([2, -1, 3, 0.0]), 500, 1)
    assert (a["mae_ci_low"], a["mae_ci_high"]) == bootstrap_ci(np.array([2, 1, 3, 0.0]), 500, 1)


def test_generic_bootstrap_matches_bootstrap_ci_for_the_mean():
    x = np.array([0.91, 0.85, 0.88, 0.79, 0.95, 0.83])
    got = bootstrap_stat_ci(lambda v: v.mean(axis=1), [x], 2000, 20210421)
    assert got == pytest.approx(bootstrap_ci(x, 2000, 20210421), abs=1e-12)
    # SD CI from the same resamples, recomputed here with numpy directly
    idx = np.random.default_rng(7).integers(0, x.size, size=(300, x.size))
    sds = np.array([x[i].std(ddof=1) for i in idx])
    assert bootstrap_stat_ci(lambda v: v.std(axis=1, ddof=1), [x], 300, 7) == \
        pytest.approx(tuple(np.quantile(sds, [0.025, 0.975])))
    assert bootstrap_stat_ci(lambda v: v.mean(axis=1), [x[:1]], 100, 1) == (pytest.approx(np.nan, nan_ok=True),) * 2


def test_pearson_bootstrap_matches_scipy_per_resample():
    rng = np.random.default_rng(3)
    r = rng.normal(150, 30, 12)
    p = r + rng.normal(0, 10, 12)
    idx = np.random.default_rng(11).integers(0, 12, size=(400, 12))
    rs = []
    for i in idx:
        if np.ptp(r[i]) > 0 and np.ptp(p[i]) > 0:
            rs.append(sps.pearsonr(r[i], p[i]).statistic)
    expected = tuple(np.quantile(rs, [0.025, 0.975]))
    from cardbench.benchmark.stats import _pearson_rows

    assert bootstrap_stat_ci(_pearson_rows, [r, p], 400, 11) == pytest.approx(expected, abs=1e-9)


def test_agreement_table_groups_by_split():
    t = pd.DataFrame({"subject": list("abcd"), "split": ["train", "train", "test", "test"],
                      "index": "LVEF", "unit": "%", "ref": [60, 50, 40, 30.0], "pred": [62, 49, 43, 30.0]})
    at = agreement_table(t, n_boot=100, seed=0)
    assert list(zip(at["grouping"], at["group"])) == [("all", "all"), ("split", "test"), ("split", "train")]
    tr = at[at["group"] == "train"].iloc[0]
    assert tr["bias"] == pytest.approx((2 - 1) / 2) and tr["n_subjects"] == 2


def test_wilcoxon_hand_worked_and_against_scipy():
    """a - b = 1, 2, 3, -4, 5: ranks 1..5, W- = 4. Exact two-sided p = 2 x #{subsets of 1..5 with sum <= 4} / 32.

    Subsets with sum <= 4: {}, {1}, {2}, {3}, {4}, {1,2}, {1,3} -> 7, so p = 14 / 32 = 0.4375.
    """
    a = pd.Series([1.0, 2, 3, 0, 5, 7], index=list("uvwxyz"))
    b = pd.Series([0.0, 0, 0, 4, 0, 7], index=list("uvwxyz"))
    c = paired_wilcoxon(a, b, higher_is_better=True)
    assert c.statistic == 4 and c.pvalue == pytest.approx(14 / 32)
    assert (c.wins_a, c.ties, c.wins_b) == (4, 1, 1)
    assert c.n_subjects == 6 and c.n_nonzero == 5
    ref = sps.wilcoxon(a.to_numpy(), b.to_numpy())
    assert (c.statistic, c.pvalue) == (ref.statistic, ref.pvalue)
    # lower is better: the same differences count as wins for B
    c2 = paired_wilcoxon(a, b, higher_is_better=False)
    assert (c2.wins_a, c2.ties, c2.wins_b) == (1, 1, 4)


def test_wilcoxon_unmatched_subjects_and_identical_inputs():
    a = pd.Series([0.9, 0.8, np.nan], index=["s1", "s2", "s3"])
    b = pd.Series([0.9, 0.8, 0.7, 0.6], index=["s1", "s2", "s3", "s4"])
    c = paired_wilcoxon(a, b)
    assert c.excluded == ["s3", "s4"] and c.n_subjects == 2
    assert c.ties == 2 and math.isnan(c.pvalue)  # every difference is 0: no test


def test_compare_result_folders(tmp_path):
    """Two submissions on 8 subjects: B is A with a worse LV on 6 of them."""
    from cardbench.benchmark import score
    from helpers import save_nifti

    rng = np.random.default_rng(5)
    ref_dir = tmp_path / "ref"
    subjects = [f"s{i}" for i in range(8)]
    lines = ["subject,split,ed_frame,es_frame"]
    for i, s in enumerate(subjects):
        lab = np.zeros((12, 12, 2), np.uint8)
        lab[2:10, 2:10, :] = 2
        lab[4:8, 4:8, :] = 1
        save_nifti(ref_dir / "labels" / s / f"{s}_frame01.nii.gz", lab)
        save_nifti(tmp_path / "A" / f"{s}_frame01.nii.gz", lab)
        worse = lab.copy()
        if i < 6:
            worse[4:4 + int(rng.integers(1, 3)), 4:8, 0] = 2  # lose 1 or 2 rows of LV
        save_nifti(tmp_path / "B" / f"{s}_frame01.nii.gz", worse)
        lines.append(f"{s},test,1,")
    (ref_dir / "subjects.csv").write_text("\n".join(lines) + "\n")
    ra = score(tmp_path / "A", ref_dir, progress=False).write(tmp_path / "ra")
    rb = score(tmp_path / "B", ref_dir, progress=False).write(tmp_path / "rb")
    comp, info = compare_results(ra, rb, metric="dice", cls="LV")
    pa = pd.read_csv(ra / "per_subject.csv", dtype={"subject": str})
    pb = pd.read_csv(rb / "per_subject.csv", dtype={"subject": str})
    sel = lambda p: p[(p["metric"] == "dice") & (p["class"] == "LV")].set_index("subject")["mean"]  # noqa: E731
    da, db = sel(pa), sel(pb)
    assert (comp.wins_a, comp.ties, comp.wins_b) == (6, 2, 0)
    expected = sps.wilcoxon(da.to_numpy(), db.reindex(da.index).to_numpy())
    assert comp.pvalue == pytest.approx(expected.pvalue) and comp.statistic == expected.statistic
    assert info["protocol"] == "cardbench-v1 v1.0"
    with pytest.raises(ValueError, match="unknown metric"):
        compare_results(ra, rb, metric="nope")
    with pytest.raises(ValueError, match="class"):
        compare_results(ra, rb, metric="dice", cls="LA")
    rc = score(tmp_path / "B", ref_dir, protocol="ankenbrand2021", progress=False).write(tmp_path / "rc")
    with pytest.raises(ValueError, match="protocols differ"):
        compare_results(ra, rc)


def test_compare_cli(tmp_path):
    """`cardbench compare A B`: the same subjects, A identical to the reference, B with one LV row lost."""
    from typer.testing import CliRunner

    from cardbench.benchmark import score
    from cardbench.cli import app
    from helpers import save_nifti

    ref = tmp_path / "ref"
    lab = np.zeros((8, 8, 1), np.uint8)
    lab[2:6, 2:6, 0] = 1
    worse = lab.copy()
    worse[2, 2:6, 0] = 0  # 12 of 16 voxels: Dice 24 / 28
    for s in ("a", "b", "c"):
        save_nifti(ref / "labels" / s / f"{s}_frame01.nii.gz", lab)
        save_nifti(tmp_path / "A" / f"{s}_frame01.nii.gz", lab)
        save_nifti(tmp_path / "B" / f"{s}_frame01.nii.gz", worse)
    ra = score(tmp_path / "A", ref, classes=["LV"], progress=False).write(tmp_path / "ra")
    rb = score(tmp_path / "B", ref, classes=["LV"], progress=False).write(tmp_path / "rb")
    r = CliRunner().invoke(app, ["compare", str(ra), str(rb), "--metric", "dice", "--class", "LV", "--json"])
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout)
    assert (out["wins_a"], out["ties"], out["wins_b"]) == (3, 0, 0)
    assert out["mean_diff"] == pytest.approx(1 - 24 / 28, rel=1e-5)  # per_subject.csv keeps 6 digits
    # scipy: three equal positive differences, exact two-sided p = 2 / 2^3
    assert out["pvalue"] == pytest.approx(sps.wilcoxon([4 / 28] * 3).pvalue) == pytest.approx(0.25)
    r = CliRunner().invoke(app, ["compare", str(ra), str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a result folder" in r.output
