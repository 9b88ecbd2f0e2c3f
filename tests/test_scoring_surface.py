"""Surface distances through the scoring harness: cardbench-v1 per volume and per image, the
worst-case policy with the field of view of each level, PNG stacks, failures with a note, and the
Sunnybrook sample end to end against MONAI."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cardbench.benchmark.scoring import score

SP = (1.0, 2.0, 4.0)
# field-of-view diagonals of the 6 x 6 x 3 case: volume sqrt(6^2 + 12^2 + 12^2) = 18, image sqrt(6^2 + 12^2)
FOV3 = 18.0
FOV2 = math.sqrt(180.0)
# the reference holds no RV voxel: without --classes it would be reported as not annotated
ALL = ("LV", "MY", "RV")


def case_arrays():
    """6 x 6 x 3 voxels of 1 x 2 x 4 mm.

    LV: reference block x 1-2, y 1-2, slices 0-1; prediction the same block one voxel (1 mm) further
        along x. Every voxel of a 2 x 2 x 2 block (and of a 2 x 2 square) is on its boundary.
        Directed distances, both ways and in 3D as in each slice: half the voxels 0 (shared x = 2),
        half 1 mm -> HD 1, HD95 1 (p95 of 0,0,..,1,1 lands between two 1s), ASSD 0.5, MASD 0.5.
        Dice: TP 4, 8 + 8 voxels -> 0.5. Slice 2: both empty.
    MY: one reference voxel in slice 0, none predicted -> pred_empty: worst case (volume 18 mm,
        image slice 0 sqrt(180) mm).
    RV: one spurious predicted voxel in slice 2 -> ref_empty: worst case.
    """
    ref = np.zeros((6, 6, 3), np.uint8)
    pred = np.zeros((6, 6, 3), np.uint8)
    ref[1:3, 1:3, 0:2] = 1
    pred[2:4, 1:3, 0:2] = 1
    ref[4, 4, 0] = 2
    pred[0, 5, 2] = 3
    return ref, pred


def save_nifti(path: Path, arr, spacing=SP):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, np.uint8), np.diag([*spacing, 1.0])), str(path))


def save_png(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def row(pc, level, cls, slice_=None, subject="s1"):
    r = pc[(pc["level"] == level) & (pc["class"] == cls) & (pc["subject"] == subject)]
    if slice_ is not None:
        r = r[r["slice"] == slice_]
    assert len(r) == 1
    return r.iloc[0]


def check_case(pc):
    lv = row(pc, "volume", "LV")
    assert lv["status"] == "ok" and lv["dice"] == pytest.approx(0.5)
    assert [lv["hd"], lv["hd95"], lv["assd"], lv["masd"]] == pytest.approx([1.0, 1.0, 0.5, 0.5])
    for s in (0, 1):
        r = row(pc, "image", "LV", s)
        assert [r["hd"], r["hd95"], r["assd"], r["masd"]] == pytest.approx([1.0, 1.0, 0.5, 0.5])
    r = row(pc, "image", "LV", 2)
    assert r["status"] == "both_empty" and np.isnan(r["hd95"]) and np.isnan(r["assd"])
    my = row(pc, "volume", "MY")
    assert my["status"] == "pred_empty" and my["fov_diag_mm"] == pytest.approx(FOV3)
    assert [my["hd"], my["hd95"], my["assd"], my["masd"]] == pytest.approx([FOV3] * 4)
    r = row(pc, "image", "MY", 0)
    assert r["status"] == "pred_empty" and r["hd95"] == pytest.approx(FOV2) and r["assd"] == pytest.approx(FOV2)
    rv = row(pc, "volume", "RV")
    assert rv["status"] == "ref_empty" and rv["hd95"] == pytest.approx(FOV3)
    assert row(pc, "image", "RV", 2)["hd95"] == pytest.approx(FOV2)
    assert np.isnan(row(pc, "image", "RV", 0)["hd95"])


def test_nifti_volume_and_images(tmp_path):
    ref, pred = case_arrays()
    save_nifti(tmp_path / "ref" / "s1_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred)
    res = score(tmp_path / "pred", tmp_path / "ref", classes=ALL, progress=False)
    check_case(res.per_case)
    assert res.summary["protocol"]["metrics"] == ["dice", "iou", "hd95", "assd"]
    assert res.summary["protocol"]["policy"]["hd95"]["pred_empty"] == "worst"
    agg = res.aggregates
    got = agg[(agg["grouping"] == "all") & (agg["class"] == "LV") & (agg["metric"] == "hd95")]["mean"]
    assert got.tolist() == pytest.approx([1.0])


def test_png_stack_gives_the_same_values(tmp_path):
    """The same case as PNG images (rows = x, columns = y) with spacing.csv: identical distances."""
    ref, pred = case_arrays()
    for s in range(3):
        save_png(tmp_path / "ref" / "s1" / f"s1_slice{s:03d}_frame001-mask.png", ref[..., s])
        save_png(tmp_path / "pred" / f"s1_slice{s:03d}_frame001-mask.png", pred[..., s])
    (tmp_path / "ref" / "spacing.csv").write_text("subject,spacing_row,spacing_col,spacing_slice\ns1,1.0,2.0,4.0\n")
    res = score(tmp_path / "pred", tmp_path / "ref", classes=ALL, progress=False)
    check_case(res.per_case)


def test_png_without_spacing_fails_with_a_note(tmp_path):
    ref, pred = case_arrays()
    for s in range(3):
        save_png(tmp_path / "ref" / f"s1_slice{s:03d}_frame001-mask.png", ref[..., s])
        save_png(tmp_path / "pred" / f"s1_slice{s:03d}_frame001-mask.png", pred[..., s])
    res = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    pc = res.per_case
    lv = row(pc, "volume", "LV")
    assert lv["dice"] == pytest.approx(0.5)  # overlap does not need the spacing
    assert lv["distance_status"] == "failed" and np.isnan(lv["hd95"])
    assert (pc["distance_status"] == "failed").all() and pc["hd95"].isna().all()
    assert any("spacing is unknown" in n and "spacing.csv" in n for n in res.summary["notes"])


def test_png_gap_fails_the_volume_only(tmp_path):
    ref, pred = case_arrays()
    for s in (0, 2):  # slice 1 is absent: the stack would not be a volume
        save_png(tmp_path / "ref" / f"s1_slice{s:03d}_frame001-mask.png", ref[..., s])
        save_png(tmp_path / "pred" / f"s1_slice{s:03d}_frame001-mask.png", pred[..., s])
    (tmp_path / "ref" / "spacing.csv").write_text("subject,spacing_row,spacing_col,spacing_slice\ns1,1.0,2.0,4.0\n")
    res = score(tmp_path / "pred", tmp_path / "ref", progress=False)
    pc = res.per_case
    assert row(pc, "volume", "LV")["distance_status"] == "failed"
    assert np.isnan(row(pc, "volume", "LV")["hd95"])
    r = row(pc, "image", "LV", 0)
    assert pd.isna(r["distance_status"]) and r["hd95"] == pytest.approx(1.0)
    assert any("gap" in n and "slice 1" in n for n in res.summary["notes"])


def test_missing_prediction_is_the_worst_case(tmp_path):
    ref, pred = case_arrays()
    save_nifti(tmp_path / "ref" / "s1_frame01.nii.gz", ref)
    save_nifti(tmp_path / "ref" / "s2_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred)
    res = score(tmp_path / "pred", tmp_path / "ref", allow_missing=True, classes=ALL, progress=False)
    r = row(res.per_case, "volume", "LV", subject="s2")
    assert r["status"] == "missing" and r["hd95"] == pytest.approx(FOV3) and r["assd"] == pytest.approx(FOV3)
    assert row(res.per_case, "image", "LV", 0, subject="s2")["hd95"] == pytest.approx(FOV2)


def test_ankenbrand2021_has_no_distances(tmp_path):
    ref, pred = case_arrays()
    save_nifti(tmp_path / "ref" / "s1_frame01.nii.gz", ref)
    save_nifti(tmp_path / "pred" / "s1_frame01.nii.gz", pred)
    res = score(tmp_path / "pred", tmp_path / "ref", protocol="ankenbrand2021", progress=False)
    assert not {"hd", "hd95", "assd", "masd", "distance_status"} & set(res.per_case.columns)


@pytest.mark.slow
def test_sunnybrook_sample_end_to_end(tmp_path, sunnybrook_prepared):
    """The prepared Sunnybrook sample (real NIfTI, 1.29-1.37 mm pixels, 8-10 mm slices) scored against
    a prediction made by shifting every LV mask one pixel: HD95 and ASSD with CIs in the summary, MY
    not scored where it is not annotated (ES), and the volume values equal MONAI's."""
    from cardbench.datasets.io import read_nifti_mask
    ref_root = sunnybrook_prepared  # prepared once per test run (conftest); read only
    arrays = {}
    for p in sorted((ref_root / "labels").rglob("*.nii.gz")):
        img = nib.load(str(p))
        lab = np.asanyarray(img.dataobj).astype(np.uint8)
        pred = lab.copy()
        pred[lab == 1] = 0
        pred[np.roll(lab == 1, 1, axis=0)] = 1
        out = tmp_path / "pred" / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(out))
        arrays[p.name] = (lab, pred, read_nifti_mask(p).spacing)
    res = score(tmp_path / "pred", ref_root, progress=False)
    agg = res.aggregates
    allrows = agg[(agg["grouping"] == "all")]
    for m in ("dice", "hd95", "assd"):
        r = allrows[(allrows["class"] == "LV") & (allrows["metric"] == m)].iloc[0]
        assert r["n_subjects"] == 5 and r["ci_low"] <= r["mean"] <= r["ci_high"]
    pc = res.per_case
    es_my = pc[(pc["level"] == "volume") & (pc["class"] == "MY") & (pc["phase"] == "ES")]
    assert (es_my["status"] == "not_annotated").all() and es_my["hd95"].isna().all()
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric

    torch.set_num_threads(1)
    for name, (lab, pred, sp) in arrays.items():
        subj, fr = name[:-len(".nii.gz")].rsplit("_frame", 1)
        r = pc[(pc["level"] == "volume") & (pc["class"] == "LV") & (pc["subject"] == subj) & (pc["frame"] == int(fr))]
        y = torch.as_tensor(lab == 1)[None, None]
        yp = torch.as_tensor(pred == 1)[None, None]
        hd95 = HausdorffDistanceMetric(percentile=95)(yp, y, spacing=list(sp)).item()
        assd = SurfaceDistanceMetric(symmetric=True)(yp, y, spacing=list(sp)).item()
        assert r["hd95"].iloc[0] == pytest.approx(hd95, abs=1e-4)
        assert r["assd"].iloc[0] == pytest.approx(assd, abs=1e-4)
