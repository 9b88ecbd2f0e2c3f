"""Fresh-user trial findings (helper s17d), each test failing on the code before its fix:

1. submitter text (a submission's name and label, file names) reaches the terminal with its control
   characters shown as visible escapes (``\\x1b``, ``\\n``): no escape sequence clears or retitles the
   operator's terminal, no newline in a file name forges a second ``error:`` line;
2. an uncompressed ``.nii`` whose header declares a huge shape is refused after its header, and one
   whose size differs from what its header declares (trailing junk, truncation) is refused with the
   byte counts;
3. messages that follow the content: a PNG or text named ``.nii.gz``; a FIFO or a link to a device in
   place of a mask is "not a regular file", never a missing case; a case name with non-ASCII digits
   is no frame number.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardbench._util import terminal_safe
from cardbench.cli import app

ESC, BEL = "\x1b", "\x07"
EVIL_NAME = "\x1b[2J\x1b[31mEVIL"
EVIL_LABEL = "\x1b[31mRED\x1b[0m \x1b]0;pwned\x07"


def _cli(args, columns=None):
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _output(res) -> str:
    out = res.stdout
    try:
        out += res.stderr
    except ValueError:
        pass
    return out


def _clean(out: str) -> bool:
    """No ESC or BEL byte in ``out`` (a function, so that a failing assert does not print them raw)."""
    return ESC not in out and BEL not in out


def _predictions(ref: Path, dest: Path) -> Path:
    """The reference's own label files as a submission folder (a perfect prediction)."""
    dest.mkdir()
    for f in sorted((ref / "labels").rglob("*.nii.gz")):
        shutil.copy(f, dest / f.name)
    return dest


# ---------------------------------------------------------------- 1. terminal-safe text


@pytest.mark.parametrize("text,shown", [
    (EVIL_NAME, "\\x1b[2J\\x1b[31mEVIL"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x7f\x9b\x00", "\\x7f\\x9b\\x00"),
    ("x\u202ey\u2066z\u2069", "x\\u202ey\\u2066z\\u2069"),
    ("SCD0000101 é 日本 [red]", "SCD0000101 é 日本 [red]"),  # printable text is kept as it is
], ids=["esc", "newline-cr-tab", "del-c1-nul", "bidi", "printable"])
def test_terminal_safe_shows_control_characters_as_escapes(text, shown):
    assert terminal_safe(text) == shown  # the visible forms are Python's repr escapes, written out here


def test_score_title_shows_the_submission_name_escaped(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    (pred / "submission.yaml").write_text('name: "\\e[2J\\e[31mEVIL"\nlabel: "\\e[31mRED\\e[0m \\e]0;pwned\\a"\n')
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save"], columns=200)
    out = _output(res)
    assert res.exit_code == 0, terminal_safe(out)
    assert _clean(out), terminal_safe(out)
    assert "\\x1b[2J\\x1b[31mEVIL vs sunnybrook-sample" in out, terminal_safe(out)


def test_leaderboard_show_and_export_show_the_label_escaped(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    (pred / "submission.yaml").write_text('name: evil1\nlabel: "\\e[31mRED\\e[0m \\e]0;pwned\\a"\n')
    lb = tmp_path / "lb"
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--out", tmp_path / "res", "--leaderboard", lb])
    assert res.exit_code == 0, terminal_safe(_output(res))
    for columns in (80, 200):
        res = _cli(["leaderboard", "show", "-L", lb], columns=columns)
        out = _output(res)
        assert res.exit_code == 0, terminal_safe(out)
        assert _clean(out), terminal_safe(out)
        assert "evil1" in out and "pwned" in out, terminal_safe(out)
    for fmt in ("csv", "markdown"):
        res = _cli(["leaderboard", "show", "-L", lb, "--format", fmt])
        out = _output(res)
        assert _clean(out), fmt
        assert "\\x1b]0;pwned\\x07" in out, (fmt, terminal_safe(out))


def test_file_name_with_newline_cannot_forge_an_error_line(sunnybrook_prepared, tmp_path):
    pred = _predictions(sunnybrook_prepared, tmp_path / "pred")
    some = sorted(pred.glob("*.nii.gz"))[0]
    shutil.copy(some, pred / "evil\nerror: fake line.nii.gz")
    shutil.copy(some, pred / "\x1b[31mred.nii.gz")
    res = _cli(["score", pred, "--reference", sunnybrook_prepared, "--no-save"])
    out = _output(res)
    assert res.exit_code == 2, terminal_safe(out)
    assert _clean(out), terminal_safe(out)
    lines = out.splitlines()
    assert not any(line.startswith("error: fake line") for line in lines), terminal_safe(out)
    forged = [line for line in lines if "fake line" in line]
    assert len(forged) == 1, terminal_safe(out)
    assert "evil\\nerror: fake line" in forged[0] and forged[0].startswith("error: ")
    assert any("\\x1b[31mred.nii.gz" in line for line in lines), terminal_safe(out)
