"""s18b: `leaderboard remove` of something that does not exist is bad input (exit 2, one line naming
it and how to list what exists); the warnings reporter of the leaderboard commands; the in-process
cache of checked summary.json records of :meth:`Leaderboard.index` (an edited file is checked again)."""

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
