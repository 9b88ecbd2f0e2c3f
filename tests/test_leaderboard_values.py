"""An edited leaderboard entry whose summary.json holds an impossible score (a Dice of 1.5, Infinity,
text) is refused with one line naming the file, and never ranked (found by a fresh-user trial)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cardbench.benchmark.metric_registry import get_metric
from cardbench.cli import app


def _edit_first_dice(lb, value):
    bench = sorted(p for p in lb.iterdir() if (p / "entries").is_dir())[0]
    entry = sorted(p for p in (bench / "entries").iterdir() if not p.name.startswith("."))[0]
    f = entry / "summary.json"
    text = f.read_text(encoding="utf-8")
    d = json.loads(text)
    r = next(r for r in d["results"] if r["metric"] == "dice")
    r["mean"] = "@@V@@"
    f.write_text(json.dumps(d).replace('"@@V@@"', value), encoding="utf-8")
    return bench.name, entry.name, f


@pytest.mark.parametrize("value,why", [("1.5", "outside [0, 1]"), ("-5", "outside [0, 1]"),
                                       ("Infinity", "not finite"), ('"abc"', "not a number"),
                                       # no value where values were aggregated (n_values > 0 in the entry)
                                       ("NaN", "no value although"), ("null", "no value although")])
def test_impossible_dice_is_refused_not_ranked(prefilled_dir, tmp_path, value, why):
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    bench, name, f = _edit_first_dice(lb, value)
    res = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-f", "json"])
    assert str(f) in res.stderr and why in res.stderr and "the entry is corrupt" in res.stderr, res.stderr
    assert res.exit_code == 0  # the other entries are still shown
    board = next(b for b in json.loads(res.stdout) if b["benchmark"] == bench)
    names = [e["entry"] for e in board["entries"]]
    assert names and name not in names  # skipped, not ranked


def test_bad_value_by_hand():
    dice, hd95 = get_metric("dice"), get_metric("hd95")
    assert dice.bad_value(0.0) is None and dice.bad_value(1.0) is None and dice.bad_value(None) is None
    assert dice.bad_value(float("nan")) is None  # no value (all excluded) is allowed
    assert dice.bad_value(1.0000001) and dice.bad_value(-0.1) and dice.bad_value(float("inf"))
    assert dice.bad_value(True) and dice.bad_value("0.9")
    assert hd95.bad_value(250.0) is None and hd95.bad_value(-1.0) and hd95.bad_value(float("inf"))


def test_a_mean_must_agree_with_its_count():
    from cardbench.benchmark.leaderboard.index import _count_mismatch

    assert _count_mismatch(float("nan"), 0) is None and _count_mismatch(None, 0) is None  # all excluded
    assert _count_mismatch(0.9, 12) is None
    assert "no value although 12" in _count_mismatch(float("nan"), 12)
    assert "from 0 values" in _count_mismatch(0.9, 0)
    assert _count_mismatch(float("nan"), None) is None  # no count to compare with
