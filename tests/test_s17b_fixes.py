"""Leaderboard integrity defects a fresh-user trial found (session 17): a forged index.json cache, an
unchecked per_subject.csv under ``--ranks``, entry files without a size limit or nested too deeply,
linked benchmark.json/index.json, a per_case.csv cut mid-row. Each test fails on the code before its fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import copy_board, warning_lines

B_7T = "cmr-7t__test__cardbench-v1"  # seven pre-filled entries, each with per_subject.csv


_board, _warnings = copy_board, warning_lines


def _show_csv(lb: Path, *extra: str):
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "csv", *extra])
    rows = list(csv.DictReader(io.StringIO(r.stdout))) if r.exit_code == 0 else []
    return r, rows


def _dice_lv(summary_file: Path) -> float:
    d = json.loads(summary_file.read_text(encoding="utf-8"))
    return next(r["mean"] for r in d["results"]
                if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")


# ---- 1. index.json is a cache: its figures are checked against the entries


@pytest.mark.parametrize("forged", [7.0, 0.999])
def test_forged_index_figure_is_not_ranked(prefilled_dir, tmp_path, forged):
    """7.0 (impossible) and 0.999 (possible, but not the entry's) written over plain's Dice LV in
    index.json with the file's mtime kept: the record is rebuilt from summary.json, so plain ranks
    on its own value; the cache is rewritten."""
    lb = _board(prefilled_dir, tmp_path)
    idx = lb / B_7T / "index.json"
    CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "csv"])  # index up to date
    st = os.stat(idx)
    d = json.loads(idx.read_text(encoding="utf-8"))
    rec = next(r for r in d["entries"]["plain"]["results"]
               if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")
    rec["mean"] = forged
    idx.write_text(json.dumps(d), encoding="utf-8")
    os.utime(idx, ns=(st.st_atime_ns, st.st_mtime_ns))
    true = _dice_lv(lb / B_7T / "entries" / "plain" / "summary.json")
    assert true < 0.99  # the published value is well below the forged ones
    r, rows = _show_csv(lb)
    assert r.exit_code == 0, r.output
    plain = next(row for row in rows if row["entry"] == "plain")
    assert float(plain["dice_LV"]) == pytest.approx(true, abs=1e-6)
    assert all(float(row["dice_LV"]) <= 1.0 for row in rows)
    assert rows[0]["entry"] != "plain" or float(rows[0]["dice_LV"]) == pytest.approx(true, abs=1e-6)
    assert not _warnings(r.stderr)
    again = json.loads(idx.read_text(encoding="utf-8"))  # the cache was rebuilt
    assert _dice_lv_from(again["entries"]["plain"]) == pytest.approx(true, abs=1e-12)


def _dice_lv_from(rec: dict) -> float:
    return next(r["mean"] for r in rec["results"]
                if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")


# ---- 2. per_subject.csv is checked before --ranks uses it


def _edit_per_subject(f: Path, mean: str) -> None:
    """Write ``mean`` (text) into the mean column of every Dice row of per_subject.csv."""
    rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))
    head = rows[0]
    im, ic = head.index("mean"), head.index("metric")
    for row in rows[1:]:
        if row[ic] == "dice":
            row[im] = mean
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue(), encoding="utf-8")


@pytest.mark.parametrize("damage, why", [
    ("1e999", "not finite"), ("5.0", "outside [0, 1]"), ("abc", "holds text"),
    ("empty", "not a readable table"), ("header", "no rows"), ("nomean", "missing columns"),
    ("cut", "ends mid-row"),
])
def test_ranks_skip_a_corrupt_per_subject_table(prefilled_dir, tmp_path, damage, why):
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_subject.csv"
    text = f.read_text(encoding="utf-8")
    if damage == "empty":
        f.write_bytes(b"")
    elif damage == "header":
        f.write_text(text.splitlines()[0] + "\n", encoding="utf-8")
    elif damage == "nomean":
        f.write_text(text.replace(",mean,", ",average,", 1), encoding="utf-8")
    elif damage == "cut":
        f.write_text(text[:-7], encoding="utf-8")
    else:
        _edit_per_subject(f, damage)
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "--ranks", "--resamples", "20",
                                 "-f", "json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    assert r.exit_code == 0, r.output
    names = [e["entry"] for e in json.loads(r.stdout)["entries"]]
    assert "plain" not in names and len(names) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and why in w[0], r.stderr


# ---- 3. entry files are bounded in size; deep nesting is one entry's warning


def test_oversize_summary_is_not_read(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "summary.json"
    with open(f, "r+b") as fh:
        fh.truncate(300 << 20)  # sparse: 300 MiB on paper, > the 256 MiB default
    r, rows = _show_csv(lb)
    assert r.exit_code == 0, r.output
    assert "plain" not in {row["entry"] for row in rows} and len(rows) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and "CARDBENCH_MAX_ENTRY_FILE_BYTES" in w[0], r.stderr


def test_entry_file_limit_is_set_by_the_environment(prefilled_dir, tmp_path, monkeypatch):
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_subject.csv"
    monkeypatch.setenv("CARDBENCH_MAX_ENTRY_FILE_BYTES", str(f.stat().st_size - 1))
    from cardbench.benchmark.results import ResultFolderError, read_per_subject_checked

    with pytest.raises(ResultFolderError, match="CARDBENCH_MAX_ENTRY_FILE_BYTES"):
        read_per_subject_checked(f.parent)
    monkeypatch.setenv("CARDBENCH_MAX_ENTRY_FILE_BYTES", str(f.stat().st_size))
    assert len(read_per_subject_checked(f.parent))


def test_deeply_nested_summary_is_one_entrys_warning(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "summary.json"
    f.write_text("[" * 100_000, encoding="utf-8")
    r, rows = _show_csv(lb)
    assert r.exit_code == 0, r.output
    assert "plain" not in {row["entry"] for row in rows} and len(rows) == 6
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(f) in w[0] and "nested too deeply" in w[0], r.stderr
    r = CliRunner().invoke(app, ["leaderboard", "export", str(tmp_path / "out"), "-L", str(lb)])
    assert r.exit_code == 0, r.output
    assert "error:" not in r.stderr and str(f) in r.stderr


# ---- 4. benchmark.json and index.json as links are refused, never opened


def test_linked_benchmark_json_is_refused_once(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    f = lb / B_7T / "benchmark.json"
    f.unlink()
    f.symlink_to(target)
    for extra in (["-b", B_7T], []):
        r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-f", "json", *extra])
        lines = [ln for ln in r.stderr.splitlines() if str(f) in ln]
        assert len(lines) == 1 and "symbolic link" in lines[0] and "corrupt" not in lines[0], r.stderr
        assert r.exit_code == (2 if extra else 0), r.output
        if not extra:
            assert B_7T not in {b["benchmark"] for b in json.loads(r.stdout)}


def test_linked_index_json_is_not_read_and_is_replaced(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    idx = lb / B_7T / "index.json"
    target = tmp_path / "forged.json"
    d = json.loads(idx.read_text(encoding="utf-8"))
    for rec in d["entries"].values():
        for res in rec["results"]:
            if res["metric"] == "dice":
                res["mean"] = 0.5
    target.write_text(json.dumps(d), encoding="utf-8")
    before = target.read_bytes()
    idx.unlink()
    idx.symlink_to(target)
    r, rows = _show_csv(lb)
    assert r.exit_code == 0, r.output
    assert len(rows) == 7 and all(float(row["dice_LV"]) != 0.5 for row in rows)
    w = _warnings(r.stderr)
    assert len(w) == 1 and str(idx) in w[0] and "symbolic link" in w[0], r.stderr
    assert not idx.is_symlink() and idx.is_file()  # the cache was rebuilt as a file of its own
    assert target.read_bytes() == before  # the link's target was never written


# ---- 5. a per_case.csv cut mid-row


def test_per_case_cut_mid_row_is_refused(prefilled_dir, tmp_path):
    lb = _board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "per_case.csv"
    data = f.read_bytes()
    assert data.endswith(b"\n")
    f.write_bytes(data[:-20])
    for extra in ([], ["--ranks", "--resamples", "20", "-m", "dice_lv_es"]):
        r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B_7T, "-f", "json", *extra])
        assert r.exit_code == 0, r.output
        assert "plain" not in {e["entry"] for e in json.loads(r.stdout)["entries"]}
        w = _warnings(r.stderr)
        assert len(w) == 1 and str(f) in w[0] and "ends mid-row" in w[0], r.stderr
