"""Private benchmarks: the public export and the public dashboard hold no per-case or per-subject value.

The check scans every file written for every number of the entries' per-case and per-subject tables
(values with a fractional part, compared at 9 significant digits; numbers written with fewer than 6
decimals, such as a paper's published 0.791, are typed-in figures and not compared)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.benchmark.leaderboard import Leaderboard, read_per_case
from cardbench.benchmark.private import MIN_SUBJECTS_FOR_CI, is_private, public_aggregates
from cardbench.cli import app

B_V1 = "cmr-7t__test__cardbench-v1"
B_PAPER = "cmr-7t__test__ankenbrand2021"
NUM = re.compile(r"-?\d+\.\d{6,}(?:[eE][-+]?\d+)?")


@pytest.fixture()
def board(prefilled_dir, tmp_path) -> Path:
    dst = tmp_path / "leaderboard"
    shutil.copytree(prefilled_dir, dst)
    return dst


def _private_values(root: Path, benches) -> set[str]:
    """Every per-case and per-subject value (fractional ones) of the benchmarks, at 6 decimals."""
    out: set[str] = set()
    for b in benches:
        for e in sorted((root / b / "entries").iterdir()):
            tables = [read_per_case(e)]
            if (e / "per_subject.csv").exists():
                tables.append(pd.read_csv(e / "per_subject.csv"))
            for t in tables:
                for c in t.select_dtypes("number").columns:
                    v = t[c].dropna().to_numpy(float)
                    v = v[np.abs(v - np.round(v)) > 1e-9]
                    out.update(f"{x:.9g}" for x in v)
    return out


def _numbers_in(folder: Path) -> set[str]:
    found: set[str] = set()
    for p in folder.rglob("*"):
        if p.is_file():
            for tok in NUM.findall(p.read_text(encoding="utf-8", errors="replace")):
                found.add(f"{float(tok):.9g}")
    return found


def _leaks(secret: set[str], out: Path) -> set[str]:
    found = _numbers_in(out)
    # Kendall's tau of 7 entries is k/21; the median tau here, 19/21, is also some image's Dice
    # (2 tp / (ref + pred) = 19/21): a rank statistic, not a per-case value
    taus = {f"{json.loads(p.read_text())['kendall_tau_median']:.9g}" for p in out.rglob("ranks.json")}
    assert taus <= {f"{k / 21:.9g}" for k in range(-21, 22)}
    return secret & (found - taus)


def test_private_flag_and_public_export_hold_no_per_case_value(board, tmp_path):
    r = CliRunner().invoke(app, ["leaderboard", "private", str(board), "-b", "cmr-7t"])
    assert r.exit_code == 2  # ambiguous prefix: two 7T benchmarks
    for b in (B_V1, B_PAPER):
        r = CliRunner().invoke(app, ["leaderboard", "private", str(board), "-b", b])
        assert r.exit_code == 0, r.output
        assert is_private(Leaderboard(board), b)
    assert json.loads((board / B_V1 / "benchmark.json").read_text())["per_case"] == "private"
    out = tmp_path / "public"
    r = CliRunner().invoke(app, ["leaderboard", "export", "--public", str(out), "-L", str(board)])
    assert r.exit_code == 0, r.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert f"{B_V1}/ranked.csv" in written and f"{B_V1}/ranks.json" in written
    assert not [w for w in written if "per_case" in w or "per_subject" in w or w.endswith("summary.json")]
    secret = _private_values(board, [B_V1, B_PAPER])
    assert len(secret) > 1000  # the scan has something to find (per-image Dice of the 7T test set)
    leaked = _leaks(secret, out)
    assert not leaked, sorted(leaked)[:10]
    # what is published: the aggregates (the LV Dice of each entry) and the ranks
    lb = Leaderboard(board)
    ranked = pd.read_csv(out / B_V1 / "ranked.csv")
    want = lb.ranked(B_V1, "dice_lv")
    assert dict(zip(ranked["entry"], ranked["dice_LV"])) == pytest.approx(dict(zip(want["entry"], want["dice_LV"])))
    assert ranked["dice_LV_ci_low"].isna().all()  # 3 subjects: the bootstrap interval's ends are subject values
    # a private benchmark's entries are never copied
    r = CliRunner().invoke(app, ["leaderboard", "export", str(tmp_path / "x"), "-L", str(board), "-b", B_V1,
                                 "--with-entries"])
    assert r.exit_code == 2 and "private" in r.output
    # without --public, a private benchmark is still exported aggregate-only
    r = CliRunner().invoke(app, ["leaderboard", "export", str(tmp_path / "y"), "-L", str(board), "-b", B_V1])
    assert r.exit_code == 0 and not _leaks(secret, tmp_path / "y")


def test_public_aggregates_rules_by_hand():
    agg = pd.DataFrame({"mean": [0.8, 0.7, 0.6], "median": [0.81, 0.7, 0.6], "std": [0.1, 0.1, 0.1],
                        "ci_low": [0.7, 0.6, 0.5], "ci_high": [0.9, 0.8, 0.7], "n_subjects": [1, 3, 4]})
    p = public_aggregates(agg)
    assert "median" not in p and "std" not in p
    assert np.isnan(p["mean"][0]) and p["mean"][1] == 0.7
    assert MIN_SUBJECTS_FOR_CI == 4
    assert p["ci_low"].isna().tolist() == [True, True, False]


def test_public_dashboard_refuses_per_case_pages(board, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CARDBENCH_LEADERBOARD", str(board))
    monkeypatch.setenv("CARDBENCH_DASHBOARD_PUBLIC", "1")
    app_py = str(Path(__import__("cardbench").__file__).resolve().parent / "dashboard" / "app.py")
    at = AppTest.from_file(app_py, default_timeout=120)
    at.query_params["benchmark"] = B_V1
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    lb = Leaderboard(board)
    secret = _private_values(board, [B_V1])
    shown = set()
    for d in at.dataframe:
        for c in d.value.select_dtypes("number").columns:
            shown.update(f"{x:.9g}" for x in d.value[c].dropna().to_numpy(float))
    assert shown and not (shown & secret)
    table = [d.value for d in at.dataframe if "dice_LV" in d.value.columns][0]
    assert "dice_LV_ci_low" not in table or table["dice_LV_ci_low"].isna().all()
    assert set(table["entry"]) == set(lb.entry_names(B_V1))
    for page in ("submission", "case", "compare", "dataset"):
        at2 = AppTest.from_file(app_py, default_timeout=120)
        at2.query_params["benchmark"] = B_V1
        at2.run()
        at2.switch_page(page_path(page))
        at2.run()
        assert not at2.exception
        assert any("Not available: this dashboard is public" in e.value for e in at2.error), page
        assert not at2.dataframe


def page_path(page: str) -> str:
    return f"views/{page}.py"


def test_create_private_benchmark_then_entries_join_it(tmp_path, sunnybrook_prepared):
    from cardbench.benchmark import score
    from cardbench.benchmark.leaderboard import add_entry

    ref = sunnybrook_prepared  # prepared once per test run (conftest); read only
    root = tmp_path / "lb"
    r = CliRunner().invoke(app, ["leaderboard", "create", str(root), "--reference", str(ref), "--split", "test",
                                 "--protocol", "ankenbrand2021", "--private"])
    assert r.exit_code == 0, r.output
    bench = "sunnybrook-sample__test__ankenbrand2021"
    lb = Leaderboard(root)
    assert lb.benchmark_ids() == [bench] and is_private(lb, bench) and lb.entry_names(bench) == []
    # the reference labels as predictions, twice (two entries), scored the usual way, join the benchmark
    pred = tmp_path / "pred"
    shutil.copytree(ref / "labels", pred)
    for n in ("copy-a", "copy-b"):
        add_entry(score(pred, ref, protocol="ankenbrand2021", split="test", progress=False), root, n, prefill=False)
    assert lb.entry_names(bench) == ["copy-a", "copy-b"] and is_private(lb, bench)
    r = CliRunner().invoke(app, ["leaderboard", "create", str(root), "--reference", str(tmp_path / "nope")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def _entry_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("public", [True, False])
def test_export_never_overlaps_the_leaderboard_nor_replaces_a_users_folder(board, tmp_path, public):
    """An export into the leaderboard folder, a folder inside it or a folder holding it is refused
    before anything is written (it once emptied a benchmark's entries); a folder of a benchmark's name
    that cardbench did not write is never replaced."""
    flag = ["--public"] if public else ["--with-entries"]
    before = _entry_files(board)
    bench = "cmr-7t__test__cardbench-v1"
    for out in (board, board / bench, board.parent):
        r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(board), "-b", bench, *flag])
        assert r.exit_code == 2, r.output
        assert "leaderboard folder" in r.stderr and "Traceback" not in r.stderr
        assert _entry_files(board) == before  # nothing changed, nothing added
    # a user's folder with a benchmark's name stays as it was
    out = tmp_path / "export"
    user = out / (bench if public else f"leaderboard/{bench}")
    user.mkdir(parents=True)
    (user / "thesis.txt").write_text("mine")
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(board), "-b", bench, *flag])
    assert r.exit_code == 2 and "not written by cardbench" in r.stderr, r.output
    assert (user / "thesis.txt").read_text() == "mine" and sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    # an export cardbench wrote is replaced by the next one
    out2 = tmp_path / "export2"
    for _ in range(2):
        r = CliRunner().invoke(app, ["leaderboard", "export", str(out2), "-L", str(board), "-b", bench, *flag])
        assert r.exit_code == 0, r.output
