"""Second fresh-user trial of stop 18: what got around the first round of fixes."""

from __future__ import annotations

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cardbench.benchmark.leaderboard import Leaderboard
from cardbench.cli import app
from helpers import copy_board

B = "cmr-7t__test__ankenbrand2021"


def _entry(lb, name="ukbb_cardiac"):
    return lb / B / "entries" / name


def test_summary_per_subject_and_aggregates_forged_together_are_refused(prefilled_dir, tmp_path):
    """summary.json, per_subject.csv and aggregates.csv edited to agree (Dice LV 0.999 instead of
    0.668): the per-subject means are recomputed from per_case.csv, which still gives 0.668."""
    lb = copy_board(prefilled_dir, tmp_path)
    e = _entry(lb)
    s = json.loads((e / "summary.json").read_text())
    for r in s["results"]:
        if r["metric"] == "dice" and r["class"] == "LV":
            r["mean"] = 0.999
    (e / "summary.json").write_text(json.dumps(s))
    for f in ("per_subject.csv", "aggregates.csv"):
        t = pd.read_csv(e / f, dtype={"subject": str})
        t.loc[(t["metric"] == "dice") & (t["class"] == "LV"), "mean"] = 0.999
        t.to_csv(e / f, index=False)
    board = Leaderboard(lb)
    assert "ukbb_cardiac" not in board.checked_index(B)
    (msg,) = [p for p in board.problems() if "ukbb_cardiac" in p]
    # the per-case table's own mean of subject 26 (dice LV, image level), computed here with pandas
    pc = pd.read_csv(e / "per_case.csv", dtype={"subject": str})
    want = pc[(pc["level"] == "image") & (pc["class"] == "LV") & (pc["subject"] == "26")]["dice"].mean()
    assert "per_subject.csv" in msg and "mean 0.999" in msg and f"{want:.10g}" in msg
    r = CliRunner().invoke(app, ["leaderboard", "show", "-L", str(lb), "-b", B, "-f", "csv"])
    assert r.exit_code == 0 and "ukbb_cardiac" not in r.stdout and "0.999" not in r.stdout


def test_summary_subject_count_is_checked_against_per_case(prefilled_dir, tmp_path):
    lb = copy_board(prefilled_dir, tmp_path)
    f = _entry(lb) / "summary.json"
    s = json.loads(f.read_text())
    s["counts"]["subjects"] = 999
    f.write_text(json.dumps(s))
    board = Leaderboard(lb)
    assert "ukbb_cardiac" not in board.checked_index(B)
    assert any("counts 999 subjects" in p and "has 3" in p for p in board.problems())


def test_every_prefilled_entry_agrees_with_its_per_case_table(prefilled_dir):
    board = Leaderboard(prefilled_dir)
    for b in board.benchmark_ids():
        assert set(board.checked_index(b)) == set(board.entry_names(b)), b
    assert board.problems() == []


@pytest.mark.parametrize("cmd", [["data", "path"], ["data", "verify"], ["data", "info"]])
def test_a_file_given_as_the_cache_is_refused(cmd, tmp_path, monkeypatch):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    r = CliRunner().invoke(app, [*cmd, "sunnybrook-sample", "--cache", str(f)], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "a file is in the way where a folder is needed" in r.stderr
    assert str(f) in r.stderr and "--cache" in r.stderr
    monkeypatch.setenv("CARDBENCH_DATA", str(f))
    r = CliRunner().invoke(app, [*cmd, "sunnybrook-sample"], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "CARDBENCH_DATA" in r.stderr


def test_negative_dimension_in_a_header_is_one_line(tmp_path):
    """A header declaring dim[2] = -5 (bytes edited) is refused before anything is decoded."""
    from cardbench.dashboard.images import read_volume
    from cardbench.datasets.formats import MaskReadError, read_mask

    img = nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4))
    raw = bytearray(img.to_bytes())
    raw[42:44] = np.int16(-5).tobytes()  # dim[1] (header offset 40 + 2 * 1): the first axis
    p = tmp_path / "neg.nii.gz"
    p.write_bytes(gzip.compress(bytes(raw)))
    for read in (read_mask, read_volume):
        with pytest.raises(MaskReadError) as ei:
            read(p)
        msg = str(ei.value)
        assert str(p) in msg and "negative dimension" in msg and "\n" not in msg


def test_negative_reference_ef_is_noted(sunnybrook_prepared, tmp_path):
    """ED and ES swapped for one subject of the reference's subjects.csv: its reference ESV is then
    above its EDV (the volumes of its two annotated frames, swapped), and the result says so."""
    import shutil

    from cardbench.benchmark import score
    from cardbench.benchmark.scoring import _negative_reference_ef_notes

    # by hand: EF -26.4 % (ESV above EDV) is noted, EF 60 % is not
    table = pd.DataFrame({"subject": ["a", "b", "a"], "index": ["LVEF", "LVEF", "LVEDV"], "ref": [-26.4, 60.0, 141.0]})
    (note,) = _negative_reference_ef_notes(table)
    assert note.startswith("1 subject(s) with a negative reference LVEF") and ": a;" in note

    ref = tmp_path / "ref"
    shutil.copytree(sunnybrook_prepared, ref)
    subjects = pd.read_csv(ref / "subjects.csv", dtype={"subject": str})
    ok = score(ref / "labels", ref, protocol="cardbench-v1", progress=False)
    assert not any("negative reference" in n for n in ok.summary["notes"])
    row = subjects.index[subjects["subject"] == "SCD0000101"][0]
    subjects.loc[row, ["ed_frame", "es_frame"]] = subjects.loc[row, ["es_frame", "ed_frame"]].to_numpy()
    subjects.to_csv(ref / "subjects.csv", index=False)
    res = score(ref / "labels", ref, protocol="cardbench-v1", progress=False)
    notes = [n for n in res.summary["notes"] if "negative reference LVEF" in n]
    assert len(notes) == 1 and "SCD0000101" in notes[0] and "swapped" in notes[0]


@pytest.mark.parametrize("method", ["Scaled_Masks", "scaled_masks_WS", "scaled-masks"])
def test_a_known_reference_written_otherwise_is_refused(method, tmp_path):
    """The 7T table with methodA renamed (and train rows relabelled test) was scored as a dataset
    of its own named like cmr-7t, its split taken from its own `set` column."""
    from cardbench.datasets.embedded import data_root

    src = data_root() / "cmr-seg-tl/analysis/7T/confusion_tables/confusion_WS_base.tsv.gz"
    t = pd.read_csv(io.BytesIO(gzip.decompress(src.read_bytes())), sep="\t", dtype=str)
    t["methodA"] = method
    f = tmp_path / "c.tsv"
    t.to_csv(f, sep="\t", index=False)
    r = CliRunner().invoke(app, ["score", str(f), "--split", "test", "--protocol", "ankenbrand2021", "--no-save"],
                           env={"COLUMNS": "400"})
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert f"methodA '{method}'" in lines[0] and "'scaled_masks' (dataset cmr-7t)" in lines[0]
    t["methodA"] = "my_own_reference"  # a name of its own is scored (its split from the table, noted)
    t.to_csv(f, sep="\t", index=False)
    r = CliRunner().invoke(app, ["score", str(f), "--split", "test", "--protocol", "ankenbrand2021", "--no-save"])
    assert r.exit_code == 0, r.output


def test_protocol_name_differing_from_a_built_in_only_in_case_is_refused(tmp_path):
    r = CliRunner().invoke(app, ["protocol", "show", "cardbench-v1"])
    assert r.exit_code == 0
    f = tmp_path / "p.yaml"
    f.write_text(r.stdout.replace("name: cardbench-v1", "name: CardBench-V1", 1))
    assert "CardBench-V1" in f.read_text()
    from cardbench.benchmark.protocols import ProtocolError, load_protocol

    with pytest.raises(ProtocolError) as ei:
        load_protocol(f)
    assert "only in upper/lower case" in str(ei.value) and "'cardbench-v1'" in str(ei.value)
    f.write_text(r.stdout)  # the built-in's own definition, under its own name, still loads
    assert load_protocol(f).name == "cardbench-v1"
