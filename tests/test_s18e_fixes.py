"""Fresh-user trial fixes: scores that were silently wrong are now refused (exit 2, one line each).

1. a confusion table's ``set`` column may not move a subject out of the dataset's standard split;
2. protocol-file policy values are range-checked, and a file may not keep a built-in protocol's name
   while changing it;
3. an ED/ES frame in subjects.csv that no reference mask has is refused;
4. a NIfTI label mask stored with scl_slope/scl_inter is refused (nibabel would scale its labels).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cardbench.benchmark.protocols import ANKENBRAND2021, ProtocolError, load_protocol
from cardbench.cli import app
from cardbench.datasets.reference import ReferenceError, load_reference
from helpers import SPACING, affine, save_nifti

runner = CliRunner()
TABLES = Path(__file__).resolve().parents[1] / "src/cardbench/datasets/data/cmr-seg-tl/analysis/7T/confusion_tables"


def _errors(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


# --------------------------------------------------------------------------- 1. table split

@pytest.fixture(scope="module")
def base_rows() -> tuple[str, list[list[str]]]:
    """Header and rows of the seed's published 7T table (reference WS, baseModel), real data."""
    text = gzip.decompress((TABLES / "confusion_WS_base.tsv.gz").read_bytes()).decode()
    lines = text.splitlines()
    return lines[0], [ln.split("\t") for ln in lines[1:]]


def _small_table(base_rows, tmp_path, relabel: int) -> Path:
    """A small cut of the real table: 20 test rows of the first test subject, plus ``relabel`` train
    rows of the first train subject with their set changed to 'test' (the trial's awk, shortened)."""
    header, rows = base_rows
    test = [r for r in rows if r[1] == "test"][:20]
    first = next(r[0].split("_")[0] for r in rows if r[1] == "train")
    train = [r for r in rows if r[1] == "train" and r[0].split("_")[0] == first][:relabel]
    moved = [[r[0], "test", *r[2:]] for r in train]
    p = tmp_path / "relabelled.tsv"
    p.write_text("\n".join([header] + ["\t".join(r) for r in test + moved]) + "\n")
    return p


def test_relabelled_train_rows_are_refused(base_rows, tmp_path):
    from cardbench.datasets.splits import load_split

    p = _small_table(base_rows, tmp_path, relabel=3)
    subject = base_rows[1][[r[1] for r in base_rows[1]].index("train")][0].split("_")[0]
    assert load_split("cmr-7t").assignment[subject] == "train"  # the standard split, not our guess
    res = runner.invoke(app, ["score", str(p), "--protocol", "ankenbrand2021", "--split", "test", "--no-save"])
    assert res.exit_code == 2, res.output
    errs = _errors(res)
    assert len(errs) == 1
    assert f"subject {subject} is in split 'test'" in errs[0] and "'train' in the standard split of cmr-7t" in errs[0]
    assert "relabelled.tsv" in errs[0]


def test_table_agreeing_with_standard_split_scores(base_rows, tmp_path):
    p = _small_table(base_rows, tmp_path, relabel=0)
    res = runner.invoke(app, ["score", str(p), "--protocol", "ankenbrand2021", "--split", "test", "--no-save",
                              "--json"])
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads(res.stdout)
    assert not any("comes from the table" in n for n in summary.get("notes", []))


def test_table_without_known_reference_says_split_came_from_table(base_rows, tmp_path):
    from cardbench.benchmark.confusion_tables import score_confusion_table

    header, rows = base_rows
    mine = [[r[0], r[1], "my_reference", *r[3:]] for r in rows if r[1] == "test"][:5]
    p = tmp_path / "other.tsv"
    p.write_text("\n".join([header] + ["\t".join(r) for r in mine]) + "\n")
    with score_confusion_table(p, "ankenbrand2021", split="test") as result:
        assert any("comes from the table's 'set' column" in n for n in result.summary.get("notes", []))


# --------------------------------------------------------------------------- 2. protocol files

def _edited(tmp_path, old: str, new: str, rename: str | None = None) -> Path:
    text = ANKENBRAND2021.to_yaml()
    assert old in text
    text = text.replace(old, new, 1)
    if rename:
        text = text.replace("name: ankenbrand2021", f"name: {rename}", 1)
    p = tmp_path / "ank.yaml"
    p.write_text(text)
    return p


def test_policy_value_outside_unit_interval_refused(tmp_path):
    p = _edited(tmp_path, "both_empty: 1.0", "both_empty: 5.0", rename="ank-mine")
    with pytest.raises(ProtocolError, match=r"policy\.dice\.both_empty': bad value 5\.0; allowed: a number in \[0, 1\]"):
        load_protocol(p)
    table = TABLES / "confusion_WS_TR.tsv.gz"
    res = runner.invoke(app, ["score", str(table), "--protocol", str(p), "--split", "test", "--no-save"])
    assert res.exit_code == 2 and len(_errors(res)) == 1 and "ank.yaml" in _errors(res)[0]


def test_negative_distance_policy_refused():
    from dataclasses import replace

    from cardbench.benchmark.protocols import CARDBENCH_V1

    pol = {m: dict(r) for m, r in CARDBENCH_V1.policy.items()}
    pol["hd95"]["pred_empty"] = -1.0
    with pytest.raises(ProtocolError, match=r"policy\.hd95\.pred_empty': bad value -1\.0; allowed: a number >= 0"):
        replace(CARDBENCH_V1, policy=pol)
    pol["hd95"]["pred_empty"] = 50.0  # a distance in mm may exceed 1
    assert replace(CARDBENCH_V1, policy=pol).policy["hd95"]["pred_empty"] == 50.0


def test_file_changing_builtin_under_its_name_refused(tmp_path):
    p = _edited(tmp_path, "both_empty: 1.0", "both_empty: 0.5")
    with pytest.raises(ProtocolError, match=r"the file changes protocol ankenbrand2021 v1\.0 "
                                            r"\(policy\.dice\.both_empty 1\.0 -> 0\.5\); give it a name of its own"):
        load_protocol(p)
    # the unchanged file (`cardbench protocol show`) is the built-in and loads as it
    same = tmp_path / "same.yaml"
    same.write_text(ANKENBRAND2021.to_yaml())
    assert load_protocol(same) == ANKENBRAND2021


def test_leaderboard_refusal_names_the_difference():
    from cardbench.benchmark.leaderboard.store import _protocol_difference
    from cardbench.benchmark.protocols import protocol_differences

    have = ANKENBRAND2021.to_dict()
    want = {**have, "policy": {**have["policy"], "dice": {**have["policy"]["dice"], "both_empty": "nan"}}}
    assert protocol_differences(have, have) == []
    assert _protocol_difference(have, want) == "differs in policy.dice.both_empty 1.0 -> 'nan'"


# --------------------------------------------------------------------------- 3. ED/ES frames

def _reference(tmp_path, ed, es) -> Path:
    arr = np.zeros((6, 6, 2), np.uint8)
    arr[1:3, 1:3, :] = 1
    ref = tmp_path / "ref"
    for f in (0, 5):
        save_nifti(ref / "labels" / "s1" / f"s1_frame{f:02d}.nii.gz", arr)
    (ref / "subjects.csv").write_text(f"subject,split,ed_frame,es_frame\ns1,test,{ed},{es}\n")
    return ref


def test_nonexistent_phase_frames_refused(tmp_path):
    ref = _reference(tmp_path, 99, -1)
    with pytest.raises(ReferenceError, match=r"subjects\.csv row 2: subject s1: ed_frame 99 and es_frame -1 does "
                                             r"not exist \(its reference masks have frames 0, 5\)"):
        load_reference(ref)
    res = runner.invoke(app, ["score", str(ref / "labels"), "--reference", str(ref), "--no-save"])
    assert res.exit_code == 2 and len(_errors(res)) == 1 and "subjects.csv row 2" in _errors(res)[0]


def test_existing_phase_frames_load(tmp_path):
    ref = load_reference(_reference(tmp_path, 0, 5))
    assert (ref.phase_of("s1", 0), ref.phase_of("s1", 5)) == ("ED", "ES")


# --------------------------------------------------------------------------- 4. scaled NIfTI masks

def _scaled_mask(path: Path, slope: float, inter: float) -> np.ndarray:
    """A uint8 label mask whose header's scl_slope/scl_inter are set in its bytes (nibabel resets
    them on save); header offsets 112 and 116 (float32) per nifti1.h."""
    arr = np.zeros((6, 6, 2), np.uint8)
    arr[1:3, 1:3, :] = 1
    raw = bytearray(nib.Nifti1Image(arr, affine(SPACING)).to_bytes())
    raw[112:120] = struct.pack("<ff", slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(raw))
    return arr


@pytest.mark.parametrize("slope,inter", [(2.0, 0.0), (1.0, 3.0)])
def test_scaled_label_mask_refused(tmp_path, slope, inter):
    from cardbench.datasets.formats import MaskReadError
    from cardbench.datasets.io import read_nifti_mask as read_mask

    p = tmp_path / "s1_frame00.nii"
    _scaled_mask(p, slope, inter)
    assert nib.load(p).get_fdata().max() != 1  # nibabel itself scales: label 1 would not stay 1
    with pytest.raises(MaskReadError, match="labels must be stored unscaled"):
        read_mask(p)


@pytest.mark.parametrize("slope,inter", [(float("nan"), float("nan")), (1.0, 0.0), (0.0, 0.0)])
def test_unscaled_label_mask_reads(tmp_path, slope, inter):
    from cardbench.datasets.io import read_nifti_mask as read_mask

    p = tmp_path / "s1_frame00.nii"
    arr = _scaled_mask(p, slope, inter)
    np.testing.assert_array_equal(np.asarray(read_mask(p).array), arr)


def test_scaled_prediction_exits_2(tmp_path):
    arr = np.zeros((6, 6, 2), np.uint8)
    arr[1:3, 1:3, :] = 1
    save_nifti(tmp_path / "ref" / "labels" / "s1" / "s1_frame00.nii.gz", arr)  # nibabel default: slope NaN
    _scaled_mask(tmp_path / "pred" / "s1_frame00.nii", 2.0, 0.0)
    res = runner.invoke(app, ["score", str(tmp_path / "pred"), "--reference", str(tmp_path / "ref"), "--no-save"])
    assert res.exit_code == 2, res.output
    assert any("labels must be stored unscaled" in e and "scl_slope" in e for e in _errors(res))


def test_table_subject_outside_standard_split_refused(base_rows, tmp_path):
    from cardbench.datasets.splits import load_split

    header, rows = base_rows
    r = next(r for r in rows if r[1] == "test")
    subject = r[0].split("_")[0]
    assert "999" not in load_split("cmr-7t").assignment
    alien = ["999" + r[0][len(subject):], *r[1:]]
    p = tmp_path / "alien.tsv"
    p.write_text("\n".join([header, "\t".join(r), "\t".join(alien)]) + "\n")
    res = runner.invoke(app, ["score", str(p), "--protocol", "ankenbrand2021", "--split", "test", "--no-save"])
    assert res.exit_code == 2 and len(_errors(res)) == 1
    assert "subject 999 (set 'test') is not in the standard split of cmr-7t" in _errors(res)[0]


@pytest.mark.parametrize("ed", ["1.5", "x"])
def test_phase_frame_that_is_no_frame_number_refused(tmp_path, ed):
    with pytest.raises(ReferenceError, match=rf"row 2: subject s1: ed_frame {ed} does not exist"):
        load_reference(_reference(tmp_path, ed, 5))
