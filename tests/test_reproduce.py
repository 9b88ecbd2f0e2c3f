"""Reproduction of Ankenbrand et al. 2021 from the published confusion tables.

Expected values are computed here independently with plain pandas from the published tables in
the shared real-data folder, and compared with the paper's published numbers (external facts).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.reproductions.ankenbrand2021.seven_tesla import PUBLISHED, reproduce_ankenbrand2021, score_label_quality
from cardbench.cli import app

# The paper's test-set Dice (LV, MY) as published (the paper); these are not outputs of cardbench.
PAPER = {"confusion_WS_base.tsv": (0.835, 0.670), "confusion_WS_doubleTransferLearn.tsv": (0.900, 0.791),
         "confusion_WS_doubleTL-esed.tsv": (0.908, 0.805), "confusion_WS_imagenetTransferLearn.tsv": (0.908, 0.791),
         "confusion_WS_plainLearn.tsv": (0.880, 0.756), "confusion_WS_ukbbCardiac.tsv": (0.668, 0.521),
         "confusion_WS_TR.tsv": (0.939, 0.813)}


def _dice_per_row(df, c):
    tp = df[f"{c}_{c}"]
    ref = df[[f"{c}_bg", f"{c}_lv", f"{c}_my"]].sum(axis=1)
    pred = df[[f"bg_{c}", f"lv_{c}", f"my_{c}"]].sum(axis=1)
    return tp, ref, pred


def paper_protocol(df):
    out = []
    for c in ("lv", "my"):
        tp, ref, pred = _dice_per_row(df, c)
        d = np.where(ref + pred == 0, 1.0, 2 * tp / (ref + pred).where(ref + pred > 0, 1))
        out.append(d.mean())
    return out


def per_volunteer(df):
    df = df.copy()
    df["vol"] = df["image"].str.split("_slice").str[0]
    df["frame"] = df["image"].str.extract(r"frame(\d+)")[0].astype(int)
    g = df.groupby(["vol", "frame"]).sum(numeric_only=True).reset_index()
    out = []
    for c in ("lv", "my"):
        tp, ref, pred = _dice_per_row(g, c)
        g["d"] = np.where(ref + pred == 0, np.nan, 2 * tp / (ref + pred).where(ref + pred > 0, 1))
        out.append(g.groupby("vol")["d"].mean().mean())
    return out


@pytest.fixture(scope="module")
def embedded_run():
    """``reproduce_ankenbrand2021()`` on the embedded copies, once for the tests of this module."""
    return reproduce_ankenbrand2021()


def test_paper_table_exact(shared_data, embedded_run):
    table, results = embedded_run
    assert table["match"].all()
    conf = shared_data / "cmr-seg-tl" / "analysis" / "7T" / "confusion_tables"
    for comp in PUBLISHED:
        df = pd.read_csv(conf / comp.table, sep="\t")
        df = df[df["set"] == "test"]
        lv, my = paper_protocol(df)
        row = table[table["model"] == comp.key].iloc[0]
        assert row["ankenbrand2021_LV"] == pytest.approx(lv, abs=1e-12)
        assert row["ankenbrand2021_MY"] == pytest.approx(my, abs=1e-12)
        assert (round(lv, 3), round(my, 3)) == PAPER[comp.table]
        vlv, vmy = per_volunteer(df)
        assert row["cardbench-v1_LV"] == pytest.approx(vlv, abs=1e-12)
        assert row["cardbench-v1_MY"] == pytest.approx(vmy, abs=1e-12)
        assert row["cardbench-v1_LV_ci_low"] <= row["cardbench-v1_LV"] <= row["cardbench-v1_LV_ci_high"]
        assert row["n_subjects"] == 3 and row["ankenbrand2021_n"] == len(df)


def test_label_quality_matches_independent_computation(shared_data):
    df = pd.read_csv(shared_data / "cmr-seg-tl" / "analysis" / "kaggle" / "manual" / "ukbb_vs_manual.tsv", sep="\t")
    lv, my = paper_protocol(df)
    res = score_label_quality("ankenbrand2021")
    h = res.headline()
    assert h["LV"] == pytest.approx(lv, abs=1e-12) and h["MY"] == pytest.approx(my, abs=1e-12)
    assert res.summary["counts"]["images"] == 816 and res.summary["counts"]["subjects"] == 9


def test_embedded_copy_equals_shared_and_corruption_detected(shared_data, tmp_path):
    from cardbench.datasets.embedded import IntegrityError, open_published

    rel = "cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_base.tsv"
    data, entry, _ = open_published(rel)
    assert data == (shared_data / rel).read_bytes()
    bad = tmp_path / rel
    bad.parent.mkdir(parents=True)
    b = bytearray(data)
    b[100] ^= 1
    bad.write_bytes(bytes(b))
    with pytest.raises(IntegrityError, match="does not match"):
        open_published(rel, tmp_path)


def test_reproduce_from_data_dir_equals_embedded(shared_data, embedded_run):
    a, _ = embedded_run
    b, _ = reproduce_ankenbrand2021(data_dir=shared_data)
    pd.testing.assert_frame_equal(a, b)


def test_reproduce_cli_json_and_score_cli_on_confusion_table(shared_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["reproduce", "ankenbrand2021", "--json"])
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)
    got = {r["model"]: (round(r["ankenbrand2021_LV"], 3), round(r["ankenbrand2021_MY"], 3)) for r in rows}
    assert got == {c.key: PAPER[c.table] for c in PUBLISHED}
    table = shared_data / "cmr-seg-tl" / "analysis" / "7T" / "confusion_tables" / "confusion_WS_base.tsv"
    res = runner.invoke(app, ["score", str(table), "--protocol", "ankenbrand2021", "--split", "test",
                              "--json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    lv = [r for r in s["results"] if r["grouping"] == "all" and r["class"] == "LV" and r["metric"] == "dice"][0]
    assert round(lv["mean"], 3) == 0.835


_LIGHT = """
import atexit, importlib.abc, json, sys
HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "streamlit", "plotly", "datalad")
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HEAVY:
            tried.append(name)
            raise ImportError('blocked (light install): ' + name)
sys.meta_path.insert(0, Block())
report = sys.argv[1]
atexit.register(lambda: open(report, "w").write(json.dumps(
    {"tried": tried, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)})))
sys.argv = ["cardbench"] + sys.argv[2:]
from cardbench.cli import app
app()
"""


def test_demo_runs_offline(tmp_path):
    """The light install (`pip install -e . && cardbench demo --no-baseline`): no torch, Streamlit, Plotly or
    DataLad is imported, or even asked for (run in a subprocess where importing them fails)."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _LIGHT, str(tmp_path / "imports.json"), "demo", "--out",
                        str(tmp_path / "demo"), "--no-baseline"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    res = type("R", (), {"exit_code": r.returncode, "stdout": r.stdout, "stderr": r.stderr})
    assert res.exit_code == 0, res.stdout + res.stderr
    assert json.loads((tmp_path / "imports.json").read_text()) == {"tried": [], "loaded": []}
    assert "7 of 7 rows match" in res.stdout
    assert (tmp_path / "demo" / "reproduce-ankenbrand2021" / "reproduction.csv").exists()
    assert (tmp_path / "demo" / "label-quality" / "ankenbrand2021" / "summary.json").exists()


def test_a_published_table_is_scored_once_per_process_and_callers_get_copies(monkeypatch):
    """`cardbench demo` reproduces the table, then pre-fills the leaderboard from the same tables: the
    second pass reuses the first's results (the table's bytes are registry-checked each time), and a
    caller changing its result changes nobody else's."""
    from cardbench.reproductions.ankenbrand2021 import seven_tesla as st

    monkeypatch.setattr(st, "_SCORED", {})
    calls = []
    real = st._score_published
    monkeypatch.setattr(st, "_score_published", lambda *a, **k: calls.append(a[0].key) or real(*a, **k))
    comp = st.PUBLISHED[0]
    a = st.score_published(comp, "ankenbrand2021")
    want = a.aggregates.copy()
    a.aggregates.loc[0, "mean"] = -1.0
    a.summary["submission"]["name"] = "changed"
    b = st.score_published(comp, "ankenbrand2021")
    st.score_published(comp, "cardbench-v1")
    assert calls == [comp.key, comp.key]  # once per (table, protocol)
    pd.testing.assert_frame_equal(b.aggregates, want)
    assert b.summary["submission"]["name"] == comp.key
    fresh = real(comp, *open_for(st, comp), "ankenbrand2021", "test", None)
    pd.testing.assert_frame_equal(b.per_case, fresh.per_case)


def open_for(st, comp):
    from cardbench.datasets.embedded import open_published

    data, entry, where = open_published(st._BASE + comp.table)
    return data, entry, where
