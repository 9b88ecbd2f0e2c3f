"""Issue 13 item 8 papercuts: one dataset version everywhere (card, `data list`, benchmark.json,
summary.json); one style for the leaderboard folder option (`--leaderboard/-L DIR`) across the
`cardbench leaderboard` subcommands, the old positional form still accepted; a shipped config name
wins over a file of that name in the current folder."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cardbench.cli import app
from cardbench.datasets.cards import load_card

runner = CliRunner()
B_PAPER = "cmr-7t__test__ankenbrand2021"


# --------------------------------------------------------------------------- (a) one version

def test_7t_version_is_the_cards_everywhere(prefilled_dir):
    card_version = load_card("cmr-7t").version
    listed = {r["name"]: r["version"] for r in json.loads(runner.invoke(app, ["data", "list", "--json"]).stdout)}
    assert listed["cmr-7t"] == card_version
    bench = json.loads((prefilled_dir / B_PAPER / "benchmark.json").read_text())
    assert bench["dataset"] == {"name": "cmr-7t", "version": card_version}
    entries = sorted((prefilled_dir / B_PAPER / "entries").glob("*/summary.json"))
    assert len(entries) == 7
    for f in entries:
        assert json.loads(f.read_text())["dataset"]["version"] == card_version, f
    # the manual masks belong to the kaggle-dsb-ukbb card: its version
    kb = json.loads((prefilled_dir / "kaggle-dsb-manual-masks__all__ankenbrand2021" / "benchmark.json").read_text())
    assert kb["dataset"]["version"] == load_card("kaggle-dsb-ukbb").version
    assert "ankenbrand2021" not in {bench["dataset"]["version"], kb["dataset"]["version"]}


def test_a_leaderboard_written_with_the_old_version_still_takes_entries(prefilled_dir, tmp_path):
    from cardbench.benchmark.leaderboard import Leaderboard, add_entry
    from cardbench.reproductions.ankenbrand2021.seven_tesla import PUBLISHED, score_published

    lb_dir = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb_dir)
    f = lb_dir / B_PAPER / "benchmark.json"
    old = json.loads(f.read_text())
    old["dataset"]["version"] = "ankenbrand2021"   # what cardbench wrote before
    f.write_text(json.dumps(old))
    res = score_published(PUBLISHED[0], "ankenbrand2021")
    e = add_entry(res, lb_dir, "again", prefill=False)
    assert e.benchmark == B_PAPER
    assert "again" in Leaderboard(lb_dir).entry_names(B_PAPER)
    # a genuinely different version is still refused
    old["dataset"]["version"] = "0.9.0"
    f.write_text(json.dumps(old))
    from cardbench.benchmark.leaderboard import LeaderboardError

    with pytest.raises(LeaderboardError, match="version"):
        add_entry(res, lb_dir, "again2", prefill=False)


# --------------------------------------------------------------------------- (b) --leaderboard/-L everywhere

@pytest.mark.parametrize("cmd", ["show", "remove", "export", "prefill", "private", "create"])
def test_every_subcommand_documents_leaderboard_option(cmd):
    r = runner.invoke(app, ["leaderboard", cmd, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "--leaderboard" in r.stdout and "-L" in r.stdout


def test_leaderboard_option_and_positional_form(prefilled_dir, tmp_path):
    lb_dir = tmp_path / "lb"
    shutil.copytree(prefilled_dir, lb_dir)
    new = runner.invoke(app, ["leaderboard", "show", "-L", str(lb_dir), "-b", B_PAPER, "-f", "csv"])
    old = runner.invoke(app, ["leaderboard", "show", str(lb_dir), "-b", B_PAPER, "-f", "csv"])
    assert new.exit_code == 0 and old.exit_code == 0
    assert new.stdout == old.stdout and "second_observer" in new.stdout
    both = runner.invoke(app, ["leaderboard", "show", str(tmp_path), "-L", str(lb_dir)])
    assert both.exit_code == 2 and "two leaderboard folders" in both.output
    r = runner.invoke(app, ["leaderboard", "remove", "base", "--leaderboard", str(lb_dir), "-b", B_PAPER])
    assert r.exit_code == 0, r.output
    assert not (lb_dir / B_PAPER / "entries" / "base").exists()
    assert (lb_dir / "cmr-7t__test__cardbench-v1" / "entries" / "base").is_dir()
    r = runner.invoke(app, ["leaderboard", "prefill", "-L", str(lb_dir), "--force"])
    assert r.exit_code == 0 and (lb_dir / B_PAPER / "entries" / "base").is_dir()
    r = runner.invoke(app, ["leaderboard", "private", "-L", str(lb_dir), "-b", B_PAPER])
    assert r.exit_code == 0 and "private" in r.stdout


# --------------------------------------------------------------------------- (c) shipped config names win

def test_shipped_config_wins_over_a_local_file(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    from cardbench.baselines.config import read_config_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("epochs: 999\n")
    text, where = read_config_text("demo")
    assert where == "shipped:demo" and "999" not in text
    # an argument that looks like a path is a file
    text, where = read_config_text("./demo")
    assert text == "epochs: 999\n"
    (tmp_path / "demo.yaml").write_text("epochs: 7\n")
    assert read_config_text("demo.yaml")[0] == "epochs: 7\n"
    # a name no shipped config has is still read from the file
    (tmp_path / "mine").write_text("epochs: 3\n")
    assert read_config_text("mine") == ("epochs: 3\n", "mine")
