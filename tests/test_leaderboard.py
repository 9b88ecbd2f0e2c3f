"""The leaderboard store: pre-fill with the published entries (values checked against an independent
pandas computation from the published confusion tables), atomic writes (a failed or killed write
leaves the previous state), ranking, remove, export, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lbexpect as X
from cardbench.benchmark.leaderboard import store as L  # the module whose _write_entry Leaderboard.add calls
from cardbench.benchmark.leaderboard import Leaderboard, LeaderboardError, parse_metric, rank_table
from cardbench.cli import app
from conftest import find_shared_data

SHARED = find_shared_data()
B_PAPER = "cmr-7t__test__ankenbrand2021"
B_V1 = "cmr-7t__test__cardbench-v1"
B_KAGGLE = "kaggle-dsb-manual-masks__all__ankenbrand2021"


@pytest.fixture()
def lb(prefilled_dir, tmp_path) -> Leaderboard:
    """A private copy of the pre-filled leaderboard."""
    dst = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, dst)
    return Leaderboard(dst)


def _summary_bytes(lb: Leaderboard, bench: str, name: str) -> bytes:
    return (lb.root / bench / "entries" / name / "summary.json").read_bytes()


def _hidden(lb: Leaderboard, bench: str) -> list[str]:
    return sorted(n for n in os.listdir(lb.root / bench / "entries") if n.startswith("."))


# ---------------------------------------------------------------------------------------------
# pre-filled published entries


def test_prefill_creates_the_published_benchmarks(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    assert lb.benchmark_ids() == sorted([B_PAPER, B_V1, B_KAGGLE, "kaggle-dsb-manual-masks__all__cardbench-v1"])
    for b in (B_PAPER, B_V1):
        assert lb.entry_names(b) == sorted(X.TABLES)
    assert lb.entry_names(B_KAGGLE) == ["ukbb_cardiac-labels"]
    marker = json.loads((prefilled_dir / L.MARKER).read_text())
    assert set(marker["prefilled"]) == set(L.PREFILL_SOURCES)


def test_paper_protocol_values_and_ranking_match_pandas(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    ranked = lb.ranked(B_PAPER, "dice_lv")
    exp = {e: X.paper_protocol(X.seven_t(e, SHARED), "LV") for e in X.TABLES}
    exp_my = {e: X.paper_protocol(X.seven_t(e, SHARED), "MY") for e in X.TABLES}
    got = dict(zip(ranked["entry"], ranked["dice_LV"]))
    for e in X.TABLES:
        assert got[e] == pytest.approx(exp[e], abs=1e-9)
        assert dict(zip(ranked["entry"], ranked["dice_MY"]))[e] == pytest.approx(exp_my[e], abs=1e-9)
        # the paper's own numbers, at its 3 decimals
        assert round(exp[e], 3) == X.PAPER[e][0] and round(exp_my[e], 3) == X.PAPER[e][1]
    assert ranked["entry"].tolist() == sorted(exp, key=lambda e: -exp[e])
    assert ranked["rank"].tolist() == list(range(1, 8))
    # the paper's value is carried next to the recomputed one, and no CI under this protocol
    assert dict(zip(ranked["entry"], ranked["paper_dice_LV"])) == {e: X.PAPER[e][0] for e in X.TABLES}
    assert ranked["dice_LV_ci_low"].isna().all() and not ranked.attrs["has_ci"]
    assert set(ranked["n_values"]) == {len(X.seven_t("base", SHARED))}


def test_cardbench_v1_values_and_cis(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    ranked = lb.ranked(B_V1, "dice_my").set_index("entry")
    assert ranked.attrs["has_ci"]
    for e in X.TABLES:
        df = X.seven_t(e, SHARED)
        for cls in ("LV", "MY"):
            mean, sm = X.subject_level(df, cls)
            r = ranked.loc[e]
            assert r[f"dice_{cls}"] == pytest.approx(mean, abs=1e-9)
            lo, hi = r[f"dice_{cls}_ci_low"], r[f"dice_{cls}_ci_high"]
            # a percentile bootstrap of the mean of subject means lies within their range
            assert sm.min() - 1e-12 <= lo <= hi <= sm.max() + 1e-12
        assert ranked.loc[e, "n_subjects"] == 3


def test_ed_es_group_ranking(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    ranked = lb.ranked(B_V1, "dice_lv_es").set_index("entry")
    # ES frames of the test volunteers from the published esed_frames.tsv, read independently
    esed = X.read_table("cmr-seg-tl/analysis/7T/esed_frames.tsv", SHARED)
    esed["Id"] = esed["Id"].astype(str)
    es_frame = dict(zip(esed["Id"], esed["es"]))
    v = X.volume_dice(X.seven_t("base", SHARED), "LV")
    v = v[[es_frame.get(s) == f for s, f in zip(v["subject"], v["frame"])]]
    assert ranked.loc["base", "dice_LV"] == pytest.approx(v.groupby("subject")["dice"].mean().mean(), abs=1e-9)
    assert ranked.attrs["group"] == "ES"


def test_label_quality_entry(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    df = X.read_table(X.KAGGLE, SHARED)
    r = lb.ranked(B_KAGGLE, "dice_lv")
    assert r["dice_LV"].iloc[0] == pytest.approx(X.image_dice(df, "LV").mean(), abs=1e-9)
    assert r["dice_MY"].iloc[0] == pytest.approx(X.image_dice(df, "MY").mean(), abs=1e-9)
    assert r["n_values"].iloc[0] == len(df) == 816


def test_prefill_runs_once_and_removed_entries_stay_removed(lb):
    assert lb.prefill() == []
    lb.remove(B_PAPER, "base")
    assert L.open_leaderboard(lb.root).entry_names(B_PAPER) == sorted(set(X.TABLES) - {"base"})
    added = lb.prefill(force=True)
    assert [(e.benchmark, e.name) for e in added] == [(B_PAPER, "base")]


# ---------------------------------------------------------------------------------------------
# writing: add, validation, atomicity


def _result(lb: Leaderboard, bench: str, name: str):
    return lb.entry(bench, name).result()


def test_add_new_entry_and_index(lb):
    res = _result(lb, B_PAPER, "base")
    res.summary["submission"]["name"] = "my-model"
    e = lb.add(res, meta={"team": "us"})
    assert (e.benchmark, e.name) == (B_PAPER, "my-model")
    ranked = lb.ranked(B_PAPER, "dice_lv")
    base, mine = (ranked.set_index("entry").loc[n] for n in ("base", "my-model"))
    assert mine["dice_LV"] == base["dice_LV"] and mine["rank"] == base["rank"]  # equal values share a rank
    assert mine["team"] == "us" and not mine["published"]
    idx = json.loads((lb.root / B_PAPER / "index.json").read_text())
    assert "my-model" in idx["entries"]


def test_add_refuses_bad_input(lb):
    res = _result(lb, B_PAPER, "base")
    with pytest.raises(LeaderboardError, match="already exists"):
        lb.add(res, "base")
    with pytest.raises(LeaderboardError, match="invalid entry name"):
        lb.add(res, "../evil")
    with pytest.raises(LeaderboardError, match="invalid entry name"):
        lb.add(res, ".hidden")
    res.summary["protocol"] = dict(res.summary["protocol"], version="9.9")
    with pytest.raises(LeaderboardError, match="protocol"):
        lb.add(res, "other")
    res = _result(lb, B_PAPER, "base")
    res.summary["dataset"] = dict(res.summary["dataset"], version="2.0")
    with pytest.raises(LeaderboardError, match="version"):
        lb.add(res, "other")
    assert lb.entry_names(B_PAPER) == sorted(X.TABLES)


def test_failure_in_the_middle_of_a_write_keeps_the_previous_entry(lb, monkeypatch):
    before = _summary_bytes(lb, B_PAPER, "base")
    index_before = (lb.root / B_PAPER / "index.json").read_bytes()
    res = _result(lb, B_PAPER, "base")
    res.summary["submission"]["label"] = "changed"
    real = L._write_entry

    def broken(folder, result, meta, fmt):
        real(folder, result, meta, fmt)  # everything written ...
        raise OSError("disk full")  # ... then the write fails before the rename

    monkeypatch.setattr(L, "_write_entry", broken)
    with pytest.raises(OSError, match="disk full"):
        lb.add(res, "base", replace=True)
    assert _summary_bytes(lb, B_PAPER, "base") == before
    assert (lb.root / B_PAPER / "index.json").read_bytes() == index_before
    assert _hidden(lb, B_PAPER) == []
    with pytest.raises(OSError):
        lb.add(res, "brand-new")
    assert "brand-new" not in lb.entry_names(B_PAPER) and _hidden(lb, B_PAPER) == []


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from cardbench.benchmark.leaderboard import store as L
    import cardbench._util as U
    root, bench, name, where = sys.argv[1:5]
    lb = L.Leaderboard(root)
    res = lb.entry(bench, name).result()
    res.summary["submission"]["label"] = "changed"
    if where == "write":
        def killer(folder, result, meta, fmt):
            (folder / "summary.json").write_text("{half")
            os.kill(os.getpid(), signal.SIGKILL)
        L._write_entry = killer
    else:  # killed after the old entry was moved aside, before the new one is renamed into place
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if str(dst).endswith(".old"):
                os.kill(os.getpid(), signal.SIGKILL)
        U.os.replace = replace
    lb.add(res, name, replace=True)
""")


@pytest.mark.parametrize("where", ["write", "swap"])
def test_killed_write_leaves_previous_state(lb, where):
    before = _summary_bytes(lb, B_PAPER, "double_tl")
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(lb.root), B_PAPER, "double_tl", where],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert _hidden(lb, B_PAPER)  # the killed writer left its temporary folder
    # the next reader (the dashboard, show) recovers: previous entry, nothing left over
    ranked = lb.ranked(B_PAPER, "dice_lv")
    assert "double_tl" in set(ranked["entry"])
    assert _summary_bytes(lb, B_PAPER, "double_tl") == before
    assert _hidden(lb, B_PAPER) == []


def test_parquet_per_case_reads_back_like_csv(lb):
    pytest.importorskip("pyarrow")
    res = _result(lb, B_PAPER, "plain")
    e = lb.add(res, "plain-parquet", per_case_format="parquet")
    assert (e.path / "per_case.parquet").exists() and not (e.path / "per_case.csv").exists()
    a = lb.entry(B_PAPER, "plain").per_case()
    b = e.per_case()
    pd.testing.assert_frame_equal(a[["subject", "frame", "class", "status"]], b[["subject", "frame", "class", "status"]],
                                  check_dtype=False)
    np.testing.assert_allclose(a["dice"].to_numpy(float), b["dice"].to_numpy(float), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# ranking (hand-made tables)


def _agg(values: dict[str, float], metric: str, cls: str = "LV") -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [{"entry": e, "grouping": "all", "group": "all", "class": cls, "metric": metric, "mean": v,
             "ci_low": np.nan, "ci_high": np.nan, "n_subjects": 3, "n_values": 3, "n_excluded": 0}
            for e, v in values.items()]
    ents = pd.DataFrame({"entry": list(values), "label": "", "team": ""})
    return pd.DataFrame(rows), ents


def test_rank_ties_and_missing_values():
    agg, ents = _agg({"a": 0.9, "b": 0.8, "c": 0.9, "d": np.nan}, "dice")
    r = rank_table(agg, ents, "dice_lv")
    assert r["entry"].tolist() == ["a", "c", "b", "d"]
    assert r["rank"].tolist()[:3] == [1, 1, 3] and pd.isna(r["rank"].iloc[3])


def test_rank_lower_is_better_and_bias_by_absolute_value():
    agg, ents = _agg({"a": 5.0, "b": 3.0, "c": 3.0}, "hd95")
    r = rank_table(agg, ents, "hd95_lv")
    assert r["entry"].tolist() == ["b", "c", "a"] and r["rank"].tolist() == [1, 1, 3]
    agg, ents = _agg({"a": -2.0, "b": 1.0, "c": 3.0}, "bias", cls="LVEF")
    r = rank_table(agg, ents, "bias_lvef")
    assert r["entry"].tolist() == ["b", "a", "c"]


def test_rank_errors_name_the_valid_choices(prefilled_dir):
    lb = Leaderboard(prefilled_dir)
    with pytest.raises(LeaderboardError, match="metrics: dice, iou"):
        lb.ranked(B_PAPER, "hd95_lv")
    with pytest.raises(LeaderboardError, match="classes: LV, MY"):
        lb.ranked(B_PAPER, "dice_rv")
    with pytest.raises(LeaderboardError, match="available"):
        lb.ranked("nope", "dice_lv")


def test_parse_metric():
    assert parse_metric("dice_lv") == ("dice", "LV", "all")
    assert parse_metric("hd95_MY_es") == ("hd95", "MY", "ES")
    assert parse_metric("dice") == ("dice", None, "all")
    assert parse_metric("pearson_r_lvef") == ("pearson_r", "LVEF", "all")


# ---------------------------------------------------------------------------------------------
# remove, export


def test_remove(lb):
    lb.remove(B_V1, "ukbb_cardiac")
    assert "ukbb_cardiac" not in lb.entry_names(B_V1)
    assert "ukbb_cardiac" not in set(lb.ranked(B_V1, "dice_lv")["entry"])
    assert "ukbb_cardiac" in lb.entry_names(B_PAPER)
    assert _hidden(lb, B_V1) == []
    with pytest.raises(LeaderboardError, match="no entry"):
        lb.remove(B_V1, "ukbb_cardiac")


def test_export(lb, tmp_path):
    out = tmp_path / "export"
    written = lb.export(out, B_PAPER, with_entries=True)
    assert {p.name for p in written} == {f"{B_PAPER}.csv", f"{B_PAPER}.md", f"{B_PAPER}.json", B_PAPER}
    csv = pd.read_csv(out / f"{B_PAPER}.csv")
    exp = {e: X.paper_protocol(X.seven_t(e, SHARED), "LV") for e in X.TABLES}
    assert csv["entry"].tolist() == sorted(exp, key=lambda e: -exp[e])
    for e, v in zip(csv["entry"], csv["dice_LV"]):
        assert v == pytest.approx(exp[e], abs=1e-6)
    md = (out / f"{B_PAPER}.md").read_text()
    assert "| rank | entry |" in md and f"{exp['second_observer']:.3f}" in md
    js = json.loads((out / f"{B_PAPER}.json").read_text())
    assert [r["entry"] for r in js["entries"]] == csv["entry"].tolist()
    # the exported entries form a leaderboard someone else can open
    copy = Leaderboard(out / "leaderboard")
    assert copy.entry_names(B_PAPER) == sorted(X.TABLES)
    assert copy.ranked(B_PAPER, "dice_lv")["entry"].tolist() == csv["entry"].tolist()


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_show_json_and_markdown(lb):
    runner = CliRunner()
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-b", B_PAPER, "-f", "json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    exp = {e: X.paper_protocol(X.seven_t(e, SHARED), "LV") for e in X.TABLES}
    assert {d["entry"]: d["dice_LV"] for d in js["entries"]} == pytest.approx(exp, abs=1e-9)
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-b", B_V1, "-f", "markdown", "-m", "dice_my"])
    assert r.exit_code == 0 and "95 % CI in brackets" in r.stdout
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-f", "csv"])
    df = pd.read_csv(pd.io.common.StringIO(r.stdout))
    assert set(df["benchmark"]) == set(lb.benchmark_ids()) and len(df) == 16
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-b", B_PAPER, "-m", "hd95_lv"])
    assert r.exit_code == 2 and "no metric 'hd95'" in r.output


def test_cli_score_adds_an_entry_that_show_lists(lb, tmp_path):
    table = X.EMBEDDED / f"{X.T7}/confusion_TR_doubleTransferLearn.tsv.gz"
    src = tmp_path / "confusion_TR_doubleTransferLearn.tsv"
    src.write_bytes(__import__("gzip").decompress(table.read_bytes()))
    runner = CliRunner()
    r = runner.invoke(app, ["score", str(src), "--split", "test", "--protocol", "ankenbrand2021", "--no-save",
                            "--leaderboard", str(lb.root), "--name", "dtl-vs-TR"])
    assert r.exit_code == 0, r.output
    bench = [b for b in lb.benchmark_ids() if "dtl-vs-TR" in lb.entry_names(b)]
    assert len(bench) == 1
    df = pd.read_csv(src, sep="\t")
    df = df[df["set"] == "test"]
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-b", bench[0], "-f", "json"])
    got = json.loads(r.stdout)["entries"][0]
    assert got["entry"] == "dtl-vs-TR"
    assert got["dice_LV"] == pytest.approx(X.image_dice(df, "LV").mean(), abs=1e-9)
    r = runner.invoke(app, ["score", str(src), "--split", "test", "--protocol", "ankenbrand2021", "--no-save",
                            "--leaderboard", str(lb.root), "--name", "dtl-vs-TR"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["leaderboard", "remove", "dtl-vs-TR", str(lb.root)])
    assert r.exit_code == 0 and "dtl-vs-TR" not in lb.entry_names(bench[0])


def test_cli_remove_ambiguous_and_path(lb, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(app, ["leaderboard", "remove", "base", str(lb.root)])
    assert r.exit_code == 2 and "2 benchmarks" in r.output
    r = runner.invoke(app, ["leaderboard", "remove", "base", str(lb.root), "--benchmark", "all"])
    assert r.exit_code == 0
    assert "base" not in lb.entry_names(B_PAPER) and "base" not in lb.entry_names(B_V1)
    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(lb.root))
    r = runner.invoke(app, ["leaderboard", "path"])
    assert r.stdout.strip() == str(lb.root)


def test_benchmark_and_datasets_import_without_streamlit():
    code = ("import sys; import cardbench.benchmark.leaderboard, cardbench.cli; "
            "assert 'streamlit' not in sys.modules and 'plotly' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_root_uses_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv("CARDBENCH_LEADERBOARD", raising=False)
    assert L.default_root() == Path(platformdirs.user_data_dir("cardbench", appauthor=False)) / "leaderboard"


def test_cli_show_refuses_a_mistyped_folder_and_an_unknown_metric(lb, tmp_path):
    runner = CliRunner()
    missing = tmp_path / "typo"
    r = runner.invoke(app, ["leaderboard", "show", str(missing)])
    assert r.exit_code == 2 and "not found" in r.stderr and not missing.exists()
    r = runner.invoke(app, ["leaderboard", "show", str(lb.root), "-m", "dice_xx"])
    assert r.exit_code == 2 and "no class 'XX'" in r.stderr
