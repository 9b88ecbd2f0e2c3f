"""Scoring hand-made NIfTI and PNG cases; every expected value is worked out by hand here."""

from __future__ import annotations

import math
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark import ValidationError, score
from helpers import affine, save_nifti, save_png, two_slice_case


def _row(res, level, cls, subject=None, sl=None):
    pc = res.per_case
    sel = (pc["level"] == level) & (pc["class"] == cls)
    if subject is not None:
        sel &= pc["subject"] == subject
    if sl is not None:
        sel &= pc["slice"] == sl
    rows = pc[sel]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _agg(res, cls, metric="dice", grouping="all", group="all"):
    a = res.aggregates
    r = a[(a["grouping"] == grouping) & (a["group"] == group) & (a["class"] == cls) & (a["metric"] == metric)]
    assert len(r) == 1
    return r.iloc[0]


@pytest.fixture
def two_slice(tmp_path):
    ref, pred = two_slice_case()
    save_nifti(tmp_path / "ref" / "labels" / "s1" / "s1_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred)
    return tmp_path


def test_per_slice_mean_differs_from_volume_dice(two_slice):
    res_img = score(two_slice / "pred", two_slice / "ref", protocol="ankenbrand2021", classes=["LV", "MY"],
                    progress=False)
    res_vol = score(two_slice / "pred", two_slice / "ref", protocol="cardbench-v1", classes=["LV", "MY"],
                    progress=False)
    # LV per image: 1 and 2*2/(2*2+0+2) = 4/6; volume: 2*6/(2*6+0+2) = 12/14
    assert _row(res_img, "image", "LV", sl=0)["dice"] == pytest.approx(1.0)
    assert _row(res_img, "image", "LV", sl=1)["dice"] == pytest.approx(4 / 6)
    assert _row(res_vol, "volume", "LV")["dice"] == pytest.approx(12 / 14)
    assert _agg(res_img, "LV")["mean"] == pytest.approx((1 + 4 / 6) / 2)
    assert _agg(res_vol, "LV")["mean"] == pytest.approx(12 / 14)
    assert (1 + 4 / 6) / 2 != pytest.approx(12 / 14)
    # IoU volume LV: 6 / (6 + 0 + 2)
    assert _row(res_vol, "volume", "LV")["iou"] == pytest.approx(6 / 8)
    # MY: slice 0 disjoint -> Dice 0 (ok); slice 1 both empty -> Dice 1 under ankenbrand2021
    assert _row(res_img, "image", "MY", sl=0)["dice"] == 0
    r1 = _row(res_img, "image", "MY", sl=1)
    assert r1["status"] == "both_empty" and r1["dice"] == 1.0
    assert _agg(res_img, "MY")["mean"] == pytest.approx(0.5)


def test_both_empty_is_nan_and_counted_under_v1(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0, 0, 0] = 1  # LV present, MY absent in both
    for sub in ("a", "b"):
        save_nifti(tmp_path / "ref" / f"{sub}_frame01.nii.gz", ref)
        save_nifti(tmp_path / "pred" / f"{sub}_frame01.nii.gz", ref)
    res = score(tmp_path / "pred", tmp_path / "ref", classes=["LV", "MY"], progress=False)
    my = res.per_case[(res.per_case["level"] == "volume") & (res.per_case["class"] == "MY")]
    assert (my["status"] == "both_empty").all() and my["dice"].isna().all()
    agg = _agg(res, "MY")
    assert math.isnan(agg["mean"]) and agg["n_excluded"] == 2 and agg["n_values"] == 0
    assert res.summary["counts"]["status"]["volume"]["MY"] == {"both_empty": 2}


def test_reference_empty_with_false_positive_is_zero_not_nan(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    pred = ref.copy()
    pred[1, 1, 0] = 2  # MY predicted, reference has none
    ref[0, 0, 0] = 1
    pred[0, 0, 0] = 1
    save_nifti(tmp_path / "ref" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", pred)
    for proto in ("cardbench-v1", "ankenbrand2021"):
        res = score(tmp_path / "pred", tmp_path / "ref", protocol=proto, classes=["LV", "MY"], progress=False)
        r = _row(res, "volume", "MY")
        assert r["status"] == "ref_empty" and r["dice"] == 0.0 and r["fp"] == 1


def test_missed_structure_is_zero(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0:2, 0:2, 0] = 1
    save_nifti(tmp_path / "ref" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", np.zeros_like(ref))
    res = score(tmp_path / "pred", tmp_path / "ref", classes=["LV"], progress=False)
    r = _row(res, "volume", "LV")
    assert r["status"] == "pred_empty" and r["dice"] == 0.0 and r["fn"] == 4


def test_acdc_label_map_is_remapped(tmp_path):
    ref = np.array([[[0], [1]], [[2], [3]]], np.uint8)  # cardbench: 1 LV, 2 MY, 3 RV
    acdc = np.array([[[0], [3]], [[2], [1]]], np.uint8)  # ACDC: 3 LV, 2 MY, 1 RV
    save_nifti(tmp_path / "ref" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", acdc)
    res = score(tmp_path / "pred", tmp_path / "ref", labels="acdc", progress=False)
    for cls in ("LV", "MY", "RV"):
        assert _row(res, "volume", cls)["dice"] == 1.0
    # without --labels acdc, the same file is read as cardbench: LV and RV swapped -> Dice 0 for both
    res2 = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert _row(res2, "volume", "LV")["dice"] == 0.0 and _row(res2, "volume", "MY")["dice"] == 1.0


def test_origin_jitter_accepted_flipped_affine_rejected(tmp_path):
    ref, pred = two_slice_case()
    save_nifti(tmp_path / "ref" / "s1_frame01.nii.gz", ref)
    jit = affine()
    jit[:3, 3] += 1e-3
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred, jit)
    score(tmp_path / "pred", tmp_path / "ref", progress=False)  # no error
    flip = affine()
    flip[0, 0] = -flip[0, 0]
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred, flip)
    with pytest.raises(ValidationError) as e:
        score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert len(e.value.problems) == 1 and e.value.problems[0].kind == "affine"
    assert "flipped" in e.value.problems[0].problem


def test_png_cases_and_palette(tmp_path):
    ref = np.zeros((3, 3), np.uint8)
    ref[0, 0:2] = 1
    pred = np.zeros((3, 3), np.uint8)
    pred[0, 0] = 1
    # Kaggle naming for the reference, seed 7T naming for the prediction: same case key
    save_png(tmp_path / "ref" / "p1" / "p1-frame004-slice002.png", ref)
    save_png(tmp_path / "pred" / "p1_slice002_frame004-mask.png", pred, "P")
    res = score(tmp_path / "pred", tmp_path / "ref", protocol="ankenbrand2021", progress=False)
    r = _row(res, "image", "LV")
    # TP 1, FP 0, FN 1 -> Dice 2/3
    assert r["dice"] == pytest.approx(2 / 3) and r["slice"] == 2 and r["frame"] == 4
    # the reference has no MY/RV at all: reported as not annotated, with a note
    assert _row(res, "image", "MY")["status"] == "not_annotated"
    assert any("not annotated" in n for n in res.summary["notes"])


def test_allow_missing_scores_a_miss(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0, 0, 0] = 1
    save_nifti(tmp_path / "ref" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "ref" / "b_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", ref)
    with pytest.raises(ValidationError) as e:
        score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert [p.kind for p in e.value.problems] == ["missing"]
    res = score(tmp_path / "pred", tmp_path / "ref", allow_missing=True, classes=["LV"], progress=False)
    r = _row(res, "volume", "LV", subject="b")
    assert r["status"] == "missing" and r["dice"] == 0.0
    # mean over the two subjects: (1 + 0) / 2
    assert _agg(res, "LV")["mean"] == pytest.approx(0.5)


def test_archives_score_like_the_folder(two_slice):
    folder = score(two_slice / "pred", two_slice / "ref", progress=False)
    z = two_slice / "sub.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(two_slice / "pred" / "s1_frame01.nii.gz", "sub/s1_frame01.nii.gz")
    t = two_slice / "sub.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(two_slice / "pred" / "s1_frame01.nii.gz", "s1_frame01.nii.gz")
    for arch in (z, t):
        res = score(arch, two_slice / "ref", progress=False)
        pd.testing.assert_frame_equal(res.aggregates, folder.aggregates)
        assert res.summary["inputs"]["archive"]


def test_annotations_csv_marks_unannotated_classes(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0:2, 0:2, 0] = 1
    ref[3, :, 0] = 2
    es = ref.copy()
    es[es == 2] = 0  # MY not drawn at ES
    save_nifti(tmp_path / "ref" / "labels" / "a" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "ref" / "labels" / "a" / "a_frame08.nii.gz", es)
    (tmp_path / "ref" / "subjects.csv").write_text("subject,split,ed_frame,es_frame\na,test,1,8\n")
    (tmp_path / "ref" / "annotations.csv").write_text("subject,frame,classes\na,1,LV MY\na,8,LV\n")
    pred_es = ref.copy()  # predicts MY at ES: must not be scored as a false positive
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame08.nii.gz", pred_es)
    res = score(tmp_path / "pred", tmp_path / "ref", classes=["LV", "MY"], progress=False)
    es_my = res.per_case[(res.per_case["level"] == "volume") & (res.per_case["class"] == "MY")
                         & (res.per_case["phase"] == "ES")].iloc[0]
    assert es_my["status"] == "not_annotated" and math.isnan(es_my["dice"])
    assert _agg(res, "MY")["mean"] == 1.0  # only the ED value counts
    assert _agg(res, "MY", grouping="phase", group="ED")["mean"] == 1.0


def test_split_selects_subjects(tmp_path):
    ref = np.zeros((2, 2, 1), np.uint8)
    ref[0, 0, 0] = 1
    for s in ("a", "b"):
        save_nifti(tmp_path / "ref" / "labels" / s / f"{s}_frame01.nii.gz", ref)
        save_nifti(tmp_path / "pred" / f"{s}_frame01.nii.gz", ref)
    (tmp_path / "ref" / "subjects.csv").write_text("subject,split,ed_frame,es_frame\na,train,1,\nb,test,1,\n")
    res = score(tmp_path / "pred", tmp_path / "ref", split="test", progress=False)
    assert set(res.per_case["subject"]) == {"b"}
    assert any("outside the selected subjects" in n for n in res.summary["notes"])


def test_jobs_give_identical_results(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        ref = rng.integers(0, 4, size=(6, 5, 3)).astype(np.uint8)
        pred = ref.copy()
        pred[rng.random(ref.shape) < 0.2] = 0
        save_nifti(tmp_path / "ref" / f"s{i}_frame01.nii.gz", ref)
        save_nifti(tmp_path / "pred" / f"s{i}_frame01.nii.gz", pred)
    a = score(tmp_path / "pred", tmp_path / "ref", jobs=1, progress=False)
    b = score(tmp_path / "pred", tmp_path / "ref", jobs=2, progress=False)
    pd.testing.assert_frame_equal(a.per_case, b.per_case)
    pd.testing.assert_frame_equal(a.aggregates, b.aggregates)


def test_write_is_atomic_and_complete(two_slice):
    res = score(two_slice / "pred", two_slice / "ref", progress=False)
    out = two_slice / "out"
    res.write(out)
    assert {"aggregates.csv", "per_case.csv", "per_subject.csv", "summary.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in two_slice.iterdir() if p.name.startswith(".out")]
    from cardbench.benchmark import read_result

    back = read_result(out)
    assert back.summary["protocol"]["name"] == "cardbench-v1"
    assert back.per_case["dice"].tolist() == pytest.approx(res.per_case["dice"].tolist(), nan_ok=True)


def test_summary_provenance(two_slice):
    import hashlib

    res = score(two_slice / "pred", two_slice / "ref", progress=False)
    s = res.summary
    assert s["protocol"]["name"] == "cardbench-v1" and s["protocol"]["version"]
    assert s["protocol"]["policy"]["dice"]["both_empty"] == "nan"
    assert s["cardbench_version"]
    ref_file = two_slice / "ref" / "labels" / "s1" / "s1_frame01.nii.gz"
    assert s["inputs"]["reference"]["labels/s1/s1_frame01.nii.gz"] == hashlib.sha256(ref_file.read_bytes()).hexdigest()
    pred_file = two_slice / "pred" / "s1_frame01.nii.gz"
    assert s["inputs"]["predictions"]["s1_frame01.nii.gz"] == hashlib.sha256(pred_file.read_bytes()).hexdigest()


def test_out_never_deletes_a_users_folder(two_slice, monkeypatch):
    from typer.testing import CliRunner

    from cardbench.cli import app

    res = score(two_slice / "pred", two_slice / "ref", progress=False)
    mine = two_slice / "thesis"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(FileExistsError, match="not written by cardbench"):
        res.write(mine)
    assert (mine / "thesis.txt").read_text() == "years of work"
    # the reference and prediction folders themselves are refused too
    for target in (two_slice / "ref", two_slice / "pred"):
        r = CliRunner().invoke(app, ["score", str(two_slice / "pred"), "-r", str(two_slice / "ref"),
                                     "--out", str(target)])
        assert r.exit_code == 2 and "is or contains the" in r.stderr
    assert (two_slice / "pred" / "s1_frame01.nii.gz").exists()
    # the current folder is refused without leaving temporary folders behind
    work = two_slice / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = CliRunner().invoke(app, ["score", str(two_slice / "pred"), "-r", str(two_slice / "ref"), "--out", "."])
    assert r.exit_code == 2 and "current folder" in r.stderr
    assert not [p for p in two_slice.iterdir() if p.name.startswith(".")] and not list(work.iterdir())
    # a folder that merely holds a summary.json (e.g. another tool's predictions) is not ours
    other = two_slice / "nnunet-preds"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    (other / "case.nii.gz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not written by cardbench"):
        res.write(other)
    assert (other / "case.nii.gz").exists()
    # scoring results may not replace the scored predictions, even when cardbench wrote them
    with pytest.raises(ValueError, match="is or contains the predictions"):
        res.write(two_slice / "pred")
    with pytest.raises(ValueError, match="is or contains the reference"):
        res.write(two_slice / "ref")
    with pytest.raises(ValueError, match="is or contains the"):
        res.write(two_slice)  # the parent of both
    # a previous result folder is replaced
    out = two_slice / "scores"
    res.write(out)
    (out / "stale.csv").write_text("x")
    res.write(out)
    assert not (out / "stale.csv").exists() and (out / "summary.json").exists()


def test_flip_rejected_even_with_a_large_affine_tolerance(tmp_path):
    ref, pred = two_slice_case()
    save_nifti(tmp_path / "ref" / "s1_frame01.nii.gz", ref)
    flip = affine()
    flip[0, 0] = -flip[0, 0]
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred, flip)
    with pytest.raises(ValidationError) as e:
        score(tmp_path / "pred", tmp_path / "ref", affine_tol=1000.0, progress=False)
    assert "flipped" in e.value.problems[0].problem and "--affine-tol" not in e.value.problems[0].fix


def test_acdc_coded_predictions_without_labels_flag_warn(tmp_path):
    # reference (cardbench map, LV and MY only): LV 4 voxels, MY 2 voxels
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0:2, 0:2, 0] = 1
    ref[3, 0:2, 0] = 2
    acdc = np.where(ref == 1, 3, ref).astype(np.uint8)  # the same masks in ACDC's map (LV = 3)
    save_nifti(tmp_path / "ref" / "a_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", acdc)
    res = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    w = res.summary["warnings"]
    # all 4 LV voxels are predicted as value 3 (RV under cardbench's map), which the reference does not annotate
    assert any("100 % of the reference's LV voxels are predicted as RV" in x and "--labels acdc" in x for x in w)
    assert any("4 voxels of RV" in x and "not scored" in x for x in w)
    ok = score(tmp_path / "pred", tmp_path / "ref", labels="acdc", progress=False)
    assert ok.summary["warnings"] == [] and _row(ok, "volume", "LV")["dice"] == 1.0


def test_acdc_coded_reference_declared_lv_my_warns(tmp_path):
    ref = np.zeros((4, 4, 1), np.uint8)
    ref[0:2, 0:2, 0] = 3  # LV written as ACDC's 3
    ref[3, 0:2, 0] = 2
    pred = np.where(ref == 3, 1, ref).astype(np.uint8)
    save_nifti(tmp_path / "ref" / "labels" / "a" / "a_frame01.nii.gz", ref)
    (tmp_path / "ref" / "card.yaml").write_text("name: r\nclasses: [LV, MY]\n")
    save_nifti(tmp_path / "pred" / "a_frame01.nii.gz", pred)
    res = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert any("the reference has no LV voxel in any case" in x and "--reference-labels" in x
               for x in res.summary["warnings"])


def test_repeated_notes_are_collapsed():
    from cardbench.benchmark.validation import collapse_notes

    notes = [f"s{i}: surface distances not computed" for i in range(5)] + ["one-off"]
    assert collapse_notes(notes) == ["5 cases (s0, s1, s2, ...): surface distances not computed", "one-off"]
