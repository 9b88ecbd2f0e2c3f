"""s18b: `leaderboard remove` of something that does not exist is bad input (exit 2, one line naming
it and how to list what exists); :meth:`Leaderboard.index` sees a summary.json edited after a first
read in the same process (size, inode and mtime kept), and a forged index.json after one."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from cardbench.benchmark.leaderboard import Leaderboard, LeaderboardError
from cardbench.cli import app

B_PAPER = "cmr-7t__test__ankenbrand2021"
B_V1 = "cmr-7t__test__cardbench-v1"
runner = CliRunner()


@pytest.fixture()
def lb_dir(prefilled_dir, tmp_path):
    """A private copy of the pre-filled leaderboard."""
    dst = tmp_path / "lb"
    shutil.copytree(prefilled_dir, dst)
    return dst


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


# ---------------------------------------------------------------------------------------------
# 1. remove: an entry or benchmark that does not exist


@pytest.mark.parametrize("args, names, lister", [
    (["nope"], "no entry 'nope' in any benchmark", "cardbench leaderboard show -L {root}"),
    (["nope", "-b", "all"], "no entry 'nope' in any benchmark", "cardbench leaderboard show -L {root}"),
    (["nope", "-b", B_PAPER], f"no entry 'nope' in benchmark {B_PAPER}",
     f"cardbench leaderboard show -L {{root}} -b {B_PAPER}"),
    (["nope", "-b", "cmr-7t__test__a"], f"no entry 'nope' in benchmark {B_PAPER}",  # a unique prefix
     f"cardbench leaderboard show -L {{root}} -b {B_PAPER}"),
    (["base", "-b", "no-such-bench"], "no benchmark 'no-such-bench'", f"available: {B_PAPER}, {B_V1}"),
    (["../x", "-b", B_PAPER], "invalid entry name '../x'", "cardbench leaderboard show -L {root}"),
])
def test_remove_of_what_does_not_exist_is_bad_input(lb_dir, args, names, lister):
    before = sorted(p.relative_to(lb_dir).as_posix() for p in lb_dir.rglob("*"))
    r = runner.invoke(app, ["leaderboard", "remove", *args, "-L", str(lb_dir)], env={"COLUMNS": "400"})
    assert r.exit_code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and names in lines[0] and lister.format(root=lb_dir) in lines[0]
    assert "Traceback" not in r.output
    assert sorted(p.relative_to(lb_dir).as_posix() for p in lb_dir.rglob("*")) == before  # nothing removed


def test_remove_in_a_leaderboard_without_benchmarks_is_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    from cardbench.benchmark.leaderboard import FORMAT_VERSION, MARKER, PREFILL_SOURCES

    # every published source marked as pre-filled (and removed): the folder stays without benchmarks
    (empty / MARKER).write_text(json.dumps({"format": FORMAT_VERSION, "prefilled": {k: {} for k in PREFILL_SOURCES}}))
    r = runner.invoke(app, ["leaderboard", "remove", "base", "-b", B_PAPER, "-L", str(empty)],
                      env={"COLUMNS": "400"})
    assert r.exit_code == 2, r.output
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and f"no benchmark '{B_PAPER}'" in lines[0] and \
        f"cardbench leaderboard show -L {empty}" in lines[0], lines


def test_remove_still_removes_and_python_remove_refuses_a_path(lb_dir):
    r = runner.invoke(app, ["leaderboard", "remove", "plain", "-b", B_PAPER, "-L", str(lb_dir)])
    assert r.exit_code == 0, r.output
    assert not (lb_dir / B_PAPER / "entries" / "plain").exists() and (lb_dir / B_V1 / "entries" / "plain").is_dir()
    lb = Leaderboard(lb_dir)
    with pytest.raises(LeaderboardError, match="invalid entry name"):
        lb.remove(B_PAPER, f"../../{B_V1}/entries/base")
    assert (lb_dir / B_V1 / "entries" / "base" / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------
# 3. index(): an edit after a first read in the same process is seen (a guard for any future cache)


def _dice_lv_of(records: dict, name: str) -> float:
    return next(r["mean"] for r in records[name]["results"]
                if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")


def _edit_keeping_size_and_mtime(f, old: bytes, new: bytes) -> None:
    """Replace ``old`` (found once) by ``new`` of the same length in place: same size, inode and mtime."""
    assert len(old) == len(new)
    st = os.stat(f)
    data = f.read_bytes()
    assert data.count(old) == 1
    with open(f, "r+b") as fh:  # in place: the inode stays
        fh.write(data.replace(old, new))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(f)
    assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


@pytest.mark.parametrize("prefix, valid", [(b"0.7", True), (b"7.8", False)])
def test_summary_edited_after_a_first_read_is_checked_again(lb_dir, prefix, valid):
    """base's Dice LV mean in summary.json rewritten in place after a first index() read, with size,
    inode and mtime kept (so index.json's stamp still matches): the next read in the same process
    sees it: 0.7352... (possible) is the new figure; 7.8352... (impossible) leaves base out, named."""
    lb = Leaderboard(lb_dir)
    f = lb_dir / B_PAPER / "entries" / "base" / "summary.json"
    true = _dice_lv_of(lb.index(B_PAPER), "base")
    assert 0.8 < true < 0.9  # the published 0.835
    assert _dice_lv_of(lb.index(B_PAPER), "base") == true  # a second read: index.json up to date
    head = b'"grouping": "all",\n      "group": "all",\n      "class": "LV",\n      "metric": "dice",\n      "mean": '
    assert repr(true).startswith("0.8")
    new_text = prefix + repr(true).encode()[3:]
    _edit_keeping_size_and_mtime(f, head + repr(true).encode(), head + new_text)
    for board in (lb, Leaderboard(lb_dir)):  # the same object and a new one
        got = board.index(B_PAPER)
        if valid:
            assert _dice_lv_of(got, "base") == float(new_text) == pytest.approx(true - 0.1, abs=1e-12)
        else:
            assert "base" not in got and len(got) == 6
            assert any(str(f) in line and "dice mean of class LV" in line for line in board.problems()), \
                board.problems()
    idx = json.loads((lb_dir / B_PAPER / "index.json").read_text(encoding="utf-8"))
    assert ("base" in idx["entries"]) is valid  # the cache file follows the entry


def test_forged_index_json_after_a_first_read_is_rebuilt(lb_dir):
    """index.json's figure of base forged (mtime kept) after the summaries were checked once in this
    process: the record no longer matches the checked summary, so it is rebuilt from the entry."""
    lb = Leaderboard(lb_dir)
    true = _dice_lv_of(lb.index(B_PAPER), "base")
    idx = lb_dir / B_PAPER / "index.json"
    st = os.stat(idx)
    d = json.loads(idx.read_text(encoding="utf-8"))
    next(r for r in d["entries"]["base"]["results"]
         if r["metric"] == "dice" and r["class"] == "LV" and r["grouping"] == "all")["mean"] = 0.999
    idx.write_text(json.dumps(d), encoding="utf-8")
    os.utime(idx, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _dice_lv_of(lb.index(B_PAPER), "base") == true
    assert _dice_lv_of(json.loads(idx.read_text(encoding="utf-8"))["entries"], "base") == true
