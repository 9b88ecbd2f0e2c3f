"""`prepare_dicom`: a synthetic cine (2 slices x 3 frames) with Sunnybrook-style contours on every frame,
so ED/ES come from the LV volume curve; values worked out by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dicomfactory import coded_image, write_dicom

from cardbench.datasets.prepare import prepare_dicom

AXIAL = [1, 0, 0, 0, 1, 0]
# LV square side (pixels) per frame: corners on pixel centres (2, 2) and (2 + side, 2 + side) cover side^2 pixels
SIDES = {1: 4, 2: 6, 3: 2}


def _study(tmp_path):
    dcm, con = tmp_path / "dicom", tmp_path / "contours" / "i-contours"
    con.mkdir(parents=True)
    for s, z in enumerate((0.0, 8.0)):
        for f in (1, 2, 3):
            n = s * 3 + f  # InstanceNumber = (slice - 1) * frames + frame
            write_dicom(dcm / f"{n}.dcm", coded_image(12, 12, n), ipp=[0, 0, z], iop=AXIAL, spacing=(1.5, 1.5),
                        instance=n, trigger=40.0 * (f - 1), cardiac_images=3)
            a, b = 2, 2 + SIDES[f]
            (con / f"IM-0001-{n:04d}-icontour-manual.txt").write_text(f"{a} {a}\n{b} {a}\n{b} {b}\n{a} {b}\n")
    return dcm, tmp_path / "contours"


def test_prepare_dicom_ed_es_from_curve(tmp_path):
    dcm, con = _study(tmp_path)
    res = prepare_dicom(dcm, tmp_path / "out", subject="S1", contours=con, cine=True)
    # LV volume per frame = 2 slices x side^2 pixels x 1.5 x 1.5 x 8 mm^3: largest at frame 2, smallest at 3
    assert (res["ed_frame"], res["es_frame"], res["ed_es_source"]) == (2, 3, "lv-volume-curve")
    assert res["frames"] == [1, 2, 3] and res["labelled_frames"] == [1, 2, 3]
    out = tmp_path / "out"
    for f, side in SIDES.items():
        lab = nib.load(out / "labels" / "S1" / f"S1_frame{f:02d}.nii.gz")
        arr = np.asarray(lab.dataobj)
        assert (arr == 1).sum() == 2 * side * side
        assert (arr == 1).sum() * abs(np.linalg.det(lab.affine[:3, :3])) == pytest.approx(2 * side * side * 18.0)
    cine = nib.load(out / "images" / "S1" / "S1_cine.nii.gz")
    assert cine.shape == (12, 12, 2, 3)
    assert cine.header.get_zooms()[3] == pytest.approx(0.040)
    np.testing.assert_array_equal(np.asarray(cine.dataobj)[:, :, 1, 2], coded_image(12, 12, 6).T)
    subj = pd.read_csv(out / "subjects.csv", dtype={"subject": str})
    assert subj.iloc[0][["ed_frame", "es_frame"]].tolist() == [2, 3]
    ann = pd.read_csv(out / "annotations.csv")
    assert ann["classes"].tolist() == ["LV", "LV", "LV"]


def test_prepare_dicom_given_frames_win(tmp_path):
    dcm, con = _study(tmp_path)
    res = prepare_dicom(dcm, tmp_path / "out", contours=con, ed_frame=1, es_frame=3)
    assert (res["ed_frame"], res["es_frame"], res["ed_es_source"]) == (1, 3, "dataset")
    assert res["subject"] == "P1"  # PatientID


def test_prepare_dicom_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no DICOM files"):
        prepare_dicom(tmp_path, tmp_path / "out")
