"""A usage error of the `cardbench` command (unknown option, missing argument, a value of the wrong type)
is one line on stderr naming the problem and where the help is, exit code 2: no framed box."""

from __future__ import annotations

import sys

import pytest

from cardbench.cli import main


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["cardbench", *args])
    with pytest.raises(SystemExit) as ei:
        main()
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


@pytest.mark.parametrize("args,fragment,help_of", [
    (("score", "--no-such-flag"), "No such option: --no-such-flag", "cardbench score --help"),
    (("score",), "Missing argument", "cardbench score --help"),
    (("score", "p", "-r", "r", "--jobs", "two"), "'--jobs'", "cardbench score --help"),
    (("data", "fetch"), "Missing argument", "cardbench data fetch --help"),
    (("nosuchcommand",), "No such command 'nosuchcommand'", "cardbench --help"),
])
def test_usage_error_is_one_line(monkeypatch, capsys, args, fragment, help_of):
    code, out, err = _run(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0] and f"(see `{help_of}`)" in lines[0]
    assert "╭" not in err and "│" not in err and out == ""


def test_help_and_version_still_exit_0(monkeypatch, capsys):
    code, out, _ = _run(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip()
    code, out, _ = _run(monkeypatch, capsys, "score", "--help")
    assert code == 0 and "Usage" in out and "--protocol" in out


def test_no_command_shows_the_help(monkeypatch, capsys):
    code, out, _ = _run(monkeypatch, capsys)
    assert code == 2 and out.count("Usage") == 1 and "score" in out
