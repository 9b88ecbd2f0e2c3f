"""Clinical indices (volumes, EDV, ESV, SV, EF, LV mass); every expected value is worked out by hand here.

Voxel: 1.25 x 1.25 x 8 mm = 12.5 mm^3 = 0.0125 mL, so 10 voxels = 0.125 mL.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cardbench.benchmark import score
from cardbench.benchmark.clinical import (
    ejection_fraction, label_volumes_ml, lv_mass, phases_from_curve, stroke_volume, voxel_volume_ml,
)
from helpers import erode_lv_boundary, save_nifti

VOX_ML = 1.25 * 1.25 * 8 / 1000  # 0.0125


def _fill(arr, value, n, z):
    """Set the first ``n`` background voxels of slice ``z`` (row-major) to ``value``."""
    flat = arr[:, :, z].reshape(-1)
    idx = np.flatnonzero(flat == 0)[:n]
    flat[idx] = value
    arr[:, :, z] = flat.reshape(arr.shape[:2])
    return arr


def _labels(lv, my, rv, shape=(10, 10, 2)):
    """Label map with the given voxel counts per class, split over two slices."""
    a = np.zeros(shape, np.uint8)
    for value, n in ((1, lv), (2, my), (3, rv)):
        half = n // 2
        _fill(a, value, half, 0)
        _fill(a, value, n - half, 1)
    assert [(a == v).sum() for v in (1, 2, 3)] == [lv, my, rv]
    return a


def test_voxel_and_label_volumes_anisotropic():
    assert voxel_volume_ml((1.25, 1.25, 8.0)) == pytest.approx(0.0125)
    a = _labels(10, 4, 0)
    vols = label_volumes_ml(a, (1.25, 1.25, 8.0))
    assert vols["LV"] == pytest.approx(0.125)  # 10 voxels x 0.0125 mL
    assert vols["MY"] == pytest.approx(0.05)   # 4 voxels, counted once each (label value 2 is not summed)
    assert vols["RV"] == 0.0
    # same voxels on a grid with a different slice spacing: volume scales with the spacing
    assert label_volumes_ml(a, (1.25, 1.25, 10.0))["LV"] == pytest.approx(10 * 1.25 * 1.25 * 10 / 1000)
    with pytest.raises(ValueError, match="spacing"):
        voxel_volume_ml((1.25, 0, 8))
    with pytest.raises(ValueError, match="integer"):
        label_volumes_ml(a.astype(float), (1, 1, 1))


def test_ef_sv_mass_from_known_volumes():
    # EDV 150 mL, ESV 60 mL: SV 90 mL, EF 90/150 = 60 %
    assert float(stroke_volume(150, 60)) == 90
    assert float(ejection_fraction(150, 60)) == pytest.approx(60.0)
    # EDV 0: EF undefined, never a division warning or inf
    assert math.isnan(float(ejection_fraction(0, 0)))
    np.testing.assert_allclose(ejection_fraction([200, 100], [50, 100]), [75.0, 0.0])
    # MY 100 mL -> 105 g
    assert float(lv_mass(100)) == pytest.approx(105.0)


def test_phases_from_curve():
    assert phases_from_curve([0, 1, 2, 3], [100, 120, 60, 80]) == (1, 2)
    assert phases_from_curve([3, 2, 1, 0], [80, 60, 120, 100]) == (1, 2)  # order does not matter
    assert phases_from_curve([1, 8], [100, 50]) == (None, None)           # a gap: not the whole curve
    assert phases_from_curve([1], [100]) == (None, None)
    assert phases_from_curve([1, 2], [5, 5]) == (None, None)              # flat: no ED/ES


@pytest.fixture
def two_subjects(tmp_path):
    """Subject a: ED frame 1, ES frame 8 from subjects.csv. Subject b: frames 0-2, no ED/ES given.

    a reference: ED LV 40, MY 24, RV 16 voxels; ES LV 16, MY 24, RV 8.
      LVEDV 0.5, LVESV 0.2 mL -> SV 0.3 mL, EF 60 %; LVM 24 x 0.0125 x 1.05 = 0.315 g; RV EF 50 %.
    a prediction: ED LV 32, MY 20, RV 16; ES LV 16, MY 24, RV 8.
      LVEDV 0.4, LVESV 0.2 -> EF 50 %; LVM 20 x 0.0125 x 1.05 = 0.2625 g.
    b reference LV: frame 0: 20, frame 1: 60, frame 2: 30 voxels -> ED = 1 (0.75 mL), ES = 0 (0.25 mL),
      EF = 100 x 0.5 / 0.75 = 66.67 %. Prediction identical to the reference.
    """
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save_nifti(ref / "labels" / "a" / "a_frame01.nii.gz", _labels(40, 24, 16))
    save_nifti(ref / "labels" / "a" / "a_frame08.nii.gz", _labels(16, 24, 8))
    save_nifti(pred / "a_frame01.nii.gz", _labels(32, 20, 16))
    save_nifti(pred / "a_frame08.nii.gz", _labels(16, 24, 8))
    for f, n in ((0, 20), (1, 60), (2, 30)):
        save_nifti(ref / "labels" / "b" / f"b_frame{f:02d}.nii.gz", _labels(n, 10, 4))
        save_nifti(pred / f"b_frame{f:02d}.nii.gz", _labels(n, 10, 4))
    (ref / "subjects.csv").write_text("subject,split,ed_frame,es_frame\na,test,1,8\nb,test,,\n")
    return tmp_path


def _val(table, subject, index):
    r = table[(table["subject"] == subject) & (table["index"] == index)]
    assert len(r) == 1, r
    return r.iloc[0]


def test_score_reports_clinical_indices(two_subjects):
    res = score(two_subjects / "pred", two_subjects / "ref", classes=["LV", "MY", "RV"], progress=False)
    clin = res.extra_tables["clinical"]
    a = lambda ix: _val(clin, "a", ix)  # noqa: E731
    assert a("LVEDV")["ref"] == pytest.approx(0.5) and a("LVEDV")["pred"] == pytest.approx(0.4)
    assert a("LVESV")["ref"] == pytest.approx(0.2) and a("LVESV")["pred"] == pytest.approx(0.2)
    assert a("LVSV")["ref"] == pytest.approx(0.3) and a("LVSV")["pred"] == pytest.approx(0.2)
    assert a("LVEF")["ref"] == pytest.approx(60.0) and a("LVEF")["pred"] == pytest.approx(50.0)
    assert a("LVEF")["diff"] == pytest.approx(-10.0) and a("LVEF")["abs_diff"] == pytest.approx(10.0)
    assert a("LVM")["ref"] == pytest.approx(0.315) and a("LVM")["pred"] == pytest.approx(0.2625)
    assert a("RVEDV")["ref"] == pytest.approx(0.2) and a("RVEF")["ref"] == pytest.approx(50.0)
    assert a("LVEF")["phase_source"] == "reference" and (a("LVEF")["ed_frame"], a("LVEF")["es_frame"]) == (1, 8)
    b = lambda ix: _val(clin, "b", ix)  # noqa: E731
    assert b("LVEF")["phase_source"] == "lv_curve"
    assert (b("LVEF")["ed_frame"], b("LVEF")["es_frame"]) == (1, 0)
    assert b("LVEDV")["ref"] == pytest.approx(0.75) and b("LVESV")["ref"] == pytest.approx(0.25)
    assert b("LVEF")["ref"] == pytest.approx(100 * 0.5 / 0.75)
    assert (clin["status"] == "ok").all()
    # summary block: agreement over the 2 subjects; EF differences -10 and 0 -> bias -5, MAE 5,
    # SD = sqrt(((-10+5)^2 + (0+5)^2) / 1) = sqrt(50)
    block = res.summary["clinical"]
    assert block["available"] and block["phase_source"] == {"reference": 1, "lv_curve": 1}
    ef = [r for r in block["agreement"] if r["index"] == "LVEF" and r["grouping"] == "all"][0]
    assert ef["n_subjects"] == 2 and ef["n_excluded"] == 0
    assert ef["bias"] == pytest.approx(-5.0) and ef["mae"] == pytest.approx(5.0)
    assert ef["sd_diff"] == pytest.approx(math.sqrt(50))
    assert ef["loa_low"] == pytest.approx(-5 - 1.96 * math.sqrt(50))
    # with 2 subjects every bootstrap mean lies between the two differences
    assert -10 <= ef["bias_ci_low"] <= ef["bias_ci_high"] <= 0
    assert block["bootstrap"] == {"resamples": 2000, "seed": 20210421, "unit": "subject",
                                  "interval": "95 % percentile"}


def test_result_folder_has_clinical_csv(two_subjects, tmp_path):
    res = score(two_subjects / "pred", two_subjects / "ref", classes=["LV", "MY"], progress=False)
    out = res.write(tmp_path / "out")
    clin = pd.read_csv(out / "clinical.csv", dtype={"subject": str})
    assert set(clin["index"]) == {"LVEDV", "LVESV", "LVSV", "LVEF", "LVM"}  # no RV indices without RV
    assert _val(clin, "a", "LVM")["pred"] == pytest.approx(0.2625)
    agree = pd.read_csv(out / "clinical_agreement.csv")
    assert {"bias", "bias_ci_low", "loa_high", "mae", "pearson_r", "n_subjects"} <= set(agree.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clinical"]["units"]["LVM"] == "g"


def test_unannotated_and_unknown_phase_are_not_scored(tmp_path):
    """MY not drawn at ED (annotations.csv): LVM is not_annotated. Frames 1 and 8 without phases: no_phase."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for s in ("a", "c"):
        save_nifti(ref / "labels" / s / f"{s}_frame01.nii.gz", _labels(40, 0, 0))
        save_nifti(ref / "labels" / s / f"{s}_frame08.nii.gz", _labels(16, 0, 0))
        save_nifti(pred / f"{s}_frame01.nii.gz", _labels(40, 8, 0))
        save_nifti(pred / f"{s}_frame08.nii.gz", _labels(16, 8, 0))
    (ref / "subjects.csv").write_text("subject,split,ed_frame,es_frame\na,test,1,8\nc,test,,\n")
    (ref / "annotations.csv").write_text("subject,frame,classes\na,1,LV\na,8,LV\nc,1,LV\nc,8,LV\n")
    res = score(pred, ref, classes=["LV", "MY"], progress=False)
    clin = res.extra_tables["clinical"]
    assert _val(clin, "a", "LVM")["status"] == "not_annotated" and math.isnan(_val(clin, "a", "LVM")["pred"])
    assert _val(clin, "a", "LVEF")["ref"] == pytest.approx(60.0)
    assert (clin.loc[clin["subject"] == "c", "status"] == "no_phase").all()
    assert res.summary["clinical"]["phase_source"] == {"reference": 1, "none": 1}
    lvm = [r for r in res.summary["clinical"]["agreement"] if r["index"] == "LVM"][0]
    assert lvm["n_subjects"] == 0 and lvm["n_excluded"] == 2


def test_predicted_empty_ventricle_gives_undefined_ef(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save_nifti(ref / "labels" / "a" / "a_frame01.nii.gz", _labels(40, 0, 0))
    save_nifti(ref / "labels" / "a" / "a_frame08.nii.gz", _labels(16, 0, 0))
    save_nifti(pred / "a_frame01.nii.gz", _labels(0, 0, 0))
    save_nifti(pred / "a_frame08.nii.gz", _labels(0, 0, 0))
    (ref / "subjects.csv").write_text("subject,split,ed_frame,es_frame\na,test,1,8\n")
    res = score(pred, ref, classes=["LV"], progress=False)
    clin = res.extra_tables["clinical"]
    assert _val(clin, "a", "LVEDV")["pred"] == 0.0 and _val(clin, "a", "LVEDV")["status"] == "ok"
    ef = _val(clin, "a", "LVEF")
    assert ef["status"] == "pred_undefined" and ef["ref"] == pytest.approx(60.0) and math.isnan(ef["pred"])


def test_confusion_tables_have_no_volumes():
    """The seed's 7T confusion tables carry no voxel size: the clinical block says so."""
    from cardbench.reproductions.ankenbrand2021.seven_tesla import PUBLISHED, score_published

    res = score_published(PUBLISHED[0], "cardbench-v1")
    assert res.summary["clinical"]["available"] is False
    assert "voxel size" in res.summary["clinical"]["reason"]
    assert "clinical" not in res.extra_tables


def test_sunnybrook_indices_match_an_independent_computation(tmp_path, sunnybrook_prepared):
    """Real expert contours (Sunnybrook sample, 5 heart-failure patients, ED/ES from subjects.csv).

    Prediction: the reference with the LV eroded by one pixel in-plane (eroded pixels become
    background). Expected EDV/ESV/EF/LV mass computed here with nibabel: voxel count x product of
    the header zooms / 1000.
    """
    import nibabel as nib

    ref = sunnybrook_prepared  # prepared once per test run (conftest); read only
    subjects = pd.read_csv(ref / "subjects.csv", dtype={"subject": str})
    pred = tmp_path / "pred"
    expected = {}
    for _, s in subjects.iterrows():
        vols = {}
        for phase, frame in (("ED", s["ed_frame"]), ("ES", s["es_frame"])):
            path = ref / "labels" / s["subject"] / f"{s['subject']}_frame{int(frame):02d}.nii.gz"
            img = nib.load(path)
            lab = np.asarray(img.dataobj).astype(np.uint8)
            er = erode_lv_boundary(lab, to=0)
            pred.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(er, img.affine, img.header), pred / path.name)
            vml = float(np.prod(img.header.get_zooms()[:3])) / 1000
            vols[phase] = {"ref_lv": (lab == 1).sum() * vml, "pred_lv": (er == 1).sum() * vml,
                           "my": (lab == 2).sum() * vml}
        edv, esv = vols["ED"]["ref_lv"], vols["ES"]["ref_lv"]
        pedv, pesv = vols["ED"]["pred_lv"], vols["ES"]["pred_lv"]
        expected[s["subject"]] = {"LVEDV": (edv, pedv), "LVESV": (esv, pesv),
                                  "LVEF": (100 * (edv - esv) / edv, 100 * (pedv - pesv) / pedv),
                                  "LVM": (1.05 * vols["ED"]["my"], 1.05 * vols["ED"]["my"])}
    res = score(pred, ref, progress=False)
    clin = res.extra_tables["clinical"]
    for subj, idx in expected.items():
        for ix, (r, p) in idx.items():
            row = _val(clin, subj, ix)
            if ix == "LVM" and r == 0:  # SCD0000501 has no epicardial contours: MY not annotated
                assert row["status"] == "not_annotated"
                continue
            # rel 1e-6: the header stores zooms as float32
            assert row["ref"] == pytest.approx(r, rel=1e-6) and row["pred"] == pytest.approx(p, rel=1e-6)
    # eroding the LV lowers every volume: the EDV bias is the mean of the independent differences
    d = [p - r for idx in expected.values() for ix, (r, p) in idx.items() if ix == "LVEDV"]
    edv = [a for a in res.summary["clinical"]["agreement"] if a["index"] == "LVEDV" and a["grouping"] == "all"][0]
    assert edv["bias"] == pytest.approx(np.mean(d), rel=1e-6) and edv["bias"] < 0 and edv["n_subjects"] == 5
    assert res.summary["clinical"]["phase_source"] == {"reference": 5}
