"""80 columns: `cardbench leaderboard show` keeps every entry name, value and interval whole (they
were broken: "second_obs" / "erver", "[0.943," / "0.951]") and the label; no `--help` cuts a word.

Expected strings come from the ranked table (``Leaderboard.ranked``, numbers), formatted here."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.cli import app

BENCH = "cmr-7t__test__cardbench-v1"


@pytest.fixture(scope="module")
def board(prefilled_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("narrow") / "lb"
    shutil.copytree(prefilled_dir, root)  # the shared pre-filled leaderboard is read only
    return root


def _show(board, columns: int) -> list[str]:
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(board), "-b", BENCH], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return r.stdout.splitlines()


def _expected(board):
    ranked = Leaderboard(board).ranked(BENCH, "dice_lv")
    rows = []
    for _, r in ranked.iterrows():
        cis = [f"[{r[f'dice_{c}_ci_low']:.3f}, {r[f'dice_{c}_ci_high']:.3f}]" for c in ("LV", "MY")]
        rows.append((r["entry"], str(r["label"] or ""), f"{r['dice_LV']:.3f}", cis))
    return rows


def test_80_columns_keep_names_values_and_intervals_whole(board):
    lines = _show(board, 80)
    table = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("protocol "))]
    assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
    rows = _expected(board)
    assert len(rows) == 7
    for entry, label, lv, cis in rows:
        at = next(i for i, ln in enumerate(table) if f" {entry} " in f" {ln} ")  # the whole name on one line
        assert lv in table[at].split()  # its LV Dice on the same line
        assert all(ci in table[at + 1] for ci in cis)  # both intervals whole, on the next line
        # the label, under the name: the text of the name's column on the row's next lines
        col, under = table[at].index(f" {entry} ") + 1, []
        for ln in table[at + 1:]:
            if ln[:col].strip():  # the next row starts (its rank)
                break
            under.append(re.split(r"\s{3,}", ln[col:].strip())[0])
        assert " ".join(" ".join(under).split()) == " ".join(label.split()), (label, under)


def test_a_wide_terminal_keeps_value_and_interval_on_one_line(board):
    lines = _show(board, 200)
    for entry, label, lv, cis in _expected(board):
        line = next(ln for ln in lines if f" {entry} " in ln)
        assert f"{lv} {cis[0]}" in line and label in line


def test_no_help_text_is_cut_at_80_columns():
    """Every `--help` at 80 columns shows its help texts whole: rich cuts a word longer than its
    column with "…" (an example benchmark id, a path, a file name were cut). One option name is
    longer than typer's option column at 80 (``--max-seconds-per-image`` of ``evaluate-model``);
    only its line may be cut."""
    import typer.main

    cmd = typer.main.get_command(app)
    paths = [[]]
    for name, sub in cmd.commands.items():
        paths.append([name])
        paths += [[name, s] for s in getattr(sub, "commands", {}) or {}]
    cut = {}
    for p in paths:
        r = CliRunner().invoke(app, [*p, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, p
        lines = [ln for ln in r.stdout.splitlines() if "…" in ln and "--max-seconds-per-ima…" not in ln]
        if lines:
            cut[" ".join(p)] = lines
    assert not cut, cut


def test_the_printed_table_says_what_position_rows_count(sunnybrook_prepared):
    """Under a per-volume protocol the `values` of the base / mid / apex rows count 2D images, the
    other rows volumes (a reader saw 10 for `all` next to 30 for `position=base` unexplained)."""
    from cardbench.benchmark import score
    from cardbench.benchmark.report import print_summary
    from rich.console import Console
    import io

    for protocol, said in (("cardbench-v1", True), ("ankenbrand2021", False)):
        res = score(sunnybrook_prepared / "labels", sunnybrook_prepared, protocol=protocol, progress=False)
        pos = res.aggregates[res.aggregates["grouping"] == "position"]
        allv = res.aggregates[res.aggregates["grouping"] == "all"]
        assert len(pos) and len(allv)
        if said:  # the two kinds of count differ here, which the line explains
            assert pos["n_values"].sum() > allv["n_values"].sum()
        out = io.StringIO()
        print_summary(res, Console(file=out, width=120))
        assert ("which count 2D images" in out.getvalue()) == said, protocol


def test_80_columns_with_several_metrics_split_into_tables_that_keep_the_entries(board):
    """`--metrics iou,hd95` at 80 columns dropped the rank and entry columns (rich squeezed them to
    nothing): the metrics are now shown a few per table, each table with every entry."""
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(board), "-b", BENCH, "--metrics", "iou,hd95"],
                           env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
    ranked = Leaderboard(board).ranked(BENCH, "dice_lv", metrics=["iou", "hd95"])
    headers = [ln for ln in lines if ln.strip().startswith("rank")]
    shown = " ".join(headers)
    for col in ("dice LV", "dice MY", "iou LV", "iou MY", "hd95 LV", "hd95 MY"):
        assert col in shown, col
    for entry in ranked["entry"]:  # every entry in every table
        row = re.compile(rf"^\s+\d+\s+{re.escape(entry)}\s")  # rank, then the entry name
        assert sum(1 for ln in lines if row.match(ln)) == len(headers), entry
    for c in ("iou_LV", "iou_MY"):
        for lo, hi in zip(ranked[c + "_ci_low"], ranked[c + "_ci_high"]):
            assert any(f"[{lo:.3f}, {hi:.3f}]" in ln for ln in lines), (c, lo, hi)
