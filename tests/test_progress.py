"""Progress in logs: where stderr is not a terminal, long work writes plain lines (every 10 %, or one per
epoch for training); in a terminal a rich bar; nothing when disabled."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from cardbench._progress import LogProgress, progress, progress_bar
from cardbench.cli import app

runner = CliRunner()


def test_a_line_every_10_percent():
    s = io.StringIO()
    with progress(20, "scoring", stream=s) as p:
        for _ in range(20):
            p.advance()
    lines = s.getvalue().splitlines()
    assert [int(re.search(r": (\d+) %", ln).group(1)) for ln in lines] == list(range(10, 101, 10))
    assert lines[2].startswith("scoring: 30 % (6/20), ") and "elapsed" in lines[2] and "left" in lines[2]
    assert "left" not in lines[-1]  # nothing left at 100 %


def test_uneven_steps_and_bytes():
    s = io.StringIO()
    with progress(3_000_000, "fetch x", stream=s, unit="bytes") as p:
        p.advance(2_500_000, info="1/2 files")  # crosses 10 % ... 80 %: one line
        p.advance(500_000, info="2/2 files")
    lines = s.getvalue().splitlines()
    assert lines == [lines[0], lines[1]] and len(lines) == 2
    assert lines[0].startswith("fetch x: 83 % (2.5 MB/3.0 MB)") and lines[0].endswith("; 1/2 files")
    assert lines[1].startswith("fetch x: 100 % (3.0 MB/3.0 MB)")


def test_every_advance_and_silent_tasks():
    s = io.StringIO()
    with progress_bar(True, stream=s) as bar:
        ep = bar.add_task("training demo: epoch", total=3, completed=1, log_every=0)
        step = bar.add_task("  batches", total=5, log_every=None)
        for _ in range(5):
            bar.advance(step)
        bar.update(ep, advance=1, info="loss 0.5")
        bar.update(ep, advance=1, info="loss 0.4")
    assert isinstance(bar, LogProgress)
    lines = s.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("training demo: epoch: 67 % (2/3)") and lines[0].endswith("; loss 0.5")
    assert lines[1].startswith("training demo: epoch: 100 % (3/3)") and lines[1].endswith("; loss 0.4")


def test_disabled_and_terminal():
    s = io.StringIO()
    with progress(10, "x", enabled=False, stream=s) as p:
        p.advance(10)
    assert s.getvalue() == ""
    t = io.StringIO()
    con = Console(file=t, force_terminal=True, width=80)
    with progress_bar(True, con) as bar:
        task = bar.add_task("x", total=10)
        bar.advance(task, 10)
    assert not isinstance(bar, LogProgress)
    assert "10 %" not in t.getvalue() and "10/10" in t.getvalue()  # a rich bar, not log lines


def test_quiet_for_short_work():
    s = io.StringIO()
    with progress(10, "scoring", stream=s, quiet_for=3600) as p:
        for _ in range(10):
            p.advance()
    assert s.getvalue() == ""  # ended within the quiet time: no line, not even 100 %


def test_score_writes_log_lines_when_not_a_terminal(sunnybrook_prepared, tmp_path, monkeypatch):
    from cardbench.benchmark import scoring

    monkeypatch.setattr(scoring, "PROGRESS_QUIET_S", 0.0)  # the sample scores within the default quiet time
    res = runner.invoke(app, ["score", str(sunnybrook_prepared / "labels"), "--reference", str(sunnybrook_prepared),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("scoring: ")]
    assert [re.search(r": (\d+) %", ln).group(1) for ln in lines] == [str(k) for k in range(10, 101, 10)]
    assert lines[-1].startswith("scoring: 100 % (10/10)")  # 5 subjects x ED, ES
