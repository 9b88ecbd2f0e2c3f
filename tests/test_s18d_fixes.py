"""Hand-edited leaderboard files found by a fresh-user trial (session 18): a summary.json whose figures
disagree with each other (a CI that does not hold its mean, more subjects than were scored), a
benchmark.json relabelled with another protocol, an export that listed an entry it had just skipped,
and a per_case.csv cut at a row boundary. Each test fails on the code before its fix; the last one
checks that every pre-filled entry passes every new check."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from helpers import copy_board, warning_lines

B_7T = "cmr-7t__test__cardbench-v1"  # subject aggregation, bootstrap CIs, seven entries
B_7T_POOLED = "cmr-7t__test__ankenbrand2021"  # pooled aggregation
B_KAGGLE = "kaggle-dsb-manual-masks__all__ankenbrand2021"
B_KAGGLE_V1 = "kaggle-dsb-manual-masks__all__cardbench-v1"


def _show(lb: Path, bench: str | None = B_7T):
    args = ["leaderboard", "show", "-L", str(lb), "-f", "csv"] + (["-b", bench] if bench else [])
    r = CliRunner().invoke(app, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    return r


def _edit_summary(f: Path, edit) -> None:
    d = json.loads(f.read_text(encoding="utf-8"))
    edit(d)
    f.write_text(json.dumps(d), encoding="utf-8")


def _dice_lv_all(d: dict) -> dict:
    return next(r for r in d["results"] if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")


def _entries_shown(stdout: str) -> set[str]:
    return {row["entry"] for row in csv.DictReader(io.StringIO(stdout))}


def _one_warning_naming(r, f: Path, *words: str) -> None:
    w = warning_lines(r.stderr)
    assert len(w) == 1, r.stderr
    assert str(f) in w[0] and all(x in w[0] for x in words), w[0]


# ---- 1. summary.json figures that disagree with each other or with the benchmark


@pytest.mark.parametrize("edit, words", [
    # the trial's edit: the interval turned round the mean 0.882
    (lambda r: r.update(ci_low=0.99, ci_high=0.10), ("ci_low 0.99", "above ci_high 0.1")),
    # an interval in order that misses the mean (a subject-aggregated mean lies in its bootstrap interval)
    (lambda r: r.update(ci_low=0.95, ci_high=0.99), ("below its ci_low 0.95",)),
    # more subjects than the cmr-7t test split has (3)
    (lambda r: r.update(n_subjects=999), ("n_subjects 999", "3 subjects")),
    # 65 volumes of class LV were scored: 66 aggregated values cannot be
    (lambda r: r.update(n_values=66), ("n_values 66", "65 volume rows")),
])
def test_inconsistent_summary_is_skipped(prefilled_dir, tmp_path, edit, words):
    lb = copy_board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "base" / "summary.json"
    _edit_summary(f, lambda d: edit(_dice_lv_all(d)))
    r = _show(lb)
    assert r.exit_code == 0, r.output
    _one_warning_naming(r, f, "dice of class LV", *words)
    assert "base" not in _entries_shown(r.stdout)
    assert len(_entries_shown(r.stdout)) == 6


def test_pooled_interval_is_checked_for_its_order_only(prefilled_dir, tmp_path):
    """Under pooled aggregation the interval is of the subject means, not of the pooled mean: an interval
    beside the mean is no sign of an edit (not refused), one turned round is."""
    lb = copy_board(prefilled_dir, tmp_path)
    f = lb / B_7T_POOLED / "entries" / "base" / "summary.json"
    rec = _dice_lv_all(json.loads(f.read_text(encoding="utf-8")))
    _edit_summary(f, lambda d: _dice_lv_all(d).update(ci_low=rec["mean"] + 0.01, ci_high=rec["mean"] + 0.02))
    r = _show(lb, B_7T_POOLED)
    assert not warning_lines(r.stderr) and "base" in _entries_shown(r.stdout), r.stderr
    _edit_summary(f, lambda d: _dice_lv_all(d).update(ci_low=rec["mean"] + 0.02, ci_high=rec["mean"] + 0.01))
    r = _show(lb, B_7T_POOLED)
    _one_warning_naming(r, f, "above ci_high")
    assert "base" not in _entries_shown(r.stdout)


def test_entry_of_another_protocol_version_is_skipped(prefilled_dir, tmp_path):
    lb = copy_board(prefilled_dir, tmp_path)
    f = lb / B_7T / "entries" / "plain" / "summary.json"
    _edit_summary(f, lambda d: d["protocol"].update(version="2.0"))
    r = _show(lb)
    _one_warning_naming(r, f, "v2.0", "benchmark.json says 'cardbench-v1' v1.0")
    assert "plain" not in _entries_shown(r.stdout)


# ---- 2. benchmark.json relabelled with another protocol


def test_relabelled_benchmark_json_is_refused(prefilled_dir, tmp_path):
    """The trial's edit: an ankenbrand2021 board relabelled cardbench-v1 was shown under the new name."""
    lb = copy_board(prefilled_dir, tmp_path)
    f = lb / B_KAGGLE / "benchmark.json"
    _edit_summary(f, lambda d: d["protocol"].update(name="cardbench-v1"))
    r = _show(lb, B_KAGGLE)
    assert r.exit_code == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "'cardbench-v1' does not match the benchmark id" in err[0], r.stderr
    r = _show(lb, None)  # every benchmark: the relabelled one is named once and left out
    assert r.exit_code == 0
    _one_warning_naming(r, f, "does not match the benchmark id")
    assert not r.stdout.count(B_KAGGLE + ",")


def test_relabelled_benchmark_folder_and_json_leave_no_entry(prefilled_dir, tmp_path):
    """benchmark.json and the folder name changed together (an ankenbrand2021 board made to look like a
    cardbench-v1 one): the entry's summary.json still records ankenbrand2021, so it is skipped."""
    lb = copy_board(prefilled_dir, tmp_path)
    shutil.rmtree(lb / B_KAGGLE_V1)
    shutil.move(lb / B_KAGGLE, lb / B_KAGGLE_V1)
    v1 = json.loads((prefilled_dir / B_KAGGLE_V1 / "benchmark.json").read_text(encoding="utf-8"))
    (lb / B_KAGGLE_V1 / "benchmark.json").write_text(json.dumps(v1), encoding="utf-8")
    r = _show(lb, B_KAGGLE_V1)
    assert r.exit_code == 2
    f = lb / B_KAGGLE_V1 / "entries" / "ukbb_cardiac-labels" / "summary.json"
    _one_warning_naming(r, f, "protocol 'ankenbrand2021'", "benchmark.json says 'cardbench-v1'")


# ---- 3. every exported file holds exactly the checked entries


def _forge_per_subject(lb: Path, name: str) -> Path:
    """Every Dice LV of ``name``'s per_subject.csv set to 0.999 (in range; no longer summary.json's mean)."""
    f = lb / B_7T / "entries" / name / "per_subject.csv"
    rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))
    head = rows[0]
    for row in rows[1:]:
        if row[head.index("class")] == "LV" and row[head.index("metric")] == "dice":
            row[head.index("mean")] = "0.999"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue(), encoding="utf-8")
    return f


@pytest.mark.parametrize("extra", [["--public"], ["--with-entries"]])
def test_skipped_entry_is_in_no_exported_file(prefilled_dir, tmp_path, extra):
    lb = copy_board(prefilled_dir, tmp_path)
    f = _forge_per_subject(lb, "ukbb_cardiac")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["leaderboard", "export", str(out), "-L", str(lb), "-b", B_7T, *extra])
    assert r.exit_code == 0, r.output
    _one_warning_naming(r, f, "dice LV")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert "ukbb_cardiac" not in str(p.relative_to(out)), p
        assert "ukbb_cardiac" not in p.read_text(encoding="utf-8", errors="replace"), p
    r = _show(lb)  # show leaves out the same entry
    assert "ukbb_cardiac" not in _entries_shown(r.stdout) and len(_entries_shown(r.stdout)) == 6


def test_per_subject_verdict_is_cached_and_index_keeps_the_record(prefilled_dir, tmp_path):
    """The verdict on a forged per_subject.csv is stored with the index record (index.json), so a new
    reader of the unchanged board leaves the entry out again from the cached record, while index()
    still holds the entry's own summary.json figures."""
    from cardbench.benchmark.leaderboard import Leaderboard

    lb_dir = copy_board(prefilled_dir, tmp_path)
    f = _forge_per_subject(lb_dir, "ukbb_cardiac")
    lb = Leaderboard(lb_dir)
    assert "ukbb_cardiac" in lb.index(B_7T) and "ukbb_cardiac" not in lb.checked_index(B_7T)
    idx = json.loads((lb_dir / B_7T / "index.json").read_text(encoding="utf-8"))
    assert str(f) in idx["entries"]["ukbb_cardiac"]["problem"]
    again = Leaderboard(lb_dir)
    entries, _ = again.tables(B_7T)
    assert "ukbb_cardiac" not in set(entries["entry"]) and len(entries) == 6
    assert any(str(f) in p for p in again.problems(B_7T))


# ---- 4. a per-case table cut at a row boundary


def _cut_half(f: Path) -> tuple[int, int]:
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = 1 + (len(lines) - 1) // 2
    f.write_text("".join(lines[:keep]), encoding="utf-8")
    return len(lines) - 1, keep - 1


def test_per_case_cut_at_row_boundary_is_refused(prefilled_dir, tmp_path):
    from cardbench.benchmark.leaderboard import LeaderboardError, read_entry, read_per_case

    lb = copy_board(prefilled_dir, tmp_path)
    entry = lb / B_7T / "entries" / "plain"
    f = entry / "per_case.csv"
    before, after = _cut_half(f)
    assert after < before
    r = _show(lb)
    _one_warning_naming(r, f, "rows at level", "summary.json counts", "cut or edited")
    assert "plain" not in _entries_shown(r.stdout)
    for read in (read_per_case, read_entry):  # the dashboard's readers of one entry
        with pytest.raises(LeaderboardError, match="summary.json counts"):
            read(entry)


def test_per_case_status_relabelled_is_refused(prefilled_dir, tmp_path):
    """Same number of rows, one row's status changed: the status counts of summary.json differ."""
    from cardbench.benchmark.leaderboard import LeaderboardError, read_per_case

    lb = copy_board(prefilled_dir, tmp_path)
    entry = lb / B_7T / "entries" / "plain"
    f = entry / "per_case.csv"
    rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))
    st = rows[0].index("status")
    i = next(i for i, row in enumerate(rows[1:], 1) if row[st] == "ok")
    rows[i][st] = "failed"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue(), encoding="utf-8")
    with pytest.raises(LeaderboardError, match="statuses"):
        read_per_case(entry)


# ---- every pre-filled entry passes every new check


@pytest.mark.parametrize("bench, n_entries", [(B_7T, 7), (B_7T_POOLED, 7), (B_KAGGLE, 1), (B_KAGGLE_V1, 1)])
def test_every_prefilled_entry_passes_the_new_checks(prefilled_dir, bench, n_entries):
    from cardbench.benchmark.leaderboard import Leaderboard, read_entry
    from cardbench.benchmark.leaderboard.store import _id_mismatch
    from cardbench.benchmark.results import check_summary_consistency, read_summary_checked

    lb = Leaderboard(prefilled_dir)
    assert len(lb.benchmark_ids()) == 4
    info = lb.benchmark(bench)
    assert _id_mismatch(bench, json.loads((prefilled_dir / bench / "benchmark.json").read_text("utf-8"))) is None
    names = lb.entry_names(bench)
    assert len(names) == n_entries
    assert sorted(lb.index(bench, write=False)) == names
    for name in names:
        entry = prefilled_dir / bench / "entries" / name
        summary = read_summary_checked(entry)
        check_summary_consistency(summary, entry / "summary.json", info.protocol)
        read_entry(entry)  # also the per-case row counts and per_subject.csv against summary.json
    assert not lb.problems()
