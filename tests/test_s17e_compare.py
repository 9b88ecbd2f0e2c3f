"""`cardbench compare A B` checks each result folder's per_subject.csv before comparing (a Dice of
5.0 or -3, a negative HD95, text or an empty file used to be compared, or failed without naming
the file). Real data: the Sunnybrook sample scored against itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.cli import app


@pytest.fixture(scope="module")
def result(sunnybrook_prepared, tmp_path_factory):
    from cardbench.benchmark import score

    out = tmp_path_factory.mktemp("cmp") / "a"
    score(sunnybrook_prepared / "labels", sunnybrook_prepared, progress=False).write(out)
    return out


def _forged(result, tmp_path, edit) -> Path:
    b = tmp_path / "b"
    shutil.copytree(result, b)
    ps = b / "per_subject.csv"
    edit(ps)
    return b


def _set_mean(metric, value):
    def edit(ps):
        df = pd.read_csv(ps, dtype=str, keep_default_na=False)
        row = df.index[(df["metric"] == metric) & (df["class"] == "LV")][0]
        df.loc[row, "mean"] = value
        df.to_csv(ps, index=False)
    return edit


@pytest.mark.parametrize("edit, says", [
    (_set_mean("dice", "5.0"), "outside [0, 1]"),
    (_set_mean("dice", "-3"), "outside [0, 1]"),
    (_set_mean("hd95", "-3"), "negative"),
    (_set_mean("dice", "abc"), "text"),
    (lambda ps: ps.write_bytes(b""), "per_subject.csv"),
])
def test_compare_refuses_a_corrupt_per_subject_table(result, tmp_path, edit, says):
    b = _forged(result, tmp_path, edit)
    r = CliRunner().invoke(app, ["compare", str(result), str(b)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert str(b / "per_subject.csv") in lines[0] and says in lines[0], lines[0]


def test_compare_of_two_sound_folders_still_works(result, tmp_path):
    b = _forged(result, tmp_path, lambda ps: None)
    r = CliRunner().invoke(app, ["compare", str(result), str(b)])
    assert r.exit_code == 0, r.output


def test_volumes_score_refuses_an_impossible_grid(tmp_path):
    """`--grid 1000000000` scaled every volume to 1e-11 mL with exit 0; a grid side is at most 4096 px."""
    t = tmp_path / "t.tsv"
    t.write_text("file\tlv_pixels\tmy_pixels\nimages/7/7-frame000-slice000.png\t1\t1\n")
    r = CliRunner().invoke(app, ["volumes", "score", str(t), "--grid", "1000000000"])
    assert r.exit_code == 2 and "--grid" in r.output and "4096" in r.output, r.output  # a usage error
