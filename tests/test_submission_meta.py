"""Submission metadata: `label` in submission.yaml is accepted, `score --label/--team/--method` set (and
override) it, and it reaches summary.json and the leaderboard entry; `baseline predict` fills it."""

from __future__ import annotations

import json
import shutil

import yaml
from typer.testing import CliRunner

from cardbench.cli import app

runner = CliRunner()


def _submission(sunnybrook_prepared, tmp_path, meta: dict):
    sub = tmp_path / "sub"
    shutil.copytree(sunnybrook_prepared / "labels", sub)
    (sub / "submission.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    return sub


def test_label_in_yaml_reaches_summary_and_leaderboard(sunnybrook_prepared, prefilled_dir, tmp_path):
    sub = _submission(sunnybrook_prepared, tmp_path, {"name": "self", "label": "Sunnybrook self-check",
                                                      "team": "Lab X"})
    lb = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb)
    res = runner.invoke(app, ["score", str(sub), "--reference", str(sunnybrook_prepared), "--out", str(tmp_path / "r"),
                              "--leaderboard", str(lb), "--method", "copy of the reference labels"])
    assert res.exit_code == 0, res.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())["submission"]
    assert (s["label"], s["team"], s["method"]) == ("Sunnybrook self-check", "Lab X", "copy of the reference labels")
    entry = next(lb.glob("sunnybrook-sample__*/entries/self/submission.yaml"))
    e = yaml.safe_load(entry.read_text())
    assert (e["label"], e["team"], e["method"]) == ("Sunnybrook self-check", "Lab X", "copy of the reference labels")
    shown = runner.invoke(app, ["leaderboard", "show", str(lb), "-b", "sunnybrook-sample", "-f", "csv"])
    assert shown.exit_code == 0 and "Sunnybrook self-check" in shown.stdout


def test_command_line_overrides_yaml(sunnybrook_prepared, tmp_path):
    sub = _submission(sunnybrook_prepared, tmp_path, {"name": "self", "label": "old", "team": "old team"})
    res = runner.invoke(app, ["score", str(sub), "--reference", str(sunnybrook_prepared), "--out", str(tmp_path / "r"),
                              "--label", "new label", "--team", "new team", "--json"])
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)["submission"]
    assert (s["label"], s["team"]) == ("new label", "new team")


def test_unknown_key_still_rejected(sunnybrook_prepared, tmp_path):
    sub = _submission(sunnybrook_prepared, tmp_path, {"name": "self", "lable": "typo"})
    res = runner.invoke(app, ["score", str(sub), "--reference", str(sunnybrook_prepared), "--no-save"])
    assert res.exit_code == 2 and "unknown keys ['lable']" in res.stderr
