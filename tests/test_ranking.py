"""Rankings with their uncertainty (cardbench.benchmark.ranking): a small hand example, and the
pre-filled 7T benchmark with every expected value recomputed here independently (per-subject Dice
with plain pandas from the published confusion tables, ranks with pandas, Wilcoxon with scipy, Holm
by hand)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, wilcoxon
from typer.testing import CliRunner

import lbexpect as X
from cardbench.benchmark import ranking as R
from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.cli import app
from conftest import find_shared_data

SHARED = find_shared_data()
B_V1 = "cmr-7t__test__cardbench-v1"
B_PAPER = "cmr-7t__test__ankenbrand2021"

# hand example: 4 subjects (rows) x 3 entries A, B, C (columns), Dice (higher is better)
HAND = np.array([[0.90, 0.80, 0.70],
                 [0.90, 0.80, 0.70],
                 [0.90, 0.80, 0.70],
                 [0.20, 0.80, 0.70]])


def test_hand_example_two_methods_differ():
    # aggregate-then-rank: means A 0.725, B 0.80, C 0.70 -> B 1, A 2, C 3
    assert R.rank_entries(HAND, +1, "aggregate-then-rank").tolist() == [2, 1, 3]
    # rank-then-aggregate: per-subject ranks A 1,1,1,3 (mean 1.5); B 2,2,2,1 (1.75); C 3,3,3,2 (2.75)
    assert R.rank_entries(HAND, +1, "rank-then-aggregate").tolist() == [1, 2, 3]
    # lower is better flips the order; closer to 0 ranks |x|
    assert R.rank_entries(HAND, -1).tolist() == [2, 3, 1]
    assert R.rank_entries(np.array([[-3.0, 1.0, 2.0]]), 0).tolist() == [3, 1, 2]
    # ties share the best rank ("min"), like pandas
    keys = np.array([0.5, 0.2, 0.5, 0.1])
    assert R.min_rank(keys).tolist() == pd.Series(keys).rank(method="min").astype(int).tolist() == [3, 2, 3, 1]
    # pooled aggregation: weights are the number of values per subject
    w = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0.1, 1, 1]])
    # A = (0.9*3 + 0.2*0.1) / 3.1 = 0.8774 > B 0.80 > C 0.70
    assert R.rank_entries(HAND, +1, weights=w).tolist() == [1, 2, 3]
    with pytest.raises(R.RankingError, match="unknown ranking method"):
        R.rank_entries(HAND, +1, "median-then-rank")


def test_holm_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    assert R.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(R.holm(p)[4])
    assert R.holm(np.array([0.6, 0.9])) == pytest.approx([1.0, 1.0])


def test_pairwise_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    v = rng.uniform(0.7, 0.95, size=(9, 3))
    v[:, 0] += 0.05  # A tends to be better
    p = R.pairwise_wilcoxon(v, +1)
    for i in range(3):
        for j in range(3):
            if i != j:
                assert p[i, j] == pytest.approx(wilcoxon(v[:, i], v[:, j], alternative="greater").pvalue)
    assert np.isnan(np.diag(p)).all()
    # lower is better: "better" means smaller values
    pl = R.pairwise_wilcoxon(v, -1)
    assert pl[0, 1] == pytest.approx(wilcoxon(v[:, 0], v[:, 1], alternative="less").pvalue)
    # identical entries: no evidence either way
    same = R.pairwise_wilcoxon(np.c_[v[:, 0], v[:, 0]], +1)
    assert same[0, 1] == same[1, 0] == 1.0


def _subject_dice(entry: str, cls: str) -> pd.Series:
    return X.subject_level(X.seven_t(entry, SHARED), cls)[1]


@pytest.mark.parametrize("method", R.METHODS)
def test_7t_rank_uncertainty_recomputed_independently(prefilled_dir, method):
    lb = Leaderboard(prefilled_dir)
    ru = R.rank_uncertainty(lb, B_V1, "dice_lv", method=method)
    # per-subject Dice straight from the published confusion tables
    vals = pd.DataFrame({e: _subject_dice(e, "LV") for e in X.TABLES})
    vals.index = vals.index.astype(str)
    assert sorted(ru.subjects) == sorted(vals.index)
    vals = vals.loc[ru.subjects, list(ru.summary["entry"])]
    assert np.allclose(ru.values.to_numpy(), vals.to_numpy(), atol=1e-9)

    def ranks(df: pd.DataFrame) -> pd.Series:
        if method == "aggregate-then-rank":
            return (-df.mean(axis=0)).rank(method="min")
        return df.rank(axis=1, ascending=False, method="min").mean(axis=0).rank(method="min")
    full = ranks(vals)
    assert ru.summary["rank"].tolist() == full.astype(int).tolist()
    if method == "aggregate-then-rank":  # the leaderboard's own order
        ranked = lb.ranked(B_V1, "dice_lv")
        assert dict(zip(ru.summary["entry"], ru.summary["rank"])) == dict(zip(ranked["entry"], ranked["rank"]))
    # the protocol's resamples (2000, seed 20210421), drawn here with numpy, ranked with pandas
    proto = json.loads((prefilled_dir / B_V1 / "benchmark.json").read_text())["protocol"]["bootstrap"]
    idx = np.random.default_rng(proto["seed"]).integers(0, len(vals), size=(proto["resamples"], len(vals)))
    boot = np.array([ranks(vals.iloc[i].reset_index(drop=True)).to_numpy() for i in idx])
    assert ru.boot_ranks.shape == boot.shape and (ru.boot_ranks == boot).all()
    for j, e in enumerate(ru.summary["entry"]):
        row = ru.summary.iloc[j]
        assert row["median_rank"] == np.median(boot[:, j])
        assert (row["rank_low"], row["rank_high"]) == tuple(np.percentile(boot[:, j], [2.5, 97.5]))
    taus = [kendalltau(full.to_numpy(), b).statistic for b in boot]
    assert ru.kendall_tau_median == pytest.approx(np.nanmedian(taus))
    freq = ru.rank_frequencies()
    assert freq.groupby("entry")["frequency"].sum().round(12).eq(1).all()
    # pairwise tests: scipy's Wilcoxon on the subject values, Holm by hand over the 42 ordered pairs
    names = list(ru.summary["entry"])
    pairs = [(a, b) for a in names for b in names if a != b]
    p = np.array([1.0 if (vals[a] == vals[b]).all() else wilcoxon(vals[a], vals[b], alternative="greater").pvalue
                  for a, b in pairs])
    order = np.argsort(p, kind="stable")
    adj = np.empty_like(p)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        adj[i] = running
    for (a, b), pv, pa in zip(pairs, p, adj):
        assert ru.pvalues.loc[a, b] == pytest.approx(pv)
        assert ru.pvalues_holm.loc[a, b] == pytest.approx(pa)
        assert bool(ru.significant.loc[a, b]) == (pa <= 0.05)
    # 3 subjects: the smallest one-sided exact p is 1/8, so nothing is significant
    assert ru.pvalues.min().min() == pytest.approx(0.125) and not ru.significant.to_numpy().any()


def test_paper_protocol_pooled_ranking_matches_leaderboard(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    ru = R.rank_uncertainty(lb, B_PAPER, "dice_my", n_boot=50)
    exp = {e: X.paper_protocol(X.seven_t(e, SHARED), "MY") for e in X.TABLES}  # mean over all images
    got = dict(zip(ru.summary["entry"], ru.summary["value"]))
    for e in X.TABLES:
        assert got[e] == pytest.approx(exp[e], abs=1e-9)
    assert ru.summary["entry"].tolist() == sorted(exp, key=lambda e: -exp[e])
    assert ru.n_boot == 50 and ru.boot_ranks.shape == (50, 7)


def test_errors_are_one_line(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    with pytest.raises(R.RankingError, match="no per-subject values for hd95"):
        R.rank_uncertainty(lb, B_V1, "hd95_lv")
    with pytest.raises(R.RankingError, match="clinical agreement"):
        R.rank_uncertainty(lb, B_V1, "mae_lvef")
    with pytest.raises(R.RankingError, match="fewer than 2 entries"):
        R.rank_uncertainty(lb, "kaggle-dsb-manual-masks__all__cardbench-v1", "dice_lv")


def test_cli_show_ranks_prints_rank_intervals(prefilled_dir):
    r = CliRunner().invoke(app, ["leaderboard", "show", str(prefilled_dir), "--ranks", "-b", B_V1,
                                 "--format", "csv"])
    assert r.exit_code == 0, r.output
    from io import StringIO

    df = pd.read_csv(StringIO(r.stdout))
    ru = R.rank_uncertainty(Leaderboard(prefilled_dir), B_V1, "dice_lv")
    assert df["entry"].tolist() == ru.summary["entry"].tolist()
    assert df["rank_low"].tolist() == ru.summary["rank_low"].tolist()
    r = CliRunner().invoke(app, ["leaderboard", "show", str(prefilled_dir), "--ranks", "-b", B_V1],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "95 % rank interval" in r.stdout and "Kendall" in r.stdout
    r = CliRunner().invoke(app, ["leaderboard", "show", str(prefilled_dir), "--ranks", "--ranking", "nope"])
    assert r.exit_code == 2 and "unknown ranking method" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["leaderboard", "show", str(prefilled_dir), "--ranks", "-b", B_V1, "-m", "hd95_lv"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_dashboard_shows_blob_plot_and_heatmap(prefilled_dir, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    import shutil

    from streamlit.testing.v1 import AppTest

    from cardbench.benchmark import leaderboard as L

    dst = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, dst)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(dst))
    app_py = str(__import__("pathlib").Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")
    at = AppTest.from_file(app_py, default_timeout=120)
    at.query_params["benchmark"] = B_V1
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    heads = [s.value for s in at.subheader]
    assert "Ranking uncertainty" in heads
    tables = [d.value for d in at.dataframe if "95 % rank interval" in d.value.columns]
    assert tables and tables[0]["entry"].tolist()[0] == "second_observer"
    at.radio(key="lb_rank_method").set_value("rank-then-aggregate").run()
    assert not at.exception
    tables = [d.value for d in at.dataframe if "mean subject rank" in d.value.columns]
    assert tables


def test_kendall_tau_b_equals_scipy_with_ties_and_all_tied():
    """The vectorised tau-b of the bootstrap equals scipy.stats.kendalltau's statistic to the bit,
    ties included; a ranking where every entry ties has no tau (NaN), as in scipy."""
    from cardbench.benchmark.ranking import kendall_tau_b

    rng = np.random.default_rng(3)
    ref = np.array([1, 2, 2, 4, 5])
    boot = np.vstack([rng.integers(1, 6, (200, 5)), [[3, 3, 3, 3, 3]], [[5, 4, 3, 2, 1]], [[1, 2, 3, 4, 5]]])
    got = kendall_tau_b(ref, boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.array([kendalltau(ref, b).statistic for b in boot])
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[-3]) and got[-1] == want[-1] < 1.0  # a tie in the reference: tau-b below 1
    # by hand, no ties: (1, 2, 3) against (1, 3, 2): 2 concordant, 1 discordant pair -> (2 - 1) / 3
    assert kendall_tau_b(np.array([1, 2, 3]), np.array([[1, 3, 2]]))[0] == pytest.approx(1 / 3)
